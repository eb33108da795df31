"""Releases per consuming app: pins, adapters, traffic policies, events and experiments,
against a real server on loopback."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from scipy import stats

from modelport import errors
from modelport.settings import Settings
from modelport.store import Store
from modelport.store.tables import predictions
from tests.api.models import Constant, Doubler
from tests.conftest import RunningServer, start_server

X_SCHEMA = {"fields": [{"name": "x", "type": "number"}]}


@pytest.fixture
def fast(settings: Settings) -> Iterator[RunningServer]:
    """A server that re-reads bandit statistics and judges canaries every 50 ms."""
    running = start_server(settings.model_copy(update={"release_check_seconds": 0.05}))
    yield running
    running.stop()


def _two_versions(server: RunningServer, name: str = "m") -> Any:
    mp = server.client()
    mp.push(name, Constant("a"), schema=X_SCHEMA, alias="production")
    mp.push(name, Constant("b"), schema=X_SCHEMA, alias="candidate")
    return mp


def _ledger(server: RunningServer) -> list[Any]:
    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            return list(conn.execute(sa.select(predictions).order_by(predictions.c.id)))
    finally:
        st.close()


def test_a_pinned_consumer_stays_on_its_version(server: RunningServer) -> None:
    mp = _two_versions(server)
    checkout = server.client(server.key("checkout", "predict"))
    other = server.client(server.key("web", "predict"))
    mp.pin("m", "checkout", version=1)
    mp.promote("m", 2)
    assert checkout.predict("m", [{"x": 1}])["predictions"] == ["a"]  # pinned to version 1
    assert other.predict("m", [{"x": 1}])["predictions"] == ["b"]  # production is version 2
    mp.pin("m", "checkout", alias="candidate")
    assert checkout.predict("m", [{"x": 1}])["version"] == 2
    mp.unpin("m", "checkout")
    assert [c["consumer"] for c in mp.consumers("m")] == []
    rows = _ledger(server)
    assert [(r.consumer, r.version, r.policy) for r in rows] == [
        ("checkout", 1, "pinned"),
        ("web", 2, "single"),
        ("checkout", 2, "pinned"),
    ]
    kinds = [e["kind"] for e in mp.events("m")]
    assert kinds[:3] == ["consumer_removed", "consumer_set", "alias_move"]


def test_split_is_sticky_per_unit_and_follows_the_weights(server: RunningServer) -> None:
    mp = _two_versions(server)
    mp.set_traffic(
        "m",
        {
            "policy": "split",
            "arms": [
                {"name": "a", "alias": "production", "weight": 70},
                {"name": "b", "alias": "candidate", "weight": 30},
            ],
        },
    )
    http = server.http()
    seen: dict[str, set[str]] = {}
    for unit in range(300):
        for _ in range(3):
            r = http.post(
                "/v1/models/m/predict",
                json={"inputs": [{"x": 1}]},
                headers={"X-Unit-ID": f"user-{unit}"},
            )
            seen.setdefault(f"user-{unit}", set()).add(r.json()["predictions"][0])
    assert all(len(arms) == 1 for arms in seen.values())  # each unit always on one arm
    on_b = sum("b" in arms for arms in seen.values())
    # 300 units at 30 %: a two-sided binomial test must not reject the weights
    assert stats.binomtest(on_b, 300, 0.3).pvalue > 0.001
    arms = Counter(r.arm for r in _ledger(server))
    assert set(arms) == {"a", "b"} and sum(arms.values()) == 900


def test_split_by_an_input_field(server: RunningServer) -> None:
    mp = _two_versions(server)
    mp.set_traffic(
        "m",
        {
            "policy": "split",
            "arms": [{"name": "a", "version": 1}, {"name": "b", "version": 2}],
            "unit": {"field": "x"},
        },
    )
    for x in range(40):
        answers = {mp.predict("m", [{"x": x}])["predictions"][0] for _ in range(2)}
        assert len(answers) == 1


def test_shadow_answers_exactly_as_without_it_and_logs_the_copy(server: RunningServer) -> None:
    mp = _two_versions(server)
    http = server.http()

    def answer() -> tuple[dict[str, Any], dict[str, str]]:
        r = http.post("/v1/models/m/predict", json={"inputs": [{"x": 2}]})
        body = r.json()
        body.pop("prediction_ids")
        # every prediction id has the same length: content-length must match too
        headers = {k: v for k, v in r.headers.items() if k not in ("x-request-id", "date")}
        return body, headers

    before = answer()
    mp.set_traffic(
        "m",
        {
            "policy": "shadow",
            "target": {"alias": "production"},
            "shadow": {"alias": "candidate"},
            "share": 1.0,
        },
    )
    after = answer()
    assert after == before  # the same bytes, but for the new prediction id
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = _ledger(server)
        if any(r.shadow for r in rows):
            break
        time.sleep(0.02)
    shadow = [r for r in rows if r.shadow]
    assert [(r.version, r.arm, r.policy) for r in shadow] == [(2, "shadow", "shadow")]
    assert [r.version for r in rows if not r.shadow] == [1, 1]
    # shadow rows stay out of the caller's view of its predictions
    assert mp.predictions("m")["predictions"][-1]["shadow"] is True


def test_a_failing_shadow_never_reaches_the_caller(server: RunningServer) -> None:
    mp = server.client()
    mp.push("m", Constant("a"), schema=X_SCHEMA, alias="production")
    mp.push("m", Constant("b", fail_above=5), schema=X_SCHEMA, alias="candidate")
    mp.set_traffic(
        "m", {"policy": "shadow", "target": {"version": 1}, "shadow": {"version": 2}, "share": 1}
    )
    for _ in range(5):
        assert mp.predict("m", [{"x": 10}])["predictions"] == ["a"]


def test_bandit_learns_from_rewards_and_survives_a_restart(settings: Settings) -> None:
    settings = settings.model_copy(update={"release_check_seconds": 0.05})
    server = start_server(settings)
    mp = _two_versions(server)
    mp.set_traffic(
        "m",
        {
            "policy": "bandit",
            "algorithm": "thompson",
            "arms": [{"name": "a", "version": 1}, {"name": "b", "version": 2}],
        },
    )
    rng = random.Random(3)
    rate = {"a": 0.4, "b": 0.6}
    chosen: list[str] = []
    # 800 feedback events, fed back as they happen (the server re-reads them every 50 ms)
    for i in range(800):
        out = mp.predict("m", [{"x": i}])
        arm = out["predictions"][0]
        chosen.append(arm)
        mp.feedback(out["prediction_ids"][0], reward=float(rng.random() < rate[arm]))
        if i % 50 == 49:
            time.sleep(0.06)  # let the statistics catch up, as time would in production
    last = chosen[-200:]
    assert last.count("b") >= 0.8 * len(last), Counter(last)
    server.stop()
    again = start_server(settings)  # a new process state: statistics come from the store
    try:
        time.sleep(0.2)
        client = again.client()
        after = [client.predict("m", [{"x": 0}])["predictions"][0] for _ in range(100)]
        assert after.count("b") >= 80, Counter(after)
        report = client.experiment("m")
        assert report["metric"] == "mean_reward"
        assert [a["arm"] for a in report["arms"]] == ["a", "b"]
        assert report["arms"][1]["vs_control"]["test"] == "Welch's t-test"
    finally:
        again.stop()


@pytest.mark.parametrize("breakage", ["raises", "slow", "wrong"])
def test_a_broken_canary_is_rolled_back_and_callers_see_no_error(
    fast: RunningServer, breakage: str
) -> None:
    mp = fast.client()
    mp.push("m", Constant("yes"), schema=X_SCHEMA, alias="production")
    bad = {
        "raises": Constant("yes", fail_above=0.5),
        "slow": Constant("yes", sleep_ms=40),
        "wrong": Constant("no"),
    }[breakage]
    mp.push("m", bad, schema=X_SCHEMA, alias="candidate")
    guards: dict[str, Any] = {"min_requests": 10, "min_feedback": 10, "window_s": 60}
    if breakage == "slow":
        guards["max_p99_ms"] = 25
    if breakage == "wrong":
        guards["metric"] = "accuracy"
    mp.set_traffic(
        "m",
        {
            "policy": "canary",
            "champion": {"alias": "production"},
            "candidate": {"alias": "candidate"},
            "share": 0.5,
            "guards": guards,
        },
    )
    rolled_back_at = None
    for i in range(400):
        out = mp.predict("m", [{"x": 1.0}])  # never raises: the champion covers failures
        if breakage == "wrong":
            mp.feedback(out["prediction_ids"][0], label="yes")
        if mp.traffic("m")["traffic"]["policy"] == "single":
            rolled_back_at = i
            break
        time.sleep(0.005)
    assert rolled_back_at is not None, f"no rollback for a {breakage} candidate"
    event = next(e for e in mp.events("m") if e["kind"] == "canary_rollback")
    assert event["actor"] == "modelport"
    assert (
        event["detail"]["guard"]
        == {"raises": "error_rate", "slow": "p99_ms", "wrong": "accuracy"}[breakage]
    )
    assert event["detail"]["traffic"] == {"policy": "single", "target": {"alias": "production"}}
    # after the rollback every request goes to the champion
    assert {mp.predict("m", [{"x": 1.0}])["version"] for _ in range(20)} == {1}


def test_an_old_payload_reaches_a_renamed_schema_through_an_adapter(server: RunningServer) -> None:
    mp = server.client()
    old_schema = {
        "fields": [{"name": "postcode", "type": "string"}, {"name": "income", "type": "number"}]
    }
    new_schema = {
        "fields": [
            {"name": "zip_code", "type": "string"},
            {"name": "income", "type": "number"},
            {"name": "channel", "type": "category", "categories": ["web", "shop"]},
        ]
    }
    mp.push("loans", Doubler(), schema=old_schema, alias="production")
    legacy = server.client(server.key("legacy", "predict"))
    newer = server.client(server.key("newer", "predict"))
    old_row = {"postcode": "8001", "income": 10}
    assert legacy.predict("loans", [old_row])["predictions"] == [20.0]
    assert newer.predict("loans", [old_row])["predictions"] == [20.0]

    # Without an adapter, the compatibility report names both consumers; strict refuses.
    with pytest.raises(errors.Incompatible) as info:
        mp.push("loans", Doubler(), schema=new_schema, strict=True)
    assert {d["field"] for d in info.value.details} == {"consumer:legacy", "consumer:newer"}
    adapter = {
        "steps": [
            {"rename": {"from": "postcode", "to": "zip_code"}},
            {"default": {"field": "channel", "value": "web"}},
        ]
    }
    mp.pin("loans", "legacy", adapter=adapter)
    pushed = mp.push("loans", Doubler(), schema=new_schema, alias="production")
    report = {c["consumer"]: c for c in pushed["compatibility"]["consumers"]}
    assert report["legacy"]["rows_rejected"] == 0 and report["legacy"]["adapter"] is True
    assert report["newer"]["rows_rejected"] == 1
    assert any(r["field"] == "zip_code" for r in report["newer"]["reasons"])

    out = legacy.predict("loans", [old_row])  # the old payload, on version 2
    assert out["version"] == 2 and out["predictions"] == [20.0]
    record = mp.prediction(out["prediction_ids"][0])
    assert record["inputs"] == {"zip_code": "8001", "income": 10.0, "channel": "web"}
    assert record["raw_inputs"] == old_row
    with pytest.raises(errors.InvalidInput) as bad:
        newer.predict("loans", [old_row])
    assert {d["field"] for d in bad.value.details} >= {"zip_code", "postcode"}
    assert mp._dict("GET", "/v1/models/loans/versions/1/schema")["fields"][0]["name"] == "postcode"


def test_bad_policies_are_422_naming_the_field(server: RunningServer) -> None:
    _two_versions(server)
    http = server.http()
    cases = [
        ({"policy": "split", "arms": [{"alias": "nope"}, {"version": 1}]}, "arms[0].alias"),
        ({"policy": "split", "arms": [{"version": 9}, {"version": 1}]}, "arms[0].version"),
        (
            {"policy": "split", "arms": [{"version": 1, "weight": 0}, {"version": 2, "weight": 0}]},
            "arms",
        ),
        (
            {"policy": "split", "arms": [{"version": 1, "weight": -1}, {"version": 2}]},
            "arms[0].weight",
        ),
        (
            {"policy": "shadow", "target": {"version": 1}, "shadow": {"version": 2}, "share": 1.5},
            "share",
        ),
        (
            {
                "policy": "canary",
                "champion": {"version": 1},
                "candidate": {"version": 2},
                "share": -0.1,
            },
            "share",
        ),
        (
            {
                "policy": "canary",
                "champion": {"version": 1},
                "candidate": {"version": 2},
                "share": 0.1,
                "guards": {"max_error_rate": 2},
            },
            "guards.max_error_rate",
        ),
        (
            {"policy": "bandit", "arms": [{"version": 1}, {"version": 2}], "algorithm": "magic"},
            "algorithm",
        ),
        ({"policy": "round-robin"}, "policy"),
        ({"policy": "single", "target": {"alias": "production"}, "extra": 1}, "extra"),
    ]
    for body, field in cases:
        r = http.put("/v1/models/m/traffic", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in [d["field"] for d in r.json()["error"]["details"]], (body, r.json())
    reader = server.http(server.key("reader", "read", "predict"))
    r = reader.put("/v1/models/m/traffic", json={"policy": "single", "target": {"version": 1}})
    assert r.status_code == 403
    r = reader.put("/v1/models/m/consumers/reader", json={"pin": {"version": 1}})
    assert r.status_code == 403
    assert http.put("/v1/models/m/consumers/x", json={"pin": {"version": 7}}).status_code == 422
    assert http.delete("/v1/models/m/consumers/nobody").status_code == 404
    assert http.get("/v1/models/m/traffic").json()["revision"] == 0  # nothing was stored


def test_experiment_report_of_a_split_with_labels(server: RunningServer) -> None:
    mp = server.client()
    mp.push("m", Constant("yes"), schema=X_SCHEMA, alias="production")
    mp.push("m", Constant("no"), schema=X_SCHEMA, alias="candidate")
    mp.set_traffic(
        "m",
        {
            "policy": "split",
            "arms": [
                {"name": "champ", "alias": "production"},
                {"name": "chall", "alias": "candidate"},
            ],
        },
    )
    for i in range(120):
        out = mp.predict("m", [{"x": i}], unit_id=f"u{i}")
        mp.feedback(out["prediction_ids"][0], label="yes")  # champ always right, chall never
    report = mp.experiment("m", metric="accuracy")
    champ, chall = report["arms"]
    assert (champ["arm"], chall["arm"]) == ("champ", "chall")
    assert champ["value"] == 1.0 and chall["value"] == 0.0
    assert champ["requests"] + chall["requests"] == 120
    assert chall["vs_control"]["test"] == "two-proportion z-test (pooled)"
    assert chall["vs_control"]["significant"] is True
