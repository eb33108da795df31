"""The ledger: a row per predicted row, paging, filters; feedback with history."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from modelport import errors
from modelport.ledger import check_feedback_items
from tests.conftest import IRIS_COLUMNS, RunningServer

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def iris(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> RunningServer:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    return server


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def test_every_row_is_logged_with_what_made_it(iris: RunningServer, iris_frame: Any) -> None:
    http = iris.http(iris.key("shop", "predict", "read"))
    rows = iris_frame[IRIS_COLUMNS].iloc[[0, 60, 120]].to_dict("records")
    before = time.time()
    r = http.post(
        "/v1/models/iris/predict", json={"inputs": rows}, headers={"X-Request-ID": "order-77"}
    )
    after = time.time()
    assert r.headers["x-request-id"] == "order-77"
    out = r.json()
    assert len(out["prediction_ids"]) == 3
    for i, pid in enumerate(out["prediction_ids"]):
        rec = http.get(f"/v1/predictions/{pid}").json()
        assert set(rec) == {
            "id",
            "time",
            "model",
            "version",
            "alias",
            "consumer",
            "request_id",
            "inputs",
            "outputs",
            "latency_ms",
            "policy",
            "arm",
            "shadow",
            "segment",
            "cached",
            "feedback",
        }
        assert rec["policy"] == "single" and rec["shadow"] is False
        assert rec["segment"] is None and rec["cached"] is False
        assert rec["id"] == pid
        assert rec["model"] == "iris" and rec["version"] == 1 and rec["alias"] == "production"
        assert rec["consumer"] == "shop" and rec["request_id"] == "order-77"
        assert rec["inputs"] == rows[i]
        assert rec["outputs"]["prediction"] == out["predictions"][i]
        assert set(rec["outputs"]["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert rec["outputs"]["probabilities"] == pytest.approx(out["probabilities"][i])
        assert 0 < rec["latency_ms"] < (after - before) * 1000
        assert rec["time"].endswith("Z") and before - 1 <= _epoch(rec["time"]) <= after + 1
        assert rec["feedback"] == []
    assert [p["prediction"] for p in _outputs(iris)] == out["predictions"]

    # Without X-Request-ID the server makes one, answers with it and stores it.
    generated = http.post(
        "/v1/models/iris/predict",
        json={"columns": IRIS_COLUMNS, "data": [list(ROW.values()), list(ROW.values())]},
    )
    request_id = generated.headers["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    stored = [http.get(f"/v1/predictions/{p}").json() for p in generated.json()["prediction_ids"]]
    assert [s["request_id"] for s in stored] == [request_id, request_id]
    assert [s["inputs"] for s in stored] == [ROW, ROW]
    other = http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
    assert other.headers["x-request-id"] != request_id
    # A failed request is answered with its request id too, and logs nothing.
    failed = http.post(
        "/v1/models/iris/predict", json={"inputs": [{}]}, headers={"X-Request-ID": "bad-1"}
    )
    assert failed.status_code == 422 and failed.headers["x-request-id"] == "bad-1"
    assert len(_outputs(iris)) == 6


def _outputs(server: RunningServer) -> list[dict[str, Any]]:
    page = server.client().predictions("iris", limit=1000)
    return [p["outputs"] for p in page["predictions"]]


def test_paging_covers_every_row_once_in_order_and_filters(
    iris: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = iris.client()
    ids = []
    for _ in range(5):
        ids += mp.predict("iris", [ROW, ROW])["prediction_ids"]
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    mp.push("iris", iris_pipeline, train_data=iris_frame)
    ids += mp.predict("iris", [ROW], version=2)["prediction_ids"]
    ids += mp.predict("iris", [ROW])["prediction_ids"]
    assert len(set(ids)) == 12

    for limit in (1, 3, 5, 12, 1000):
        seen, cursor, pages = [], None, 0
        while True:
            page = mp.predictions("iris", limit=limit, cursor=cursor)
            assert len(page["predictions"]) <= limit
            seen += [p["id"] for p in page["predictions"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert cursor == seen[-1]
        assert seen == ids, limit
        assert pages == math.ceil(12 / limit), limit

    assert [p["id"] for p in mp.predictions("iris", version=2)["predictions"]] == ids[10:11]
    assert [p["id"] for p in mp.predictions("iris", version=1)["predictions"]] == ids[:10] + ids[
        11:
    ]
    assert [p["id"] for p in mp.predictions("iris", until=middle)["predictions"]] == ids[:10]
    assert [p["id"] for p in mp.predictions("iris", since=str(middle))["predictions"]] == ids[10:]
    iso_middle = datetime.fromtimestamp(middle, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    assert [p["id"] for p in mp.predictions("iris", since=iso_middle)["predictions"]] == ids[10:]
    both = mp.predictions("iris", since=iso_middle, version=1)["predictions"]
    assert [p["id"] for p in both] == ids[11:]
    page = mp.predictions("iris", since="2000-01-01T00:00:00Z", limit=2)
    assert page["next_cursor"] == ids[1]
    assert mp.predictions("iris", until="2000-01-01T00:00:00Z") == {
        "predictions": [],
        "next_cursor": None,
    }
    with pytest.raises(errors.ModelNotFound):
        mp.predictions("nope")


def test_feedback_supersedes_and_keeps_history(iris: RunningServer) -> None:
    mp = iris.client()
    pid, other = mp.predict("iris", [ROW, ROW])["prediction_ids"]
    labeller = iris.client(iris.key("labeller", "feedback"))
    first = labeller.feedback(pid, label="versicolor")
    assert first["rejected"] == []
    assert [(a["index"], a["prediction_id"]) for a in first["accepted"]] == [(0, pid)]
    assert isinstance(first["accepted"][0]["feedback_id"], int)
    labeller.feedback(pid, label="setosa")
    labeller.feedback(other, reward=0.25)
    labeller.feedback(other, label=0, reward=-1)
    history = mp.prediction(pid)["feedback"]
    assert [(f["label"], f["reward"], f["superseded"]) for f in history] == [
        ("versicolor", None, True),
        ("setosa", None, False),
    ]
    assert history[0]["id"] < history[1]["id"]
    assert _epoch(history[0]["time"]) <= _epoch(history[1]["time"])
    assert {f["consumer"] for f in history} == {"labeller"}
    rewards = mp.prediction(other)["feedback"]
    assert [(f["label"], f["reward"], f["superseded"]) for f in rewards] == [
        (None, 0.25, True),
        (0, -1.0, False),
    ]


def test_unknown_and_malformed_items_are_reported_per_item(iris: RunningServer) -> None:
    mp = iris.client()
    pid = mp.predict("iris", [ROW])["prediction_ids"][0]
    items = [
        {"prediction_id": "nope", "label": 1},
        {"prediction_id": pid, "label": "setosa"},
        {"prediction_id": pid},
        {"prediction_id": pid, "reward": "high"},
        {"prediction_id": pid, "label": 1, "colour": "red"},
        {"prediction_id": pid, "reward": True},
        {"prediction_id": pid, "label": {"class": "setosa"}},
        {"label": "setosa"},
        "setosa",
        {"prediction_id": pid, "reward": 0.5},
    ]
    response = iris.http(iris.key("labeller", "feedback")).post(
        "/v1/feedback", json={"feedback": items}
    )
    assert response.status_code == 200
    out = response.json()
    assert [(a["index"], a["prediction_id"]) for a in out["accepted"]] == [(1, pid), (9, pid)]
    assert out["rejected"] == [
        {"index": 0, "prediction_id": "nope", "reason": "unknown prediction id"},
        {"index": 2, "prediction_id": pid, "reason": "give a label, a reward, or both"},
        {"index": 3, "prediction_id": pid, "reason": "reward: expected a finite number"},
        {"index": 4, "prediction_id": pid, "reason": "unexpected field(s): colour"},
        {"index": 5, "prediction_id": pid, "reason": "reward: expected a finite number"},
        {"index": 6, "prediction_id": pid, "reason": "label: expected a string, number or boolean"},
        {
            "index": 7,
            "prediction_id": None,
            "reason": "prediction_id: expected a prediction id string",
        },
        {"index": 8, "prediction_id": None, "reason": "each item must be an object"},
    ]
    stored = mp.prediction(pid)["feedback"]
    assert [(f["label"], f["reward"]) for f in stored] == [("setosa", None), (None, 0.5)]

    # JSON has no NaN or infinity; the check still refuses them from other callers.
    _, rejected = check_feedback_items(
        [{"prediction_id": pid, "reward": math.nan}, {"prediction_id": pid, "reward": math.inf}]
    )
    assert [r["reason"] for r in rejected] == ["reward: expected a finite number"] * 2
    overflow = iris.http().post(
        "/v1/feedback",
        content=b'{"feedback": [{"prediction_id": "%s", "reward": 1e999}]}' % pid.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert overflow.status_code == 400 and "not valid JSON" in overflow.json()["error"]["message"]

    with pytest.raises(errors.InvalidInput, match="no feedback item was accepted") as info:
        mp.feedback([{"prediction_id": "a", "label": 1}, {"prediction_id": pid}])
    assert [(d["row"], d["reason"]) for d in info.value.details] == [
        (0, "unknown prediction id"),
        (1, "give a label, a reward, or both"),
    ]
    bodies: list[dict[str, Any]] = [{"feedback": []}, {"feedback": {"prediction_id": pid}}, {}]
    for body in bodies:
        response = iris.http().post("/v1/feedback", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["details"][0]["field"] == "feedback"
    assert len(mp.prediction(pid)["feedback"]) == 2
