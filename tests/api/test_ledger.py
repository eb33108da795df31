"""The ledger: a row per predicted row, paging, filters; feedback with history."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modelport import errors
from tests.conftest import IRIS_COLUMNS, RunningServer

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def iris(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> RunningServer:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    return server


def test_every_row_is_logged_with_what_made_it(iris: RunningServer, iris_frame: Any) -> None:
    http = iris.http(iris.key("shop", "predict", "read"))
    rows = iris_frame[IRIS_COLUMNS].head(3).to_dict("records")
    r = http.post(
        "/v1/models/iris/predict", json={"inputs": rows}, headers={"X-Request-ID": "order-77"}
    )
    assert r.headers["x-request-id"] == "order-77"
    out = r.json()
    for i, pid in enumerate(out["prediction_ids"]):
        rec = http.get(f"/v1/predictions/{pid}").json()
        assert rec["model"] == "iris" and rec["version"] == 1 and rec["alias"] == "production"
        assert rec["consumer"] == "shop" and rec["request_id"] == "order-77"
        assert rec["inputs"] == rows[i]
        assert rec["outputs"]["prediction"] == out["predictions"][i]
        assert rec["outputs"]["probabilities"] == pytest.approx(out["probabilities"][i])
        assert rec["latency_ms"] > 0 and rec["time"].endswith("Z") and rec["feedback"] == []
    generated = http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
    request_id = generated.headers["x-request-id"]
    assert len(request_id) == 32
    assert (
        http.get(f"/v1/predictions/{generated.json()['prediction_ids'][0]}").json()["request_id"]
        == request_id
    )


def test_paging_and_filters(iris: RunningServer, iris_pipeline: Any, iris_frame: Any) -> None:
    mp = iris.client()
    ids = []
    for _ in range(5):
        ids += mp.predict("iris", [ROW, ROW])["prediction_ids"]
    middle = time.time()
    time.sleep(0.05)
    mp.push("iris", iris_pipeline, train_data=iris_frame)
    ids += mp.predict("iris", [ROW], version=2)["prediction_ids"]
    seen, cursor = [], None
    while True:
        page = mp.predictions("iris", limit=3, cursor=cursor)
        seen += [p["id"] for p in page["predictions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert [p["id"] for p in mp.predictions("iris", version=2)["predictions"]] == ids[-1:]
    assert len(mp.predictions("iris", until=middle)["predictions"]) == 10
    assert len(mp.predictions("iris", since=str(middle))["predictions"]) == 1
    assert mp.predictions("iris", since="2000-01-01T00:00:00Z", limit=2)["next_cursor"] == ids[1]
    with pytest.raises(errors.ModelNotFound):
        mp.predictions("nope")


def test_feedback_supersedes_and_keeps_history(iris: RunningServer) -> None:
    mp = iris.client()
    pid, other = mp.predict("iris", [ROW, ROW])["prediction_ids"]
    mp.feedback(pid, label="versicolor")
    mp.feedback(pid, label="setosa", reward=1.0)
    mp.feedback(other, reward=0.25)
    history = mp.prediction(pid)["feedback"]
    assert [(f["label"], f["reward"], f["superseded"]) for f in history] == [
        ("versicolor", None, True),
        ("setosa", 1.0, False),
    ]
    assert mp.prediction(other)["feedback"][0]["reward"] == 0.25


def test_unknown_and_malformed_items_are_reported_per_item(iris: RunningServer) -> None:
    mp = iris.client()
    pid = mp.predict("iris", [ROW])["prediction_ids"][0]
    out = mp.feedback(
        [
            {"prediction_id": "nope", "label": 1},
            {"prediction_id": pid, "label": "setosa"},
            {"prediction_id": pid},
            {"prediction_id": pid, "reward": "high"},
            {"prediction_id": pid, "label": 1, "colour": "red"},
        ]
    )
    assert [a["index"] for a in out["accepted"]] == [1]
    assert [(r["index"], r["reason"]) for r in out["rejected"]] == [
        (0, "unknown prediction id"),
        (2, "give a label, a reward, or both"),
        (3, "reward: expected a finite number"),
        (4, "unexpected field(s): colour"),
    ]
    assert len(mp.prediction(pid)["feedback"]) == 1
    with pytest.raises(errors.InvalidInput) as info:
        mp.feedback([{"prediction_id": "a", "label": 1}, {"prediction_id": "b", "label": 2}])
    assert [(d["row"], d["reason"]) for d in info.value.details] == [
        (0, "unknown prediction id"),
        (1, "unknown prediction id"),
    ]
