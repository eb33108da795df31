"""Registry: integer versions, lineage, audited aliases, rollback, routing by alias."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LinearRegression

from modelport import errors
from tests.conftest import IRIS_COLUMNS, RunningServer

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


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
    assert {"scikit-learn", "numpy"} <= set(lineage["libraries"])
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
    assert server.http().get("/v1/models/iris/versions/2/schema").json() == first["schema"]
    assert [v["version"] for v in mp.versions("iris")] == [1, 2]


def test_aliases_move_audited_and_roll_back_step_by_step(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
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
    assert history[3]["reverts"] == history[4]["id"]
    assert all(e["at"].endswith("Z") for e in history)


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
