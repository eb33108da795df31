"""Segmented models against a real server: an online instance per segment made on demand and
learning only from its own observations, pushed per-segment versions with the model's
production alias as fallback, bounded live segments (LRU), and the ledger's segment column."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression

from modelport import errors
from modelport.settings import Settings
from tests.api.test_metrics import scrape, value
from tests.conftest import RunningServer, start_server, wait_until

STORE_SCHEMA = {
    "fields": [
        {"name": "store", "type": "category", "categories": ["a", "b", "c"]},
        {"name": "x", "type": "number"},
    ]
}
SLOPES = {"a": 2.0, "b": -2.0, "c": 0.5}


@pytest.fixture
def learning(settings: Settings) -> Iterator[RunningServer]:
    running = start_server(settings.model_copy(update={"learn_poll_seconds": 0.05}))
    yield running
    running.stop()


def _wait(check: Any, timeout: float = 60.0, what: str = "the condition") -> Any:
    return wait_until(check, timeout, what)


def _answers(mp: Any, name: str, rows: list[dict[str, Any]]) -> Any:
    try:
        return mp.predict(name, rows)
    except errors.ModelportError:
        return None


def test_online_segments_are_made_on_demand_and_learn_only_their_own_observations(
    learning: RunningServer,
) -> None:
    mp = learning.client()
    http = learning.http()
    mp.create_from_algorithm(
        "sales",
        "online_linear_regression",
        schema=STORE_SCHEMA,
        target="y",
        online={"min_observations": 20, "snapshot_every": 40, "snapshot_seconds": 0.2},
        segment_by="store",
    )
    # At most two segment instances in memory, for learning and for serving alike.
    assert http.put("/v1/models/sales/serving", json={"max_live_segments": 2}).status_code == 200
    rejected = mp.observe("sales", [{"x": 1.0, "y": 1.0}, {"store": "a", "x": 1.0, "y": 3.0}])
    assert rejected["accepted"] == 1
    assert [(r["index"], r["field"]) for r in rejected["rejected"]] == [(0, "store")]
    rng = np.random.default_rng(1)
    rows = []
    for x in rng.uniform(-2, 2, 1800):
        store = str(rng.choice(list(SLOPES)))
        rows.append({"store": store, "x": float(x), "y": SLOPES[store] * float(x) + 1.0})
    for start in range(0, len(rows), 600):
        mp.observe("sales", rows[start : start + 600])

    ask = [
        {"store": "a", "x": 1.5},
        {"store": "b", "x": 1.5},
        {"store": "c", "x": 1.5},
        {"store": "a", "x": -1.0},
    ]

    def learned() -> Any:
        out = _answers(mp, "sales", ask)
        if out is None:
            return None
        want = [4.0, -2.0, 1.75, -1.0]
        close = all(abs(p - w) < 0.5 for p, w in zip(out["predictions"], want, strict=True))
        return out if close else None

    out = _wait(learned, what="every segment to learn its own slope")
    assert out["segments"] == ["a", "b", "c", "a"]

    # The status says what was learned: every observation, once every segment has saved it.
    def caught_up() -> Any:
        status = http.get("/v1/models/sales/learning").json()
        return status if status["learned_through"] == status["newest_observation"] else None

    status = _wait(caught_up, what="learned_through to reach the newest observation")
    assert status["observations"] == 1801
    versions = out["versions"]
    assert versions[0] == versions[3] and len({versions[0], versions[1], versions[2]}) == 3
    assert len(set(out["prediction_ids"])) == 4
    for version, segment in zip(versions, out["segments"], strict=True):
        assert mp.version("sales", version)["segment"] == segment
    model = mp.model("sales")
    assert model["segment_by"] == "store" and "production" not in model["aliases"]
    assert {"production@a", "production@b", "production@c"} <= set(model["aliases"])

    # Three segments, two live: answering all of them unloads and reloads, and stays right.
    for _ in range(2):
        for store in ("a", "b", "c"):
            got = mp.predict("sales", [{"store": store, "x": 1.0}])["predictions"][0]
            assert abs(got - (SLOPES[store] + 1.0)) < 0.5
    segments = mp.segments("sales")
    assert segments["field"] == "store" and segments["live"] == 2
    assert [s["segment"] for s in segments["segments"]] == ["a", "b", "c"]
    figures = scrape(http)
    assert value(figures, "modelport_segment_evictions_total", model="sales") >= 3
    assert value(figures, "modelport_segments_live", model="sales") == 2

    # The ledger has the segment; each segment's snapshots chain within the segment.
    record = mp.prediction(out["prediction_ids"][1])
    assert record["segment"] == "b" and record["version"] == versions[1]
    for v in mp.versions("sales"):
        parent = v["lineage"].get("parent_version")
        if parent is not None:
            assert mp.version("sales", parent)["segment"] == v["segment"]


def test_an_unknown_segment_of_an_online_model_answers_409_and_bad_keys_422(
    learning: RunningServer,
) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "sales",
        "online_linear_regression",
        schema=STORE_SCHEMA,
        target="y",
        segment_by="store",
    )
    with pytest.raises(errors.ModelportError) as early:
        mp.predict("sales", [{"store": "a", "x": 1.0}])
    assert early.value.status_code == 409 and "'a'" in str(early.value)
    r = learning.http().post("/v1/models/sales/predict", json={"inputs": [{"x": 1.0}]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "store"
    bad = learning.http().post(
        "/v1/models",
        json={
            "name": "bad",
            "algorithm": "online_linear_regression",
            "schema": STORE_SCHEMA,
            "target": "y",
            "segment_by": "x",
        },
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "segment_by"


def test_a_feedback_key_cannot_make_segments_past_the_models_limit(
    learning: RunningServer,
) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "shops",
        "online_linear_regression",
        schema={"fields": [{"name": "shop", "type": "integer"}, {"name": "x", "type": "number"}]},
        target="y",
        online={"min_observations": 2, "snapshot_every": 2, "snapshot_seconds": 0.1},
        segment_by="shop",
    )
    assert learning.http().put("/v1/models/shops/serving", json={"max_segments": 3}).is_success
    feeder = learning.client(learning.key("sensor", "feedback"))
    rows = [{"shop": i % 5, "x": float(i), "y": 2.0 * i} for i in range(40)]
    out = feeder.observe("shops", rows)
    # Shops 0, 1, 2 are admitted in the order they appear; 3 and 4 are refused, row by row.
    assert out["accepted"] == 24
    refused = {r["index"] for r in out["rejected"]}
    assert refused == {i for i in range(40) if i % 5 >= 3}
    assert {r["field"] for r in out["rejected"]} == {"shop"}
    assert "limit of 3 segments" in out["rejected"][0]["reason"]
    # Known segments still take observations; a call of only new ones is a 422.
    assert feeder.observe("shops", [{"shop": 1, "x": 1.0, "y": 2.0}])["accepted"] == 1
    with pytest.raises(errors.InvalidInput) as only_new:
        feeder.observe("shops", [{"shop": 9, "x": 1.0, "y": 2.0}])
    assert only_new.value.details[0]["field"] == "shop"
    events = [e for e in mp.events("shops") if e["kind"] == "segment_limit"]
    assert len(events) == 2 and events[0]["actor"] == "sensor"
    assert events[-1]["detail"]["max_segments"] == 3

    # The learner makes versions for the admitted segments only.
    def made() -> Any:
        segs = {v["segment"] for v in mp.versions("shops")}
        return segs if segs == {"0", "1", "2"} else None

    _wait(made, what="versions of the three admitted segments")


def _linear(slope: float) -> LinearRegression:
    X = pd.DataFrame({"store": [1, 1, 1], "x": [0.0, 1.0, 2.0]})
    return LinearRegression().fit(X, slope * X["x"])


PUSH_SCHEMA = {"fields": [{"name": "store", "type": "integer"}, {"name": "x", "type": "number"}]}


def test_pushed_segment_versions_answer_their_segment_and_the_rest_falls_back(
    server: RunningServer,
) -> None:
    mp = server.client()
    http = server.http()
    mp.create_model("demand", task="regression")
    assert mp.set_segment_key("demand", "store") == {"model": "demand", "field": "store"}
    fallback = DummyRegressor(strategy="constant", constant=10.0).fit(
        pd.DataFrame({"store": [0], "x": [0.0]}), [10.0]
    )
    mp.push("demand", fallback, schema=PUSH_SCHEMA, alias="production")
    for store, slope in ((1, 3.0), (2, -3.0), (3, 1.0)):
        pushed = mp.push(
            "demand", _linear(slope), schema=PUSH_SCHEMA, alias="production", segment=str(store)
        )
        assert pushed["segment"] == str(store)
    assert {"production", "production@1", "production@2", "production@3"} <= set(
        mp.model("demand")["aliases"]
    )

    out = mp.predict(
        "demand",
        [{"store": 1, "x": 1.0}, {"store": 9, "x": 1.0}, {"store": 2, "x": 2.0}],
    )
    assert out["predictions"] == pytest.approx([3.0, 10.0, -6.0])
    assert out["segments"] == ["1", "9", "2"]
    assert out["versions"] == [2, 1, 3]
    records = [mp.prediction(i) for i in out["prediction_ids"]]
    assert [r["segment"] for r in records] == ["1", "9", "2"]
    assert [r["alias"] for r in records] == ["production@1", "production", "production@2"]

    # Bad segment values are refused naming the field.
    for row in ({"x": 1.0}, {"store": "one", "x": 1.0}, {"store": 1.5, "x": 1.0}):
        r = http.post("/v1/models/demand/predict", json={"inputs": [row]})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["field"] == "store"
    r = http.post("/v1/models/demand/predict", json={"inputs": [{"store": 1, "x": 1.0}, {"x": 2}]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "store"

    # An explicit version answers every row, whatever its segment.
    pinned = mp.predict("demand", [{"store": 1, "x": 1.0}], version=1)
    assert pinned["predictions"] == [10.0] and "segments" not in pinned

    # Performance by segment: only that segment's predictions and versions.
    mp.feedback(out["prediction_ids"][0], label=3.0)
    mp.feedback(out["prediction_ids"][2], label=-5.0)
    one = mp.performance("demand", segment="1")
    assert one["segment"] == "1"
    assert [v["version"] for v in one["versions"]] == [2]
    timeline = http.get("/v1/models/demand/timeline", params={"segment": "2"}).json()
    assert {v["version"] for v in timeline["versions"]} == {3}
    drift = http.get("/v1/models/demand/drift", params={"segment": "9"}).json()
    assert [v["version"] for v in drift["versions"]] == [1]

    # Two live segments at most: the third unloads the least recently used; all stay right.
    assert http.put("/v1/models/demand/serving", json={"max_live_segments": 2}).status_code == 200
    for _ in range(2):
        for store, want in ((1, 3.0), (2, -3.0), (3, 1.0)):
            got = mp.predict("demand", [{"store": store, "x": 1.0}])["predictions"]
            assert got == pytest.approx([want])
    assert mp.segments("demand")["live"] == 2
    assert value(scrape(http), "modelport_segment_evictions_total", model="demand") >= 3


def test_a_segment_push_needs_a_segment_key_in_the_schema(server: RunningServer) -> None:
    mp = server.client()
    with pytest.raises(errors.ModelportError) as none:
        mp.push("plain", _linear(1.0), schema=PUSH_SCHEMA, segment="1")
    assert none.value.status_code == 409
    mp.create_model("plain", task="regression")
    mp.set_segment_key("plain", "shop")
    with pytest.raises(errors.ModelportError) as missing:
        mp.push("plain", _linear(1.0), schema=PUSH_SCHEMA, segment="1")
    assert missing.value.status_code == 422
    with pytest.raises(errors.ModelportError) as bad:
        mp.push("plain", _linear(1.0), schema=PUSH_SCHEMA, segment="no/slash")
    assert bad.value.status_code == 422


def test_segment_learning_survives_eviction_and_restart_without_loss_or_repeat(
    settings: Settings,
) -> None:
    """Segment states are snapshotted only when evicted here: after a restart every
    observation is learned exactly once by its own segment."""
    quick = settings.model_copy(update={"learn_poll_seconds": 0.05})

    def rows(store: str, n: int) -> list[dict[str, Any]]:
        return [{"store": store, "x": float(i), "y": SLOPES[store] * i} for i in range(n)]

    def learned(mp: Any, store: str) -> int:
        aliases = mp.model("sales")["aliases"]
        if f"production@{store}" not in aliases:
            return 0
        newest = [v for v in mp.versions("sales") if v["segment"] == store][-1]
        return int(newest["lineage"]["observations_learned"])

    first = start_server(quick)
    try:
        mp = first.client()
        mp.create_from_algorithm(
            "sales",
            "online_linear_regression",
            schema=STORE_SCHEMA,
            target="y",
            online={"min_observations": 5, "snapshot_every": 100000, "snapshot_seconds": 100000},
            segment_by="store",
        )
        assert (
            first.http().put("/v1/models/sales/serving", json={"max_live_segments": 1}).is_success
        )
        mp.observe("sales", rows("a", 20))
        mp.observe("sales", rows("b", 20))  # b in, a evicted: a snapshotted
        _wait(lambda: learned(mp, "a") == 20, what="a's snapshot at eviction")
    finally:
        first.stop()  # b learned 20 rows in memory only

    second = start_server(quick)
    try:
        mp = second.client()
        mp.observe("sales", rows("a", 20))  # a back (b evicted, snapshotted)
        _wait(lambda: learned(mp, "b") == 20, what="b learned again after the restart")
        mp.observe("sales", rows("b", 5))  # b back: a evicted with everything it learned
        _wait(lambda: learned(mp, "a") == 40, what="a's second snapshot")
        assert learned(mp, "b") == 20
    finally:
        second.stop()


def test_creating_a_model_with_a_bad_segment_key_creates_nothing(server: RunningServer) -> None:
    # The model and its segment key are one write: a refused key leaves no model behind.
    http = server.http()
    bad = http.post("/v1/models", json={"name": "halfway", "task": "regression", "segment_by": ""})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["details"][0]["field"] == "segment_by"
    assert http.get("/v1/models/halfway").status_code == 404
    good = http.post(
        "/v1/models", json={"name": "whole", "task": "regression", "segment_by": "shop"}
    )
    assert good.status_code == 201 and good.json()["segment_by"] == "shop"
    assert http.get("/v1/models/whole").json()["segment_by"] == "shop"
