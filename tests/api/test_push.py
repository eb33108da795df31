"""Pushes: checked before anything is stored; schemas given, inferred or derived."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from modelport import errors
from tests.api.models import AlwaysFails
from tests.conftest import IRIS_COLUMNS, RunningServer


def _blobs(server: RunningServer) -> list[Path]:
    root = Path(server.settings.artifacts_location)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_unloadable_or_failing_artifacts_store_nothing(
    server: RunningServer, iris_pipeline: Any, tmp_path: Path
) -> None:
    mp = server.client()
    schema = {"fields": [{"name": "x", "type": "number"}]}
    garbage = tmp_path / "model.pkl"
    garbage.write_bytes(b"\x80\x04this is no pickle")
    with pytest.raises(errors.ArtifactRejected, match="cannot load the pickle artifact") as info:
        mp.push("broken", garbage, schema=schema)
    assert info.value.status_code == 422 and info.value.details[0]["field"] == "artifact"
    text = tmp_path / "model.txt"
    text.write_bytes(b"just text")
    with pytest.raises(errors.ArtifactRejected, match="unrecognized artifact"):
        mp.push("broken", text, schema=schema)
    with pytest.raises(errors.ArtifactRejected, match="smoke prediction failed") as info:
        mp.push("broken", AlwaysFails(), schema=schema)
    assert "RuntimeError: broken model" in str(info.value)
    with pytest.raises(errors.InvalidInput, match="no input schema"):
        mp.push("broken", AlwaysFails())
    assert mp.models() == []
    assert _blobs(server) == []

    # A rejected push to an existing model adds no version and no blob either.
    mp.push("iris", iris_pipeline, alias="production")
    blobs = _blobs(server)
    assert len(blobs) == 1
    with pytest.raises(errors.ArtifactRejected, match="smoke prediction failed"):
        mp.push("iris", AlwaysFails(), schema=schema, alias="production")
    with pytest.raises(errors.ArtifactRejected):
        mp.push("iris", garbage)
    assert [v["version"] for v in mp.versions("iris")] == [1]
    assert mp.model("iris")["aliases"] == {"production": 1}
    assert _blobs(server) == blobs
    assert len(mp.alias_history("iris")) == 1


def test_schema_sources(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    import skops.io as sio

    mp = server.client()
    derived = mp.push("a", iris_pipeline, alias="production")
    assert derived["lineage"]["schema_source"] == "estimator"
    assert derived["schema"]["fields"] == [
        {"name": c, "type": "number", "required": True} for c in IRIS_COLUMNS
    ]
    assert mp.predict("a", [dict.fromkeys(IRIS_COLUMNS, 1.0)])["version"] == 1

    schema = {"fields": [{"name": c, "type": "number", "maximum": 100} for c in IRIS_COLUMNS]}
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    given = mp.push("b", iris_pipeline, schema=schema_file, train_data=iris_frame)
    assert given["lineage"]["schema_source"] == "given"
    assert [f["maximum"] for f in given["schema"]["fields"]] == [100] * 4

    # The client sends every column of the training data (the target too, and in the file's
    # order) when it cannot see the estimator; the server keeps the estimator's columns.
    artifact = tmp_path / "iris.skops"
    sio.dump(iris_pipeline, artifact)
    shuffled = iris_frame[["species", *reversed(IRIS_COLUMNS)]]
    inferred = mp.push("c", artifact, train_data=shuffled)
    assert inferred["lineage"]["schema_source"] == "train_data"
    assert [f["name"] for f in inferred["schema"]["fields"]] == IRIS_COLUMNS
    stats = mp.version("c", 1, stats=True)["train_stats"]
    assert set(stats["fields"]) == set(IRIS_COLUMNS)  # the target's statistics are dropped too

    bad = tmp_path / "bad-schema.json"
    bad.write_text('{"fields": [{"name": "x", "type": "decimal"}]}')
    with pytest.raises(errors.InvalidInput) as info:
        mp.push("d", iris_pipeline, schema=bad)
    assert info.value.details[0]["field"] == "schema.fields[0].type"
    with pytest.raises(errors.InvalidInput, match="lacks the model's input column") as info:
        mp.push("e", artifact, train_data=iris_frame.drop(columns=["petal_width"]))
    assert info.value.details == [{"field": "petal_width", "reason": "not in the training data"}]
    assert [m["name"] for m in mp.models()] == ["a", "b", "c"]


def test_identical_artifacts_share_one_blob(
    server: RunningServer, iris_pipeline: Any, tmp_path: Path
) -> None:
    import joblib
    import skops.io as sio

    path = tmp_path / "iris.skops"
    sio.dump(iris_pipeline, path)
    mp = server.client()
    a = mp.push("iris", path)
    b = mp.push("iris", path)
    assert (a["version"], b["version"]) == (1, 2) and a["sha256"] == b["sha256"]
    assert a["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert a["size_bytes"] == path.stat().st_size
    (blob,) = _blobs(server)
    assert blob.read_bytes() == path.read_bytes() and blob.name == a["sha256"][2:]
    other = mp.push("iris", path, commit="again", train_data=None)
    assert other["sha256"] == a["sha256"] and len(_blobs(server)) == 1
    joblib.dump(iris_pipeline, tmp_path / "iris.joblib")
    different = mp.push("iris", tmp_path / "iris.joblib")
    assert different["sha256"] != a["sha256"] and len(_blobs(server)) == 2
    assert [v["sha256"] for v in mp.versions("iris")].count(a["sha256"]) == 3


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


def test_a_pushed_skops_model_is_kept_in_the_model_cache(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    version = server.client().push("iris", iris_pipeline, train_data=iris_frame)
    assert version["flavor"] == "sklearn"
    cache = server.settings.home / "cache"
    assert [p.name.split("-")[0] for p in cache.glob("*.joblib")] == [version["sha256"]]
