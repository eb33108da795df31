"""Retention and the ledger archive: rows leave the ledger table for Parquet files, and every
day-two question about them is still answered; the writer's per-minute roll-ups.

Run against the store the suite is configured for (SQLite, or PostgreSQL with
MODELPORT_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from modelport.settings import Settings, load_settings
from modelport.store import Store, rollups
from modelport.store.tables import ledger_archive, ledger_rollups, observations, predictions
from tests.api.test_learning import XY_SCHEMA, _rows, _wait
from tests.conftest import RunningServer, fresh_store_url, make_key, start_server
from tests.procs import ServerProcess, cli_env, run_cli

#: A retention of one second, in days.
SECOND = 1 / 86400


@pytest.fixture(scope="module")
def yes_no() -> Any:
    """A logistic regression on one number: 'yes' above 0, 'no' below."""
    from sklearn.linear_model import LogisticRegression

    x = np.linspace(-5, 5, 101)
    return LogisticRegression().fit(pd.DataFrame({"x": x}), np.where(x > 0, "yes", "no"))


@pytest.fixture
def archiving(settings: Settings) -> Any:
    """A server that archives every 0.2 s and runs jobs promptly."""
    quick = {
        "ledger_archive_seconds": 0.2,
        "ledger_archive_batch": 10,  # several batches, several files
        "job_poll_seconds": 0.1,
        "learn_poll_seconds": 0.05,
    }
    running = start_server(settings.model_copy(update=quick))
    yield running
    running.stop()


def _scalar(settings: Settings, query: Any) -> Any:
    st = Store(settings.store_url)
    try:
        with st.read() as conn:
            return conn.execute(query).scalar()
    finally:
        st.close()


def _hot(settings: Settings, model: str) -> int:
    return int(
        _scalar(
            settings,
            sa.select(sa.func.count()).select_from(predictions).where(predictions.c.model == model),
        )
    )


def _retain(server: RunningServer, model: str, days: float | None) -> None:
    out = server.http().put(f"/v1/models/{model}/serving", json={"ledger_retention_days": days})
    assert out.status_code == 200, out.text


def test_rollups_count_what_the_writer_committed(server: RunningServer, yes_no: Any) -> None:
    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    admin.push("yn", yes_no)
    other = server.client(server.key("shop", "predict"))
    for i in range(6):
        admin.predict("yn", [{"x": float(i)}] * (1 + i % 3))
        other.predict("yn", [{"x": -1.0}], version=2)
    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            found = sorted(
                (r.version, r.consumer, r.segment, bool(r.shadow), int(r.requests), int(r.rows))
                for r in conn.execute(
                    sa.select(
                        ledger_rollups.c.version,
                        ledger_rollups.c.consumer,
                        ledger_rollups.c.segment,
                        ledger_rollups.c.shadow,
                        sa.func.sum(ledger_rollups.c.requests).label("requests"),
                        sa.func.sum(ledger_rollups.c.rows).label("rows"),
                    ).group_by(
                        ledger_rollups.c.version,
                        ledger_rollups.c.consumer,
                        ledger_rollups.c.segment,
                        ledger_rollups.c.shadow,
                    )
                )
            )
            lat = conn.execute(sa.select(sa.func.sum(ledger_rollups.c.latency_sum))).scalar_one()
            exact = conn.execute(sa.select(sa.func.sum(predictions.c.latency_ms))).scalar_one()
    finally:
        st.close()
    assert found == [(1, "test-admin", "", False, 6, 12), (2, "shop", "", False, 6, 6)]
    assert lat == pytest.approx(exact)


def test_a_retention_setting_is_checked_and_named(server: RunningServer, yes_no: Any) -> None:
    server.client().push("yn", yes_no, alias="production")
    http = server.http()
    for bad in (-1, "30d", True, 40_000):
        out = http.put("/v1/models/yn/serving", json={"ledger_retention_days": bad})
        assert out.status_code == 422, out.text
        assert out.json()["error"]["details"][0]["field"] == "ledger_retention_days"
    assert http.put("/v1/models/yn/serving", json={"ledger_retention_days": 30}).status_code == 200
    assert http.get("/v1/models/yn/serving").json()["serving"] == {"ledger_retention_days": 30.0}
    with pytest.raises(Exception, match="ledger_retention_days"):
        load_settings({"ledger_retention_days": -2})


def test_archived_predictions_answer_every_day_two_question(
    archiving: RunningServer, yes_no: Any
) -> None:
    settings = archiving.settings
    admin = archiving.client()
    admin.push("yn", yes_no, alias="production")
    xs = [-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0]
    ids: list[str] = []
    for x in xs:  # one request each: 8 ledger rows, archived in batches of 10
        ids += admin.predict("yn", [{"x": x}, {"x": x}])["prediction_ids"]
    labels = ["no", "yes", "no", "no", "yes", "no", "yes", "yes"]
    admin.feedback([{"prediction_id": ids[2 * i], "label": y} for i, y in enumerate(labels[:4])])
    before = admin.prediction(ids[3])
    timeline = archiving.http().get("/v1/models/yn/timeline", params={"window": "1h"}).json()

    _retain(archiving, "yn", SECOND)
    _wait(lambda: _hot(settings, "yn") == 0, what="the ledger table to be archived")
    assert _scalar(settings, sa.select(sa.func.count()).select_from(ledger_archive)) >= 1

    # A lookup by id, with its feedback, as before.
    assert admin.prediction(ids[3]) == before
    got = admin.prediction(ids[0])
    assert got["feedback"][0]["label"] == "no" and got["inputs"] == {"x": -3.0}
    # Feedback still lands on an archived prediction.
    admin.feedback(
        [{"prediction_id": ids[2 * i], "label": y} for i, y in enumerate(labels) if i >= 4]
    )
    assert admin.prediction(ids[14])["feedback"][0]["label"] == "yes"
    assert archiving.http().get("/v1/predictions/" + ids[0][:-4] + "ffff").status_code == 404
    # Performance: 16 predictions, 8 labelled; the model says no/no/no/no/yes/yes/yes/yes.
    perf = admin.performance("yn", window="1h")["versions"][0]
    assert (perf["predictions"], perf["labelled"]) == (16, 8)
    assert perf["metrics"]["accuracy"] == pytest.approx(6 / 8)
    # The timeline still counts the archived traffic (from the roll-ups).
    again = archiving.http().get("/v1/models/yn/timeline", params={"window": "1h"}).json()
    assert [v["requests"] for v in again["versions"]] == [8]
    assert [v["rows"] for v in again["versions"]] == [v["rows"] for v in timeline["versions"]]
    # Replay reads the archived requests.
    admin.push("yn", yes_no)
    report = admin.wait_job(admin.replay("yn", 2)["id"])["result"]
    assert (report["requests"], report["rows"], report["scored"]) == (8, 16, 16)
    assert report["agreement"] == 1.0 and report["feedback"]["rows"] == 8
    # The operator's view and check.
    env = cli_env(MODELPORT_STORE=settings.store_url, MODELPORT_HOME=str(settings.home))
    status = run_cli(["ledger", "status", "--json"], env=env)
    assert status.returncode == 0, status.stderr
    [row] = [m for m in json.loads(status.stdout)["models"] if m["model"] == "yn"]
    assert (row["hot_requests"], row["archived_predictions"], row["archive_partitions"]) == (
        0,
        16,
        1,
    )
    verified = run_cli(["ledger", "verify"], env=env)
    assert verified.returncode == 0 and "agree with the registry" in verified.stdout


def test_labels_of_archived_predictions_still_train_a_model(
    archiving: RunningServer,
) -> None:
    settings = archiving.settings
    mp = archiving.client()
    mp.create_from_algorithm(
        "fb", "logistic_regression", schema=XY_SCHEMA, target="y", classes=["no", "yes"]
    )
    mp.observe("fb", _rows(200, 0))
    job = mp.wait_job(mp.retrain("fb")["id"])
    mp.promote("fb", job["result"]["version"])
    out = mp.predict("fb", [{"a": 1.0, "b": 1.0, "c": "p"}, {"a": -2.0, "b": 0.5, "c": "q"}])
    _retain(archiving, "fb", SECOND)
    _wait(lambda: _hot(settings, "fb") == 0, what="the ledger table to be archived")
    mp.feedback([{"prediction_id": p, "label": "no"} for p in out["prediction_ids"]])
    learned = _scalar(
        settings,
        sa.select(sa.func.count())
        .select_from(observations)
        .where(observations.c.source == "feedback"),
    )
    assert learned == 2
    job = mp.wait_job(mp.retrain("fb")["id"])
    assert job["status"] == "succeeded", job


def test_the_cli_archives_now_and_verify_finds_a_tampered_file(tmp_path: Path, yes_no: Any) -> None:
    with fresh_store_url(tmp_path) as url:
        settings = load_settings({"home": str(tmp_path / "home"), "store": url, "port": 0})
        running = start_server(settings)
        try:
            admin = running.client()
            admin.push("yn", yes_no, alias="production")
            ids = [admin.predict("yn", [{"x": float(i)}])["prediction_ids"][0] for i in range(5)]
        finally:
            running.stop()
        env = cli_env(MODELPORT_STORE=url, MODELPORT_HOME=str(settings.home))
        kept = run_cli(["ledger", "archive", "--retention-days", "1"], env=env)
        assert kept.returncode == 0 and "archived 0 predictions" in kept.stdout
        time.sleep(1.1)
        moved = run_cli(["ledger", "archive", "--retention-days", str(SECOND)], env=env)
        assert moved.returncode == 0, moved.stderr
        assert "yn: 5 predictions (5 requests)" in moved.stdout
        assert _hot(settings, "yn") == 0
        running = start_server(settings)
        try:
            assert running.client().prediction(ids[4])["inputs"] == {"x": 4.0}
            # The batch scorer reads archived traffic: exported, then scored.
            logged = tmp_path / "logged.csv"
            out = run_cli(["ledger", "export", "yn", str(logged)], env=env)
            assert out.returncode == 0 and "5 predictions of yn" in out.stdout, out.stderr
            frame = pd.read_csv(logged)
            assert list(frame["prediction_id"]) == ids and list(frame["x"]) == [0, 1, 2, 3, 4]
            scored = tmp_path / "scored.csv"
            client_env = {**env, "MODELPORT_URL": running.url, "MODELPORT_KEY": running.admin_key}
            done = run_cli(["score", "yn", str(logged), str(scored), "--quiet"], env=client_env)
            assert done.returncode == 0, done.stderr
            again = pd.read_csv(scored)
            assert list(again["prediction"]) == list(frame["served_prediction"])
        finally:
            running.stop()
        sha = _scalar(settings, sa.select(ledger_archive.c.sha256))
        blob = settings.home / "artifacts" / sha[:2] / sha[2:]
        blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
        broken = run_cli(["ledger", "verify"], env=env)
        assert broken.returncode == 1 and "does not match its sha256" in broken.stdout


@pytest.mark.parametrize("step", ["written", "registered", "deleted"])
def test_a_kill_mid_archive_loses_nothing(tmp_path: Path, yes_no: Any, step: str) -> None:
    """SIGKILL at each step of an archive batch: the rows are in the table, the archive or
    both, never neither; the next server finishes the job and reads count each row once."""
    with fresh_store_url(tmp_path) as url:
        home = tmp_path / "home"
        marker = tmp_path / "paused"
        settings = load_settings({"home": str(home), "store": url})
        key = make_key(settings, "ops", ["admin"])
        flags = ["--ledger-archive-seconds", "0.2", "--ledger-archive-batch", "4"]
        first = ServerProcess(home, url, args=flags)
        first.env = {"MODELPORT_TEST_ARCHIVE_PAUSE": f"{step}:{marker}"}
        first.start(timeout=180)  # a loaded machine starts slowly
        try:
            from modelport import Client

            with Client(first.url, key) as mp:
                mp.push("yn", yes_no, alias="production")
                ids = [
                    p
                    for i in range(10)
                    for p in mp.predict("yn", [{"x": float(i) - 5}] * 2)["prediction_ids"]
                ]
                mp.feedback(ids[0], label="no")
            time.sleep(1.1)  # every row past a retention of one second: batches of 4 from here
            put = httpx.put(
                f"{first.url}/v1/models/yn/serving",
                json={"ledger_retention_days": SECOND},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert put.status_code == 200, put.text
            _wait(marker.exists, what=f"the archive to pause at {step!r}")
            assert first.signal(signal.SIGKILL) == -signal.SIGKILL
        finally:
            first.kill()
        hot = _hot(settings, "yn")
        listed = int(
            _scalar(
                settings, sa.select(sa.func.coalesce(sa.func.sum(ledger_archive.c.requests), 0))
            )
        )
        # The first batch (4 requests) was at the step: nowhere is a row in neither place.
        expected = {"written": (10, 0), "registered": (10, 4), "deleted": (6, 4)}[step]
        assert (hot, listed) == expected
        second = ServerProcess(home, url, args=flags).start(timeout=180)
        try:
            _wait(lambda: _hot(settings, "yn") == 0, what="the archive to finish")
            from modelport import Client

            with Client(second.url, key) as mp:
                for pid in ids:
                    assert mp.prediction(pid)["id"] == pid
                assert mp.prediction(ids[0])["feedback"][0]["label"] == "no"
                mp.push("yn", yes_no)
                report = mp.wait_job(mp.replay("yn", 2)["id"])["result"]
                assert (report["requests"], report["rows"]) == (10, 20)  # each row once
        finally:
            second.kill()
        env = cli_env(MODELPORT_STORE=url, MODELPORT_HOME=str(home))
        verified = run_cli(["ledger", "verify"], env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        status = json.loads(run_cli(["ledger", "status", "--json"], env=env).stdout)
        assert status["models"][0]["archived_predictions"] == 20


def test_rebuilt_rollups_equal_the_writers(server: RunningServer, yes_no: Any) -> None:
    admin = server.client()
    admin.push("yn", yes_no, alias="production")
    for i in range(5):
        admin.predict("yn", [{"x": float(i)}] * (i + 1))
    st = Store(server.settings.store_url)
    try:
        query = sa.select(ledger_rollups).order_by(*ledger_rollups.primary_key.columns)
        with st.read() as conn:
            written = [tuple(r) for r in conn.execute(query)]
        with st.transaction() as conn:
            rollups.rebuild(conn)
        with st.read() as conn:
            rebuilt = [tuple(r) for r in conn.execute(query)]
    finally:
        st.close()
    assert [r[:-2] for r in rebuilt] == [r[:-2] for r in written]
    assert [r[-2:] for r in rebuilt] == pytest.approx([r[-2:] for r in written])


def test_a_drift_report_reads_a_sample_of_fixed_size(settings: Settings, yes_no: Any) -> None:
    """A window with more predictions than drift_max_rows: a sample of that size, drawn from
    every slice of the window in proportion to its traffic (from the roll-ups)."""
    running = start_server(settings.model_copy(update={"drift_max_rows": 100}))
    try:
        admin = running.client()
        train = pd.DataFrame({"x": np.linspace(-5, 5, 101)})
        train["y"] = np.where(train["x"] > 0, "yes", "no")
        admin.push("yn", yes_no, train_data=train, target="y", alias="production")
        old = [
            p for i in range(15) for p in admin.predict("yn", [{"x": -1.0}] * 10)["prediction_ids"]
        ]
        for _ in range(15):
            admin.predict("yn", [{"x": 1.0}] * 10)
        st = Store(settings.store_url)
        try:
            with st.transaction() as conn:  # the first half of the traffic, 40 minutes ago
                conn.execute(
                    predictions.update()
                    .where(predictions.c.id.in_(old[::10]))
                    .values(ts=predictions.c.ts - 2400)
                )
                rollups.rebuild(conn)
        finally:
            st.close()
        [v1] = admin.drift("yn", window="1h")["versions"]
        assert v1["rows"] == 100  # 300 in the window
        # Half the sample is the old half: the served predictions are half "no", half "yes".
        assert v1["predictions"]["psi"] < 0.2
    finally:
        running.stop()
