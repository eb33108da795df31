"""Pushes: checked before anything is stored; schemas given, inferred or derived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelport import errors
from tests.api.models import AlwaysFails
from tests.conftest import IRIS_COLUMNS, RunningServer


def _blobs(server: RunningServer) -> list[Path]:
    root = server.settings.home / "artifacts"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_unloadable_or_failing_artifacts_store_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    mp = server.client()
    garbage = tmp_path / "model.pkl"
    garbage.write_bytes(b"\x80\x04this is no pickle")
    with pytest.raises(errors.ArtifactRejected, match="cannot load"):
        mp.push("broken", garbage, schema={"fields": [{"name": "x", "type": "number"}]})
    with pytest.raises(errors.ArtifactRejected, match="smoke prediction failed"):
        mp.push("broken", AlwaysFails(), schema={"fields": [{"name": "x", "type": "number"}]})
    with pytest.raises(errors.InvalidInput, match="no input schema"):
        mp.push("broken", AlwaysFails())
    assert mp.models() == []
    assert _blobs(server) == []


def test_schema_sources(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    mp = server.client()
    derived = mp.push("a", iris_pipeline)
    assert derived["lineage"]["schema_source"] == "estimator"
    assert [f["name"] for f in derived["schema"]["fields"]] == IRIS_COLUMNS
    schema = {"fields": [{"name": c, "type": "number", "maximum": 100} for c in IRIS_COLUMNS]}
    given = mp.push("b", iris_pipeline, schema=schema)
    assert given["lineage"]["schema_source"] == "given"
    assert given["schema"]["fields"][0]["maximum"] == 100
    # All training columns, the target included: the server keeps the estimator's columns.
    inferred = mp.push("c", iris_pipeline, train_data=iris_frame)
    assert [f["name"] for f in inferred["schema"]["fields"]] == IRIS_COLUMNS
    bad = tmp_path / "schema.json"
    bad.write_text('{"fields": [{"name": "x", "type": "decimal"}]}')
    with pytest.raises(errors.InvalidInput) as info:
        mp.push("d", iris_pipeline, schema=bad)
    assert info.value.details[0]["field"] == "schema.fields[0].type"
    with pytest.raises(errors.InvalidInput, match="lacks the column"):
        mp.push("e", iris_pipeline, train_data=iris_frame.drop(columns=["petal_width"]))


def test_identical_artifacts_share_one_blob(
    server: RunningServer, iris_pipeline: Any, tmp_path: Path
) -> None:
    import skops.io as sio

    path = tmp_path / "iris.skops"
    sio.dump(iris_pipeline, path)
    mp = server.client()
    a = mp.push("iris", path)
    b = mp.push("iris", path)
    assert (a["version"], b["version"]) == (1, 2) and a["sha256"] == b["sha256"]
    assert len(_blobs(server)) == 1


def test_mlflow_folder_push_takes_its_schema_from_the_signature(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    import cloudpickle

    folder = tmp_path / "mlflow-model"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(cloudpickle.dumps(iris_pipeline))
    columns = ", ".join(
        f'{{"type": "double", "name": "{c}", "required": true}}' for c in IRIS_COLUMNS
    )
    (folder / "MLmodel").write_text(
        "artifact_path: model\n"
        "flavors:\n"
        "  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n"
        "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n"
        f"signature:\n  inputs: '[{columns}]'\n"
    )
    mp = server.client()
    pushed = mp.push("flowers", folder, alias="production")
    assert pushed["flavor"] == "mlflow" and pushed["lineage"]["schema_source"] == "signature"
    assert [f["name"] for f in pushed["schema"]["fields"]] == IRIS_COLUMNS
    rows = iris_frame[IRIS_COLUMNS].head(3)
    assert mp.predict("flowers", rows)["predictions"] == list(iris_pipeline.predict(rows))
    pusher = server.client(server.key("ci", "push"))
    with pytest.raises(errors.ArtifactRejected, match="admin key"):
        pusher.push("flowers", folder)


def test_parquet_training_data(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    data = tmp_path / "train.parquet"
    iris_frame.to_parquet(data)
    pushed = server.client().push("iris", iris_pipeline, train_data=data, target="species")
    assert pushed["lineage"]["schema_source"] == "train_data"
    stats = server.client().version("iris", 1, stats=True)["train_stats"]
    assert stats["fields"]["sepal_length"]["count"] == 150
