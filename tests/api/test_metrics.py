"""``/metrics``: Prometheus figures move with the traffic and carry model, version, arm and
consumer; label sets stay bounded; a scrape needs a read key unless told otherwise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelport.settings import Settings
from tests.api.models import Constant, FailsOnNegative
from tests.conftest import RunningServer, make_key, start_server

X_SCHEMA = {"fields": [{"name": "x", "type": "number"}]}


def scrape(http: httpx.Client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed: sample name -> {sorted label pairs: value}."""
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(figures: dict[str, Any], name: str, **labels: str) -> float:
    """The sample of ``name`` whose labels include ``labels`` (summed over the rest)."""
    want = set(labels.items())
    return sum(v for k, v in figures.get(name, {}).items() if want <= set(k))


def commit_counts(http: httpx.Client) -> tuple[float, float]:
    """A server's ledger commits so far: (group commits, those made inline on the event
    loop's thread)."""
    figures = scrape(http)
    return (
        value(figures, "modelport_ledger_commit_seconds_count"),
        value(figures, "modelport_ledger_inline_commits_total"),
    )


def test_counters_move_with_requests_and_carry_version_and_consumer(
    server: RunningServer,
) -> None:
    mp = server.client()
    mp.push("m", FailsOnNegative(), schema=X_SCHEMA, alias="production")
    mp.push("m", Constant("c"), schema=X_SCHEMA)
    app = server.http(server.key("shop", "predict", "feedback"))
    reader = server.http(server.key("grafana", "read"))
    before = scrape(reader)
    assert value(before, "modelport_requests_total", model="m") == 0

    ids = []
    for _ in range(3):
        r = app.post("/v1/models/m/predict", json={"inputs": [{"x": 1}, {"x": 2}]})
        assert r.status_code == 200
        ids += r.json()["prediction_ids"]
    r = app.post("/v2/models/m/versions/2/infer", json=_oip([5.0]))
    assert r.status_code == 200, r.text
    assert app.post("/v1/models/m/predict", json={"inputs": [{"x": "a"}]}).status_code == 422
    assert app.post("/v1/models/nope/predict", json={"inputs": [{"x": 1}]}).status_code == 404
    fb = app.post("/v1/feedback", json={"feedback": [{"prediction_id": ids[0], "label": 2.0}]})
    assert fb.status_code == 200 and fb.json()["accepted"][0]["version"] == 1

    after = scrape(reader)
    ok = {"model": "m", "consumer": "shop", "code": "200"}
    assert value(after, "modelport_requests_total", version="1", **ok) == 3
    assert value(after, "modelport_requests_total", version="2", **ok) == 1
    assert value(after, "modelport_rows_total", model="m", version="1", consumer="shop") == 6
    assert value(after, "modelport_rows_total", model="m", version="2", consumer="shop") == 1
    assert value(after, "modelport_requests_total", model="m", version="1", code="422") == 1
    assert value(after, "modelport_requests_total", model="_unknown", code="404") == 1
    assert value(after, "modelport_requests_total", model="nope") == 0  # not a label value
    # the latency histogram counts every answered request of the version, and its sum is time
    assert value(after, "modelport_request_duration_seconds_count", model="m", version="1") == 3
    assert 0 < value(after, "modelport_request_duration_seconds_sum", model="m", version="1") < 60
    # batches: all rows went through model calls; every request waited in the queue once
    assert value(after, "modelport_batch_rows_sum", model="m", version="1") == 6
    assert value(after, "modelport_batch_queue_wait_seconds_count", model="m", version="1") == 3
    assert value(after, "modelport_batch_predict_seconds_count", model="m", version="1") >= 1
    assert value(after, "modelport_feedback_total", model="m", version="1", kind="label") == 1
    # every acknowledged request went through a group commit of the ledger writer
    assert value(after, "modelport_ledger_commit_seconds_count") >= 5
    assert value(after, "modelport_ledger_commit_jobs_sum") >= 5
    assert value(after, "modelport_inflight_requests") == 0
    http_ok = {"method": "POST", "route": "/v1/feedback", "code": "200"}
    assert value(after, "modelport_http_requests_total", **http_ok) == 1
    assert value(after, "modelport_build_info") == 1


def test_arms_of_a_split_are_labels(server: RunningServer) -> None:
    mp = server.client()
    mp.push("m", Constant("a"), schema=X_SCHEMA, alias="production")
    mp.push("m", Constant("b"), schema=X_SCHEMA, alias="candidate")
    mp.set_traffic(
        "m",
        {
            "policy": "split",
            "arms": [
                {"name": "champ", "alias": "production", "weight": 50},
                {"name": "chall", "alias": "candidate", "weight": 50},
            ],
        },
    )
    http = server.http()
    served = {"a": 0, "b": 0}
    for unit in range(40):
        r = http.post(
            "/v1/models/m/predict", json={"inputs": [{"x": 1}]}, headers={"X-Unit-ID": str(unit)}
        )
        served[r.json()["predictions"][0]] += 1
    figures = scrape(http)
    name = "modelport_requests_total"
    assert value(figures, name, model="m", version="1", arm="champ") == served["a"]
    assert value(figures, name, model="m", version="2", arm="chall") == served["b"]
    assert served["a"] > 0 and served["b"] > 0


def test_shadow_outcomes_are_counted(server: RunningServer) -> None:
    mp = server.client()
    mp.push("m", Constant("a"), schema=X_SCHEMA, alias="production")
    mp.push("m", Constant("b", fail_above=5), schema=X_SCHEMA, alias="candidate")
    mp.set_traffic(
        "m", {"policy": "shadow", "target": {"version": 1}, "shadow": {"version": 2}, "share": 1}
    )
    for x in (1, 10, 10):
        assert mp.predict("m", [{"x": x}])["predictions"] == ["a"]
    http = server.http()
    deadline = time.monotonic() + 10
    while True:
        figures = scrape(http)
        name = "modelport_shadow_requests_total"
        ok = value(figures, name, model="m", version="2", outcome="ok")
        failed = value(figures, name, model="m", version="2", outcome="failed")
        if (ok, failed) == (1, 2) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (ok, failed) == (1, 2)


def test_label_sets_are_bounded(settings: Settings) -> None:
    running = start_server(settings.model_copy(update={"metrics_max_series": 10}))
    try:
        running.client().push("m", FailsOnNegative(), schema=X_SCHEMA, alias="production")
        for i in range(15):
            http = running.http(running.key(f"app{i}", "predict"))
            assert http.post("/v1/models/m/predict", json={"inputs": [{"x": 1}]}).is_success
        figures = scrape(running.http())
        series = figures["modelport_requests_total"]
        assert len(series) <= 11  # ten label sets and the overflow
        assert value(figures, "modelport_requests_total", consumer="_other") >= 5
        assert sum(series.values()) == 15  # nothing is lost, only folded
        dropped = "modelport_metrics_series_dropped_total"
        assert value(figures, dropped, metric="modelport_requests") >= 5
    finally:
        running.stop()


def test_a_scrape_needs_a_read_key_unless_metrics_are_public(
    server: RunningServer, settings: Settings
) -> None:
    assert server.http("").get("/metrics").status_code == 401
    assert server.http(server.key("app", "predict")).get("/metrics").status_code == 403
    assert server.http(server.key("prom", "read")).get("/metrics").status_code == 200
    public = start_server(settings.model_copy(update={"metrics_public": True}))
    try:
        assert public.http("").get("/metrics").status_code == 200
    finally:
        public.stop()


def test_workers_answer_a_scrape_for_all_of_them(
    tmp_path: Path, store_url: str, settings: Settings
) -> None:
    from sklearn.linear_model import LogisticRegression

    from modelport import Client
    from tests.test_workers import ROW, _fresh, predict_until_both_answer, two_workers

    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": store_url}), "ops", ["admin"])
    with two_workers(home, store_url) as url:
        with Client(url, key) as mp:
            fitted = LogisticRegression().fit([[0, 0, 0, 0], [1, 1, 1, 1]], ["a", "b"])
            schema = {"fields": [{"name": n, "type": "number"} for n in ROW]}
            mp.push("iris", fitted, schema=schema, alias="production")
        time.sleep(1.0)  # both workers see the push
        made = sum(predict_until_both_answer(url, key).values())
        for _ in range(4):  # whichever worker answers the scrape counts all of them
            with _fresh(url, key) as http:
                figures = scrape(http)
            assert value(figures, "modelport_requests_total", model="iris", code="200") == made
    assert not list((home / "run").glob("metrics-*")), "the figures' directory is removed"


def _oip(values: list[float]) -> dict[str, Any]:
    return {
        "inputs": [{"name": "x", "shape": [len(values), 1], "datatype": "FP64", "data": values}]
    }
