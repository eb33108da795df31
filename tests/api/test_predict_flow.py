"""The core path through a real server: push, predict, ledger, feedback."""

from __future__ import annotations

from typing import Any

import pytest

from modelport import errors
from tests.conftest import IRIS_COLUMNS, RunningServer


def test_push_predict_feedback_roundtrip(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    pushed = mp.push(
        "iris", iris_pipeline, train_data=iris_frame, alias="production", commit="abc123"
    )
    assert pushed["version"] == 1
    assert [f["name"] for f in pushed["schema"]["fields"]] == IRIS_COLUMNS
    assert pushed["lineage"]["code_commit"] == "abc123"
    assert len(pushed["lineage"]["train_data_sha256"]) == 64

    rows = iris_frame[IRIS_COLUMNS].iloc[[0, 60, 120]]
    out = mp.predict("iris", rows.to_dict("records"))
    assert out["version"] == 1
    assert out["predictions"] == list(iris_pipeline.predict(rows))
    assert len(set(out["prediction_ids"])) == 3
    for probs in out["probabilities"]:
        assert set(probs) == {"setosa", "versicolor", "virginica"}
        assert sum(probs.values()) == pytest.approx(1.0)

    pid = out["prediction_ids"][1]
    fb = mp.feedback(pid, label="versicolor")
    assert fb["accepted"][0]["prediction_id"] == pid
    record = mp.prediction(pid)
    assert record["inputs"] == {k: float(v) for k, v in rows.iloc[1].items()}
    assert record["outputs"]["prediction"] == out["predictions"][1]
    assert [f["label"] for f in record["feedback"]] == ["versicolor"]


def test_bad_input_is_422_and_not_logged(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    with pytest.raises(errors.InvalidInput) as info:
        mp.predict("iris", [{"sepal_length": "wide", "sepal_width": 3.0, "petal_length": 1.0}])
    fields = {(d["row"], d["field"]) for d in info.value.details}
    assert fields == {(0, "sepal_length"), (0, "petal_width")}
    assert mp.predictions("iris")["predictions"] == []


def test_batching_stats_are_exposed(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    rows = iris_frame[IRIS_COLUMNS].head(4).to_dict("records")
    for _ in range(3):
        mp.predict("iris", rows)
    stats = server.http().get("/v1/models/iris/versions/1/batching").json()
    assert stats["requests"] == 3 and stats["rows"] == 12
    assert stats["batch_rows"]["count"] == stats["batches"] >= 1
    assert stats["queue_wait_ms"]["count"] == 3
