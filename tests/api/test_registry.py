"""Registry: integer versions, lineage, audited aliases, rollback, routing by alias."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LinearRegression

from modelport import errors
from tests.conftest import IRIS_COLUMNS, RunningServer

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_versions_count_from_one_with_full_lineage(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    csv = tmp_path / "train.csv"
    iris_frame.to_csv(csv, index=False)
    mp = server.client(server.key("data-science", "admin"))
    first = mp.push(
        "iris",
        iris_pipeline,
        train_data=csv,
        target="species",
        commit="0123abcd",
        metrics={"accuracy": 0.97},
    )
    second = mp.push("iris", iris_pipeline, train_data=csv, target="species")
    assert (first["version"], second["version"]) == (1, 2)
    lineage = first["lineage"]
    assert lineage["created_by"] == "data-science"
    assert lineage["code_commit"] == "0123abcd"
    assert lineage["train_data_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert lineage["metrics"] == {"accuracy": 0.97}
    assert lineage["python"].count(".") == 2
    import numpy
    import sklearn

    assert lineage["libraries"]["scikit-learn"] == sklearn.__version__
    assert lineage["libraries"]["numpy"] == numpy.__version__
    assert lineage["hyperparameters"]["logisticregression__max_iter"] == 1000
    assert lineage["learned"]["logisticregression"]["classes_"] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    assert lineage["schema_source"] == "train_data"
    assert [f["name"] for f in first["schema"]["fields"]] == IRIS_COLUMNS
    model = mp.model("iris")
    assert (
        model["task"] == "classification"
        and model["latest_version"] == 2
        and model["aliases"] == {}
    )
    stats = mp.version("iris", 1, stats=True)["train_stats"]
    assert stats["rows"] == 150 and set(stats["fields"]) == set(IRIS_COLUMNS)
    sepal = stats["fields"]["sepal_length"]
    assert sepal["mean"] == pytest.approx(iris_frame["sepal_length"].mean())
    assert (sepal["min"], sepal["max"], sepal["missing"]) == (4.3, 7.9, 0)
    assert server.http().get("/v1/models/iris/versions/2/schema").json() == first["schema"]
    assert [v["version"] for v in mp.versions("iris")] == [1, 2]
    assert "train_stats" not in mp.version("iris", 1)
    # Numbers are per model: another model starts again at 1.
    assert mp.push("other", iris_pipeline)["version"] == 1
    assert mp.model("other")["latest_version"] == 1


def test_aliases_move_audited_and_roll_back_step_by_step(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    started = time.time()
    mp = server.client()
    for _ in range(3):
        mp.push("iris", iris_pipeline, train_data=iris_frame)
    ops = server.client(server.key("ops", "admin"))
    assert ops.promote("iris", 1, reason="first release") == {
        "model": "iris",
        "alias": "production",
        "version": 1,
        "previous": None,
    }
    ops.promote("iris", 2)
    ops.promote("iris", 3, reason="better")
    assert mp.predict("iris", [ROW])["version"] == 3
    assert ops.rollback("iris", reason="regression")["version"] == 2
    assert mp.predict("iris", [ROW])["version"] == 2
    assert ops.rollback("iris")["version"] == 1
    with pytest.raises(errors.NothingToRollBack):
        ops.rollback("iris")
    ops.promote("iris", 3)
    assert ops.rollback("iris")["version"] == 1  # undoes the newest move
    history = mp.alias_history("iris", "production")
    assert [(e["kind"], e["from_version"], e["to_version"]) for e in history] == [
        ("rollback", 3, 1),
        ("move", 1, 3),
        ("rollback", 2, 1),
        ("rollback", 3, 2),
        ("move", 2, 3),
        ("move", 1, 2),
        ("move", None, 1),
    ]
    assert history[-1]["actor"] == "ops" and history[-1]["reason"] == "first release"
    assert [e["reason"] for e in history[2:5]] == ["", "regression", "better"]
    assert history[3]["reverts"] == history[4]["id"]  # the first rollback undid 2 -> 3
    assert history[2]["reverts"] == history[5]["id"]  # the second undid 1 -> 2
    assert history[0]["reverts"] == history[1]["id"]
    assert {e["actor"] for e in history} == {"ops"}
    assert all(e["alias"] == "production" for e in history)
    times = [_epoch(e["at"]) for e in history]
    assert times == sorted(times, reverse=True) and started - 1 <= times[-1] <= time.time() + 1
    assert mp.predict("iris", [ROW])["version"] == 1
    mp.promote("iris", 2, alias="candidate")
    everything = mp.alias_history("iris")
    assert len(everything) == 8 and everything[0]["alias"] == "candidate"
    assert everything[1:] == history


def test_explicit_version_and_other_aliases(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="candidate")
    assert mp.predict("iris", [ROW])["version"] == 1
    assert mp.predict("iris", [ROW], alias="candidate")["version"] == 2
    assert mp.predict("iris", [ROW], version=2)["version"] == 2
    record = mp.prediction(mp.predict("iris", [ROW], version=2)["prediction_ids"][0])
    assert record["alias"] is None and record["version"] == 2
    assert mp.model("iris")["aliases"] == {"candidate": 2, "production": 1}
    assert [v["aliases"] for v in mp.versions("iris")] == [["production"], ["candidate"]]


def test_create_model_then_push_and_task_inference(server: RunningServer, iris_frame: Any) -> None:
    mp = server.client()
    created = mp.create_model("petal", task="regression", description="petal width from the rest")
    assert created["task"] == "regression" and created["latest_version"] is None
    X, y = iris_frame[IRIS_COLUMNS[:3]], iris_frame["petal_width"]
    reg = LinearRegression().fit(X, y)
    mp.push("petal", reg, alias="production")
    out = mp.predict("petal", X.head(2).to_dict("records"))
    assert out["predictions"] == pytest.approx(list(reg.predict(X.head(2))))
    assert "probabilities" not in out
    mp.push("width", reg)
    assert mp.model("width")["task"] == "regression"
    assert [m["name"] for m in mp.models()] == ["petal", "width"]


def test_versions_are_immutable(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    mp = server.client()
    first = mp.push("iris", iris_pipeline, train_data=iris_frame, commit="c1", metrics={"f1": 0.9})
    frozen = mp.version("iris", 1, stats=True)
    # Nothing in the API edits or deletes a version: only GET reaches a version's URL, but for
    # its drift reference (monitoring's baseline, not part of what the version is or returns).
    doc = server.http("").get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if path == "/v1/models/{name}/versions/{version}/reference":
            assert set(ops) == {"put"}, path
        elif path.startswith("/v1/models/{name}/versions/{version}"):
            assert set(ops) == {"get"}, path
    http = server.http()
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        response = http.request(method, "/v1/models/iris/versions/1", json={"description": "x"})
        assert response.status_code == 405, method
    # Everything else that happens to the model leaves version 1 as it was.
    mp.push("iris", iris_pipeline, train_data=iris_frame, commit="c2", metrics={"f1": 0.1})
    mp.push("iris", iris_pipeline, schema=None, commit="c3")
    mp.promote("iris", 1)
    mp.promote("iris", 2)
    mp.rollback("iris")
    pid = mp.predict("iris", [ROW], version=1)["prediction_ids"][0]
    mp.feedback(pid, label="setosa")
    after = mp.version("iris", 1, stats=True)
    assert after["aliases"] == ["production"] and frozen["aliases"] == []
    assert {k: v for k, v in after.items() if k != "aliases"} == {
        k: v for k, v in frozen.items() if k != "aliases"
    }
    assert after["sha256"] == first["sha256"] and after["lineage"]["code_commit"] == "c1"
    assert mp.version("iris", 2)["lineage"]["metrics"] == {"f1": 0.1}
