"""Monitoring on a real server: live performance from feedback, drift against references, the
background drift check with its events and webhook (the transport injected), bad parameters."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from modelport.service.core import Service
from modelport.settings import Settings
from modelport.store import Store, rollups
from modelport.store.tables import feedback, predictions
from tests.api.test_learning import _wait
from tests.conftest import RunningServer, start_server

DAY = 86400.0


@pytest.fixture(scope="module")
def yes_no() -> Any:
    """A logistic regression on one number: 'yes' above 0, 'no' below."""
    from sklearn.linear_model import LogisticRegression

    x = np.linspace(-5, 5, 101)
    frame = pd.DataFrame({"x": x})
    return LogisticRegression().fit(frame, np.where(x > 0, "yes", "no"))


@pytest.fixture(scope="module")
def doubler() -> Any:
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    return LinearRegression().fit(frame, [0.0, 2.0, 4.0, 6.0])


def _frame(
    n: int, seed: int, shift: float = 0.0, colors: tuple[float, ...] = (0.5, 0.3, 0.2)
) -> Any:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "color": rng.choice(["red", "green", "blue"], n, p=list(colors)),
        }
    )
    df["y"] = np.where(df["x"] + (df["color"] == "red") > 0.5, "yes", "no")
    return df


@pytest.fixture(scope="module")
def colored() -> tuple[Any, Any]:
    """A pipeline over a number and a category, with its training data."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = _frame(600, seed=1)
    model = make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["color"])], remainder="passthrough"),
        LogisticRegression(),
    )
    return model.fit(train[["x", "color"]], train["y"]), train


def _age(settings: Settings, ids: list[str], seconds: float) -> None:
    """Move the ledger rows of these predictions back in time (old traffic)."""
    store = Store(settings.store_url)
    try:
        with store.transaction() as conn:
            conn.execute(
                predictions.update()
                .where(predictions.c.id.in_(ids))
                .values(ts=predictions.c.ts - seconds)
            )
            rollups.rebuild(conn)  # the roll-ups follow rows moved back in time
    finally:
        store.close()


def _delays(settings: Settings, ids: list[str]) -> list[float]:
    """Newest label time minus prediction time, per labelled prediction, from the store."""
    store = Store(settings.store_url)
    out = []
    try:
        with store.read() as conn:
            for pid in ids:
                row = conn.execute(
                    sa.select(feedback.c.ts, predictions.c.ts.label("pts"))
                    .join(predictions, predictions.c.id == feedback.c.ledger_id)
                    .where(feedback.c.prediction_id == pid)
                    .order_by(feedback.c.id.desc())
                    .limit(1)
                ).first()
                if row is not None:
                    out.append(row.ts - row.pts)
    finally:
        store.close()
    return out


def test_classification_performance_matches_a_hand_computation(
    server: RunningServer, yes_no: Any
) -> None:
    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    xs = [-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0]
    first = admin.predict("yn", [{"x": x} for x in xs[:5]])  # two requests: 8 rows
    second = admin.predict("yn", [{"x": x} for x in xs[5:]])
    ids = first["prediction_ids"] + second["prediction_ids"]
    probs = first["probabilities"] + second["probabilities"]
    assert first["predictions"] + second["predictions"] == ["no"] * 4 + ["yes"] * 4
    labels = ["no", "yes", "no", "no", "yes", "no"]  # rows 0..5 labelled; 6 and 7 not
    admin.feedback(ids[3], label="yes")  # superseded by the next label of the same row
    admin.feedback([{"prediction_id": p, "label": y} for p, y in zip(ids, labels, strict=False)])
    # An old request (two days back) outside a 24 h window, labelled wrong on purpose.
    old = admin.predict("yn", [{"x": -4.0}])["prediction_ids"]
    admin.feedback(old[0], label="yes")
    _age(server.settings, old, 2 * DAY)

    out = admin.performance("yn", window="24h", buckets=4)
    assert out["task"] == "classification" and out["truncated"] is False
    assert out["window"]["seconds"] == DAY
    [v1] = out["versions"]
    assert (v1["version"], v1["predictions"], v1["labelled"]) == (1, 8, 6)
    assert v1["coverage"] == pytest.approx(6 / 8)
    m = v1["metrics"]
    # pairs (prediction, label): nn ny nn nn yy yn -> 4 of 6 right
    assert m["accuracy"] == pytest.approx(4 / 6)
    # "no": precision 3/4 (one 'no' was 'yes'), recall 3/4; "yes": 1/2 and 1/2
    assert m["precision"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["recall"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["f1"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["positive_class"] == "yes"
    assert (m["precision_positive"], m["recall_positive"]) == (
        pytest.approx(0.5),
        pytest.approx(0.5),
    )
    by_hand = -sum(math.log(probs[i][y]) for i, y in enumerate(labels)) / 6
    assert m["log_loss"] == pytest.approx(by_hand)
    # AUC: 'yes' labels at x=-2 and 0.5 against 'no' at -3, -1, -0.5, 1: 1 + 3 of 8 pairs
    assert m["roc_auc"] == pytest.approx(4 / 8)
    delays = _delays(server.settings, ids[:6])
    assert v1["label_delay_seconds"]["median"] == pytest.approx(float(np.median(delays)))
    assert v1["label_delay_seconds"]["p90"] == pytest.approx(float(np.percentile(delays, 90)))
    assert [b["labelled"] for b in v1["series"]] == [0, 0, 0, 6]
    assert v1["series"][-1]["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert v1["series"][0]["metrics"] == {}

    wide = admin.performance("yn", window="7d")["versions"][0]
    assert (wide["predictions"], wide["labelled"]) == (9, 7)
    assert wide["metrics"]["accuracy"] == pytest.approx(4 / 7)


def test_version_and_consumer_filters(server: RunningServer, yes_no: Any) -> None:
    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    admin.push("yn", yes_no)
    app = server.client(server.key("app", "predict"))
    v1 = admin.predict("yn", [{"x": -1.0}, {"x": 1.0}], version=1)["prediction_ids"]
    v2 = app.predict("yn", [{"x": -1.0}, {"x": 1.0}, {"x": 2.0}], version=2)["prediction_ids"]
    admin.feedback([{"prediction_id": p, "label": "yes"} for p in v1 + v2])
    both = admin.performance("yn")
    assert [(v["version"], v["predictions"], v["labelled"]) for v in both["versions"]] == [
        (1, 2, 2),
        (2, 3, 3),
    ]
    only2 = admin.performance("yn", version=2)
    assert [v["version"] for v in only2["versions"]] == [2]
    assert only2["versions"][0]["metrics"]["accuracy"] == pytest.approx(2 / 3)
    apps = admin.performance("yn", consumer="app")
    assert [(v["version"], v["labelled"]) for v in apps["versions"]] == [(2, 3)]
    mine = admin.performance("yn", consumer="test-admin")
    assert [(v["version"], v["labelled"]) for v in mine["versions"]] == [(1, 2)]


def test_regression_performance_matches_a_hand_computation(
    server: RunningServer, doubler: Any
) -> None:
    admin = server.client()
    admin.push("double", doubler, alias="production", task="regression")
    out = admin.predict("double", [{"x": x} for x in (1.0, 2.0, 3.0, 4.0)])
    assert out["predictions"] == pytest.approx([2.0, 4.0, 6.0, 8.0])
    labels = [3.0, 4.0, 5.0, 10.0]  # errors 1, 0, -1, 2
    admin.feedback(
        [
            {"prediction_id": p, "label": y}
            for p, y in zip(out["prediction_ids"], labels, strict=True)
        ]
    )
    m = admin.performance("double")["versions"][0]["metrics"]
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(6 / 4))
    # R2 = 1 - SSres / SStot: 6 / ((3-5.5)^2 + (4-5.5)^2 + (5-5.5)^2 + (10-5.5)^2) = 6 / 29
    assert m["r2"] == pytest.approx(1 - 6 / 29)
    assert set(m) == {"mae", "rmse", "r2"}


def test_a_shifted_version_drifts_and_an_unshifted_one_does_not(
    server: RunningServer, colored: tuple[Any, Any]
) -> None:
    model, train = colored
    admin = server.client()
    pushed = admin.push("shop", model, train_data=train, target="y", alias="production")
    assert [f["name"] for f in pushed["schema"]["fields"]] == ["x", "color"]
    admin.push("shop", model, train_data=train, target="y")
    same = _frame(400, seed=2)[["x", "color"]]
    moved = _frame(400, seed=3, shift=1.5, colors=(0.1, 0.1, 0.8))[["x", "color"]]
    admin.predict("shop", same, version=1)
    admin.predict("shop", moved, version=2)

    out = admin.drift("shop", window="1h")
    assert out["thresholds"] == {
        "psi": 0.2,
        "ks_pvalue": 0.01,
        "chi2_pvalue": 0.01,
        "min_rows": 100,
    }
    v1, v2 = out["versions"]
    assert (v1["version"], v1["rows"], v1["reference"], v1["reason"]) == (1, 400, True, None)
    assert v1["reference_rows"] == 600
    assert v1["drifted"] is False
    assert {f["field"]: f["kind"] for f in v1["fields"]} == {"x": "numeric", "color": "categorical"}
    assert not any(f["drifted"] for f in v1["fields"]) and not v1["predictions"]["drifted"]
    assert v2["drifted"] is True
    fields = {f["field"]: f for f in v2["fields"]}
    assert fields["x"]["drifted"] and fields["x"]["psi"] > 0.2 and fields["x"]["ks_pvalue"] < 0.01
    assert fields["color"]["drifted"] and fields["color"]["chi2_pvalue"] < 0.01
    assert v2["predictions"]["kind"] == "categorical" and v2["predictions"]["drifted"]
    assert admin.drift("shop", version=1)["versions"][0]["version"] == 1

    # Too few rows for a verdict: figures, but no judgement.
    admin.set_monitoring("shop", {"thresholds": {"min_rows": 1000}})
    few = admin.drift("shop")["versions"][1]
    assert few["drifted"] is False and "1000" in few["reason"] and few["fields"]


def test_a_version_without_reference_says_why_and_can_take_one_from_traffic(
    server: RunningServer, yes_no: Any
) -> None:
    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    start = time.time() - 1
    admin.predict("yn", [{"x": float(x)} for x in np.linspace(-3, 3, 200)])
    [entry] = admin.drift("yn")["versions"]
    assert entry["reference"] is False and entry["reference_rows"] is None
    assert "no reference" in entry["reason"] and entry["fields"] == [] and not entry["drifted"]

    set_ = admin.set_reference("yn", 1, since=start)
    assert (set_["source"], set_["rows"], set_["sample_rows"]) == ("traffic", 200, 200)
    [entry] = admin.drift("yn")["versions"]
    assert entry["reference"] is True and entry["reference_rows"] == 200
    assert entry["drifted"] is False and entry["fields"][0]["psi"] == pytest.approx(0.0, abs=1e-9)
    assert "reference_set" in [e["kind"] for e in admin.events("yn")]


def test_monitoring_settings_are_stored_audited_and_checked(
    server: RunningServer, yes_no: Any
) -> None:
    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    assert admin.monitoring("yn")["monitoring"] is None
    doc = {"thresholds": {"psi": 0.3}, "window": "2h", "webhook": "https://hooks.example.com/a"}
    assert admin.set_monitoring("yn", doc)["monitoring"] == doc
    got = admin.monitoring("yn")
    assert got["thresholds"]["psi"] == 0.3 and got["thresholds"]["min_rows"] == 100
    assert got["window_seconds"] == 7200
    assert admin.drift("yn")["window"]["seconds"] == 7200
    assert admin.events("yn")[0]["kind"] == "monitoring_set"
    assert admin.set_monitoring("yn", None)["monitoring"] is None


@pytest.mark.parametrize(
    ("method", "path", "sent", "field"),
    [
        ("GET", "performance", {"params": {"window": "soon"}}, "window"),
        ("GET", "performance", {"params": {"window": "-5m"}}, "window"),
        ("GET", "performance", {"params": {"buckets": 0}}, "buckets"),
        ("GET", "performance", {"params": {"version": 0}}, "version"),
        ("GET", "drift", {"params": {"window": "0"}}, "window"),
        ("GET", "drift", {"params": {"version": "x"}}, "version"),
        (
            "PUT",
            "monitoring",
            {"json": {"monitoring": {"thresholds": {"psi": "high"}}}},
            "monitoring.thresholds.psi",
        ),
        (
            "PUT",
            "monitoring",
            {"json": {"monitoring": {"thresholds": {"ks_pvalue": 2}}}},
            "monitoring.thresholds.ks_pvalue",
        ),
        (
            "PUT",
            "monitoring",
            {"json": {"monitoring": {"webhook": "ftp://x"}}},
            "monitoring.webhook",
        ),
        ("PUT", "monitoring", {"json": {"monitoring": {"window": "later"}}}, "monitoring.window"),
        ("PUT", "monitoring", {"json": {"monitoring": {"colour": 1}}}, "monitoring.colour"),
        ("PUT", "versions/1/reference", {"json": {"since": "yesterday"}}, "since"),
        ("PUT", "versions/1/reference", {"json": {"since": 10, "until": 5}}, "until"),
    ],
)
def test_bad_parameters_and_bodies_are_422_naming_the_field(
    server: RunningServer,
    yes_no: Any,
    method: str,
    path: str,
    sent: dict[str, Any],
    field: str,
) -> None:
    server.client().push("yn", yes_no, alias="production")
    r = server.http().request(method, f"/v1/models/yn/{path}", **sent)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["field"] == field


def test_the_background_check_records_drift_and_calls_the_webhook(
    settings: Settings, colored: tuple[Any, Any]
) -> None:
    calls: list[httpx.Request] = []

    def hook(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500 if request.url.path == "/broken" else 204)

    settings = settings.model_copy(update={"drift_check_seconds": 0.2})
    running = start_server(settings, Service(settings, webhook_transport=httpx.MockTransport(hook)))
    try:
        model, train = colored
        admin = running.client()
        for name in ("shop", "other"):
            admin.push(name, model, train_data=train, target="y", alias="production")
            admin.push(name, model, train_data=train, target="y")
        admin.set_monitoring("shop", {"webhook": "http://hooks.test/drift"})
        admin.set_monitoring("other", {"webhook": "http://hooks.test/broken"})
        for name in ("shop", "other"):
            admin.predict(name, _frame(300, seed=2)[["x", "color"]], version=1)
            admin.predict(
                name,
                _frame(300, seed=3, shift=1.5, colors=(0.1, 0.1, 0.8))[["x", "color"]],
                version=2,
            )

        events = _wait(
            lambda: [e for e in admin.events("shop") if e["kind"] == "drift"], what="a drift event"
        )
        [event] = events  # one change, one event (version 1 did not drift)
        assert event["detail"]["version"] == 2 and "x" in event["detail"]["drifted_fields"]
        sent = _wait(lambda: [c for c in calls if c.url.path == "/drift"], what="the webhook")
        payload = json.loads(sent[0].content)
        assert (payload["event"], payload["model"], payload["version"]) == ("drift", "shop", 2)
        assert set(payload["drifted_fields"]) >= {"x", "color"}
        assert str(sent[0].url) == "http://hooks.test/drift"

        failed = _wait(
            lambda: [e for e in admin.events("other") if e["kind"] == "webhook_failed"],
            what="a recorded webhook failure",
        )
        assert failed[0]["detail"]["event"] == "drift" and "500" in failed[0]["detail"]["error"]
        # The loop goes on: later rounds find no change and record nothing more.
        time.sleep(1.0)
        assert [e["kind"] for e in admin.events("shop")].count("drift") == 1
        assert len([c for c in calls if c.url.path == "/drift"]) == 1

        # Back to normal: traffic like the reference clears the drift.
        admin.set_monitoring("shop", {"webhook": "http://hooks.test/drift", "window": "1h"})
        store = Store(settings.store_url)
        try:
            with store.transaction() as conn:
                conn.execute(
                    predictions.update()
                    .where(predictions.c.model == "shop", predictions.c.version == 2)
                    .values(ts=predictions.c.ts - 2 * 3600)
                )
                rollups.rebuild(conn)
        finally:
            store.close()
        admin.predict("shop", _frame(300, seed=4)[["x", "color"]], version=2)
        _wait(
            lambda: [e for e in admin.events("shop") if e["kind"] == "drift_cleared"],
            what="a drift_cleared event",
        )
        cleared = _wait(
            lambda: [c for c in calls if json.loads(c.content)["event"] == "drift_cleared"],
            what="the drift_cleared webhook",
        )
        assert json.loads(cleared[0].content)["version"] == 2
    finally:
        running.stop()


def test_webhook_urls_are_whole_for_admins_only(
    settings: Settings, colored: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A webhook URL often holds its secret: basic auth, or a token path (Slack's).
    url = "http://hookuser:hookpass@hooks.test/services/T000/B000/SECRET?token=QUERYSECRET"
    secrets = ("hookuser", "hookpass", "T000", "B000", "SECRET", "QUERYSECRET")
    masked = "http://***@hooks.test/***?***"
    calls: list[httpx.Request] = []

    def hook(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)  # its error names the URL it was sent to

    settings = settings.model_copy(update={"drift_check_seconds": 0.2})
    running = start_server(settings, Service(settings, webhook_transport=httpx.MockTransport(hook)))
    caplog.set_level("DEBUG", logger="modelport")
    try:
        model, train = colored
        admin = running.client()
        reader = running.client(running.key("analyst", "read"))
        admin.push("shop", model, train_data=train, target="y", alias="production")
        assert admin.set_monitoring("shop", {"webhook": url})["monitoring"]["webhook"] == url
        assert admin.monitoring("shop")["monitoring"]["webhook"] == url
        assert reader.monitoring("shop")["monitoring"]["webhook"] == masked

        admin.predict(
            "shop", _frame(300, seed=3, shift=1.5, colors=(0.1, 0.1, 0.8))[["x", "color"]]
        )
        failed = _wait(
            lambda: [e for e in admin.events("shop") if e["kind"] == "webhook_failed"],
            what="a recorded webhook failure",
        )
        assert str(calls[0].url) == url  # sent whole, of course
        assert failed[0]["detail"]["url"] == masked and "500" in failed[0]["detail"]["error"]
        for who in (admin, reader):
            events = json.dumps(who.events("shop"))
            assert "monitoring_set" in events and "webhook_failed" in events
            assert masked in events and not any(s in events for s in secrets), events
        said = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("modelport"))
        assert "webhook" in said and masked in said, said
        assert not any(s in said for s in secrets), said
    finally:
        running.stop()


def _references(settings: Settings, name: str) -> dict[int, Any]:
    from modelport.store.tables import models, versions

    store = Store(settings.store_url)
    try:
        with store.read() as conn:
            rows = conn.execute(
                sa.select(versions.c.version, versions.c.reference)
                .join(models, models.c.id == versions.c.model_id)
                .where(models.c.name == name)
            ).all()
    finally:
        store.close()
    return {r.version: r.reference for r in rows}


def test_retrained_and_online_versions_get_their_reference_at_training_time(
    settings: Settings,
) -> None:
    quick = {"learn_poll_seconds": 0.05, "job_poll_seconds": 0.1}
    running = start_server(settings.model_copy(update=quick))
    try:
        mp = running.client()
        schema = {"fields": [{"name": "x", "type": "number"}]}
        rng = np.random.default_rng(0)
        rows = [{"x": float(x), "y": float(2 * x + 1)} for x in rng.uniform(-2, 2, 300)]
        mp.create_from_algorithm("batch", "linear_regression", schema=schema, target="y")
        mp.observe("batch", rows)
        version = mp.wait_job(mp.retrain("batch")["id"])["result"]["version"]
        ref = _references(running.settings, "batch")[version]
        assert (ref["source"], ref["rows"], ref["fields"]) == ("dataset", 300, ["x"])
        assert len(ref["sample"]) == len(ref["predictions"]) == 300
        x0 = ref["sample"][0][0]
        assert ref["predictions"][0] == pytest.approx(2 * x0 + 1, abs=1e-6)
        mp.promote("batch", version)
        mp.predict("batch", [{"x": float(x)} for x in rng.uniform(-2, 2, 150)])
        [entry] = mp.drift("batch")["versions"]
        assert entry["reference"] and not entry["drifted"]
        assert entry["predictions"]["kind"] == "numeric"

        mp.create_from_algorithm(
            "stream",
            "online_linear_regression",
            schema=schema,
            target="y",
            online={"min_observations": 20, "snapshot_every": 100, "snapshot_seconds": 60},
        )
        mp.observe("stream", rows)
        refs = _wait(
            lambda: {v: r for v, r in _references(running.settings, "stream").items() if r},
            what="an online snapshot",
        )
        first = refs[min(refs)]
        assert first["source"] == "observations" and first["fields"] == ["x"]
        assert 100 <= first["rows"] <= 300 and len(first["sample"]) == first["rows"]
        assert len(first["predictions"]) == len(first["sample"])
    finally:
        running.stop()


def test_the_commands_print_performance_drift_and_settings(
    server: RunningServer, yes_no: Any, tmp_path: Any
) -> None:
    from tests.procs import cli_env, run_cli

    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    out = admin.predict("yn", [{"x": -1.0}, {"x": 1.0}])
    admin.feedback([{"prediction_id": p, "label": "no"} for p in out["prediction_ids"]])
    env = cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key)

    table = run_cli(["performance", "yn", "--window", "2h"], env=env)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[1:3]
    assert header.split()[:5] == ["VERSION", "PREDICTIONS", "LABELLED", "COVERAGE", "DELAY_P50_S"]
    assert row.split()[:4] == ["1", "2", "2", "1"] and row.split()[5] == "0.5"  # accuracy
    raw = run_cli(["performance", "yn", "--json", "--version", "1"], env=env)
    assert json.loads(raw.stdout)["versions"][0]["metrics"]["accuracy"] == 0.5

    drift_out = run_cli(["drift", "yn"], env=env)
    assert drift_out.returncode == 0 and "no reference" in drift_out.stdout

    settings_file = tmp_path / "monitoring.json"
    settings_file.write_text(json.dumps({"thresholds": {"min_rows": 5}}))
    set_ = run_cli(["monitoring", "yn", "--set", f"@{settings_file}"], env=env)
    assert json.loads(set_.stdout)["monitoring"] == {"thresholds": {"min_rows": 5}}
    shown = json.loads(run_cli(["monitoring", "yn"], env=env).stdout)
    assert shown["thresholds"]["min_rows"] == 5
    removed = run_cli(["monitoring", "yn", "--remove"], env=env)
    assert json.loads(removed.stdout)["monitoring"] is None
    bad = run_cli(["performance", "yn", "--window", "soon"], env=env)
    assert bad.returncode != 0 and "window" in bad.stderr
