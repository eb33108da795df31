"""The learning loop against a real server: models from algorithms, observations, online
learning beside serving, retraining jobs in worker processes, replay, and the gate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from modelport import errors
from modelport.settings import Settings
from modelport.store import Store
from modelport.store.tables import observations, versions
from tests.api.test_metrics import scrape, value
from tests.conftest import RunningServer, start_server
from tests.conftest import wait_until as _wait
from tests.procs import cli_env, run_cli

X_SCHEMA = {"fields": [{"name": "x", "type": "number"}]}
XY_SCHEMA = {
    "fields": [
        {"name": "a", "type": "number"},
        {"name": "b", "type": "number"},
        {"name": "c", "type": "category", "categories": ["p", "q"]},
    ]
}


@pytest.fixture
def learning(settings: Settings) -> Iterator[RunningServer]:
    """A server that learns, polls for jobs and judges often."""
    quick = {"learn_poll_seconds": 0.05, "job_poll_seconds": 0.1, "release_check_seconds": 0.1}
    running = start_server(settings.model_copy(update=quick))
    yield running
    running.stop()


def _rows(n: int, seed: int, *, noise: float = 0.0) -> list[dict[str, Any]]:
    """Labelled rows: label 'yes' when a + b > 0 (flipped with probability ``noise``)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.normal(size=2)
        label = "yes" if a + b > 0 else "no"
        if rng.random() < noise:
            label = "no" if label == "yes" else "yes"
        out.append({"a": float(a), "b": float(b), "c": str(rng.choice(["p", "q"])), "y": label})
    return out


def test_an_online_model_learns_from_observations_and_snapshots_versions(
    learning: RunningServer,
) -> None:
    mp = learning.client()
    created = mp.create_from_algorithm(
        "trend",
        "online_linear_regression",
        schema=X_SCHEMA,
        target="y",
        online={"min_observations": 20, "snapshot_every": 50, "snapshot_seconds": 0.5},
    )
    assert created["spec"]["online"] is True and created["task"] == "regression"
    with pytest.raises(errors.ModelportError) as early:
        mp.predict("trend", [{"x": 1.0}])
    assert early.value.status_code == 409 and "20" in str(early.value)

    out = mp.observe(
        "trend",
        [{"x": 1.0, "y": 2.0}, {"x": "a lot", "y": 1.0}, {"x": 2.0}, {"x": 3.0, "y": 6.0}],
    )
    assert out["accepted"] == 2
    assert [(r["index"], r["field"]) for r in out["rejected"]] == [(1, "x"), (2, "y")]
    rng = np.random.default_rng(0)
    xs = rng.uniform(-2, 2, 300)
    mp.observe("trend", [{"x": float(x), "y": float(2 * x + 1)} for x in xs])
    answer = _wait(lambda: _try_predict(mp, "trend", 1.5), what="a snapshot")
    assert abs(answer["predictions"][0] - 4.0) < 1.0
    status = _wait(
        lambda: (
            (s := learning.http().get("/v1/models/trend/learning").json())["learned_through"] >= 302
            and s
        ),
        what="everything learned",
    )
    assert status["observations"] == 302 and status["prequential"]
    newest = mp.versions("trend")[-1]
    lineage = newest["lineage"]
    assert lineage["learner"] is True and lineage["through_observation"] >= 1
    if newest["version"] > 1:
        assert lineage["parent_version"] == newest["version"] - 1


def _try_predict(mp: Any, name: str, x: float) -> Any:
    try:
        return mp.predict(name, [{"x": x}])
    except errors.ModelportError:
        return None


def test_online_regression_tracks_a_drifting_slope_where_a_frozen_model_cannot(
    learning: RunningServer,
) -> None:
    """The true slope goes from 2 to -1 halfway. After adapting, the online model's error on
    the new relation is within 0.5 (mean absolute, on x in [-2, 2]); the version frozen at the
    first half is off by more than 2."""
    mp = learning.client()
    mp.create_from_algorithm(
        "drift",
        "online_linear_regression",
        schema=X_SCHEMA,
        target="y",
        online={"min_observations": 20, "snapshot_every": 100, "snapshot_seconds": 0.2},
    )
    rng = np.random.default_rng(1)
    for slope in (2.0, -1.0):
        for _ in range(10):
            xs = rng.uniform(-2, 2, 100)
            mp.observe("drift", [{"x": float(x), "y": float(slope * x)} for x in xs])
        if slope == 2.0:
            frozen = _wait_learned(learning, "drift", 1000)
    _wait_learned(learning, "drift", 2000)
    probe = np.linspace(-2, 2, 41)
    truth = -1.0 * probe

    def error(version: int | None) -> float:
        out = mp.predict("drift", [{"x": float(x)} for x in probe], version=version)
        return float(np.mean(np.abs(np.asarray(out["predictions"]) - truth)))

    assert error(None) < 0.5  # production follows the newest snapshot
    assert error(frozen) > 2.0


def _wait_learned(server: RunningServer, name: str, through: int) -> int:
    """The version that has learned every observation up to ``through``."""
    http = server.http()

    def done() -> int | None:
        newest = http.get(f"/v1/models/{name}/versions").json()
        if newest and newest[-1]["lineage"].get("through_observation", 0) >= through:
            return int(newest[-1]["version"])
        return None

    version = _wait(done, timeout=60, what=f"{name} to learn through observation {through}")
    return int(version)


def test_feedback_labels_become_observations(learning: RunningServer) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "fb", "logistic_regression", schema=XY_SCHEMA, target="y", classes=["no", "yes"]
    )
    mp.observe("fb", _rows(200, 0))
    job = mp.wait_job(mp.retrain("fb")["id"])
    assert job["status"] == "succeeded", job
    mp.promote("fb", job["result"]["version"])
    out = mp.predict("fb", [{"a": 1.0, "b": 1.0, "c": "p"}])
    mp.feedback(out["prediction_ids"][0], label="no")
    st = Store(learning.settings.store_url)
    try:
        with st.read() as conn:
            row = conn.execute(
                sa.select(observations).where(observations.c.source == "feedback")
            ).one()
    finally:
        st.close()
    assert row.prediction_id == out["prediction_ids"][0] and row.label == "no"


def test_retrain_is_reproducible_from_a_snapshot(learning: RunningServer) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "rep",
        "random_forest_classifier",
        schema=XY_SCHEMA,
        target="y",
        params={"n_estimators": 20},
    )
    mp.observe("rep", _rows(400, 2, noise=0.1))
    dataset = mp.snapshot("rep")
    assert dataset["rows"] == 400 and len(dataset["id"]) == 64
    first = mp.wait_job(mp.retrain("rep", dataset=dataset["id"], seed=5)["id"])
    second = mp.wait_job(mp.retrain("rep", dataset=dataset["id"], seed=5)["id"])
    assert first["status"] == second["status"] == "succeeded", (first, second)
    v1, v2 = first["result"]["version"], second["result"]["version"]
    probe = [{k: v for k, v in r.items() if k != "y"} for r in _rows(50, 9)]
    p1 = mp.predict("rep", probe, version=v1)
    p2 = mp.predict("rep", probe, version=v2)
    assert p1["predictions"] == p2["predictions"]
    assert p1["probabilities"] == p2["probabilities"]
    assert first["result"]["metrics"] == second["result"]["metrics"]
    lineage = mp.version("rep", v1)["lineage"]
    assert lineage["dataset"] == dataset["id"] and lineage["seed"] == 5
    assert lineage["hyperparameters"]["n_estimators"] == 20
    assert "scikit-learn" in lineage["libraries"]
    assert mp.model("rep")["aliases"]["candidate"] == v2
    assert "retrain" in first["logs"] or first["logs"]


def test_the_gate_refuses_a_worse_candidate_and_promotes_a_better_one(
    learning: RunningServer,
) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "gated", "logistic_regression", schema=XY_SCHEMA, target="y", classes=["no", "yes"]
    )
    mp.observe("gated", _rows(300, 3))
    first = mp.wait_job(mp.retrain("gated")["id"])
    mp.promote("gated", first["result"]["version"])
    mp.set_gate("gated", {"metric": "accuracy", "min_improvement": 0.02})
    mp.observe("gated", _rows(600, 4, noise=0.45))  # mostly noise: the retrain gets worse
    worse = mp.wait_job(mp.retrain("gated", seed=1)["id"])
    assert worse["result"]["gate"]["decision"] == "refused", worse["result"]
    assert mp.model("gated")["aliases"]["production"] == first["result"]["version"]
    events = mp.events("gated")
    refused = next(e for e in events if e["kind"] == "gate_refused")
    assert refused["detail"]["version"] == worse["result"]["version"]
    assert "accuracy" in refused["detail"]["reason"]

    mp.set_gate("gated", {"metric": "accuracy", "min_improvement": -1.0})  # anything passes
    better = mp.wait_job(mp.retrain("gated", seed=2)["id"])
    assert better["result"]["gate"]["decision"] == "promoted"
    assert mp.model("gated")["aliases"]["production"] == better["result"]["version"]
    assert any(e["kind"] == "gate_promoted" for e in mp.events("gated"))


def test_replay_report_matches_a_hand_computation(learning: RunningServer) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "rp", "logistic_regression", schema=XY_SCHEMA, target="y", classes=["no", "yes"]
    )
    mp.observe("rp", _rows(300, 5))
    v1 = mp.wait_job(mp.retrain("rp")["id"])["result"]["version"]
    mp.observe("rp", [{**r, "y": "no"} for r in _rows(300, 6)])  # v2 learns to say "no"
    v2 = mp.wait_job(mp.retrain("rp", seed=3)["id"])["result"]["version"]
    mp.promote("rp", v1)
    logged = _rows(40, 7)
    served, truth = [], []
    for i, row in enumerate(logged):
        out = mp.predict("rp", [{k: v for k, v in row.items() if k != "y"}])
        served.append(out["predictions"][0])
        if i % 2 == 0:  # half the rows get a label
            mp.feedback(out["prediction_ids"][0], label=row["y"])
            truth.append((i, row["y"]))
    job = mp.wait_job(mp.replay("rp", v2)["id"])
    report = job["result"]
    probe = [{k: v for k, v in r.items() if k != "y"} for r in logged]
    ours = mp.predict("rp", probe, version=v2)["predictions"]  # after: not in the replay
    assert report["rows"] == report["scored"] == 40 and report["rejected"] == 0
    assert report["agreement"] == pytest.approx(
        np.mean([a == b for a, b in zip(ours, served, strict=True)])
    )
    fb = report["feedback"]
    assert fb["rows"] == 20 and fb["metric"] == "accuracy"
    assert fb["version"]["accuracy"] == pytest.approx(np.mean([ours[i] == y for i, y in truth]))
    assert fb["served"]["accuracy"] == pytest.approx(np.mean([served[i] == y for i, y in truth]))
    assert report["latency_ms_per_row"] > 0


def test_bad_jobs_and_specs_are_422_naming_the_field(learning: RunningServer) -> None:
    http = learning.http()
    bad_specs = [
        ({"name": "m1", "algorithm": "magic", "schema": X_SCHEMA, "target": "y"}, "algorithm"),
        ({"name": "m2", "algorithm": "logistic_regression", "schema": X_SCHEMA}, "target"),
        (
            {
                "name": "m3",
                "algorithm": "online_logistic_regression",
                "schema": X_SCHEMA,
                "target": "y",
            },
            "classes",
        ),
        (
            {"name": "m4", "algorithm": "logistic_regression", "schema": X_SCHEMA, "target": "x"},
            "target",
        ),
    ]
    for body, field in bad_specs:
        r = http.post("/v1/models", json=body)
        assert r.status_code == 422, r.text
        assert field in [d["field"] for d in r.json()["error"]["details"]], (body, r.json())
    mp = learning.client()
    mp.create_from_algorithm("lr", "linear_regression", schema=X_SCHEMA, target="y")
    assert http.post("/v1/models/lr/jobs", json={"type": "train"}).status_code == 422
    r = http.post("/v1/models/lr/jobs", json={"type": "retrain", "holdout": 2})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "holdout"
    r = http.post("/v1/models/lr/jobs", json={"type": "replay", "version": 9})
    assert r.status_code == 404
    mp.push("pushed", _Fixed(), schema=X_SCHEMA)
    assert http.post("/v1/models/pushed/jobs", json={"type": "retrain"}).status_code == 409
    assert (
        http.post("/v1/models/pushed/observations", json={"observations": [{"x": 1}]}).status_code
        == 409
    )
    all_bad = http.post("/v1/models/lr/observations", json={"observations": [{"x": 1}]})
    assert all_bad.status_code == 422
    assert all_bad.json()["error"]["details"] == [
        {"row": 0, "field": "y", "reason": "missing label"}
    ]


class _Fixed:
    """Any object with predict: a pushed model (not made from an algorithm)."""

    def predict(self, X: Any) -> list[float]:
        return [0.0] * len(X)


def test_a_queued_job_can_be_cancelled(settings: Settings) -> None:
    idle = start_server(settings.model_copy(update={"job_workers": 0}))  # runs no jobs
    try:
        mp = idle.client()
        mp.create_from_algorithm("c", "linear_regression", schema=X_SCHEMA, target="y")
        job = mp.retrain("c")
        assert job["status"] == "queued"
        assert mp.cancel_job(job["id"])["status"] == "cancelled"
        assert mp.job(job["id"])["status"] == "cancelled"
    finally:
        idle.stop()


def test_an_idle_server_writes_nothing_and_still_claims_a_new_job(
    learning: RunningServer,
) -> None:
    """Background loops that find nothing to do write nothing: every write joins a ledger
    group and its commit, so an idle job poll that claimed through the writer slowed the
    answers waiting for that commit (ten polls a second here)."""
    mp = learning.client()
    mp.create_from_algorithm("c", "linear_regression", schema=X_SCHEMA, target="y")
    http = learning.http()

    def commits() -> float:
        return value(scrape(http), "modelport_ledger_commit_seconds_count")

    before = commits()
    time.sleep(1.5)  # 15 job polls, 30 learner ticks, 15 release checks
    assert commits() == before
    job = mp.retrain("c")
    _wait(lambda: mp.job(job["id"])["status"] != "queued", what="the job to be claimed")
    assert commits() > before


def test_observation_files_are_uploaded_and_checked(learning: RunningServer, tmp_path: Any) -> None:
    import pandas as pd

    mp = learning.client()
    mp.create_from_algorithm("f", "linear_regression", schema=X_SCHEMA, target="y")
    frame = pd.DataFrame({"x": [1.0, 2.0, None, 4.0], "y": [2.0, 4.0, 6.0, None]})
    path = tmp_path / "obs.csv"
    frame.to_csv(path, index=False)
    with path.open("rb") as fh:
        r = learning.http().post("/v1/models/f/observations", files={"file": ("obs.csv", fh)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2
    assert [(x["index"], x["field"]) for x in out["rejected"]] == [(2, "x"), (3, "y")]
    ingested = mp.ingest("f", path, chunk_rows=2)
    assert ingested["accepted"] == 2 and [r["index"] for r in ingested["rejected"]] == [2, 3]
    st = Store(learning.settings.store_url)
    try:
        with st.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(observations)).scalar() == 4
            assert conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar() == 0
    finally:
        st.close()


def test_one_bad_cell_in_a_csv_rejects_its_own_row_only(
    learning: RunningServer, tmp_path: Any
) -> None:
    mp = learning.client()
    mp.create_from_algorithm("g", "linear_regression", schema=X_SCHEMA, target="y")
    path = tmp_path / "obs.csv"
    path.write_text("x,y\n1.5,3\nabc,4\n2.5,5.5\n3,\n4,oops\n")
    with path.open("rb") as fh:
        r = learning.http().post("/v1/models/g/observations", files={"file": ("obs.csv", fh)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2
    assert [(x["index"], x["field"]) for x in out["rejected"]] == [(1, "x"), (3, "y"), (4, "y")]
    assert "expected a number" in out["rejected"][0]["reason"]
    # The client and the CLI read files the same way, and the CLI fails when nothing is kept.
    ingested = mp.ingest("g", path, chunk_rows=2)
    assert ingested["accepted"] == 2 and [x["index"] for x in ingested["rejected"]] == [1, 3, 4]
    env = cli_env(MODELPORT_URL=learning.url, MODELPORT_KEY=learning.admin_key)
    done = run_cli(["ingest", "g", str(path), "--quiet"], env=env)
    assert done.returncode == 0 and "2 of 5 rows accepted" in done.stdout, done.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\nabc,1\n")
    done = run_cli(["ingest", "g", str(bad), "--quiet"], env=env)
    assert done.returncode != 0 and "no row of" in done.stderr, (done.stdout, done.stderr)
    st = Store(learning.settings.store_url)
    try:
        with st.read() as conn:
            stored = conn.execute(sa.select(observations.c.label)).scalars().all()
    finally:
        st.close()
    assert sorted(stored) == [3.0, 3.0, 3.0, 5.5, 5.5, 5.5]


def test_triggers_queue_retrains_by_themselves(learning: RunningServer) -> None:
    mp = learning.client()
    mp.create_from_algorithm(
        "auto", "logistic_regression", schema=XY_SCHEMA, target="y", classes=["no", "yes"]
    )
    mp.set_triggers("auto", {"after_observations": 50})
    mp.observe("auto", _rows(60, 8))
    job = _wait(lambda: (js := mp.jobs("auto")) and js[0], what="a triggered retrain")
    assert job["created_by"] == "modelport-trigger"
    done = mp.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    triggered = next(e for e in mp.events("auto") if e["kind"] == "retrain_triggered")
    assert "60 new observations" in triggered["detail"]["reason"]
    time.sleep(0.5)
    assert len(mp.jobs("auto")) == 1  # the snapshot took those observations: nothing new

    # A live metric below its threshold triggers too.
    mp.promote("auto", done["result"]["version"])
    mp.set_triggers(
        "auto", {"metric_below": {"metric": "accuracy", "threshold": 0.5, "min_feedback": 10}}
    )
    for row in _rows(12, 9):
        out = mp.predict("auto", [{k: v for k, v in row.items() if k != "y"}])
        wrong = "no" if out["predictions"][0] == "yes" else "yes"
        mp.feedback(out["prediction_ids"][0], label=wrong)
    second = _wait(lambda: len(js := mp.jobs("auto")) == 2 and js[0], what="a metric trigger")
    assert second["created_by"] == "modelport-trigger"
    reasons = [e["detail"]["reason"] for e in mp.events("auto") if e["kind"] == "retrain_triggered"]
    assert any("live accuracy 0.000" in r for r in reasons)
    with pytest.raises(errors.InvalidInput) as bad:
        mp.set_triggers("auto", {"after_observations": -1, "hourly": True})
    assert {d["field"] for d in bad.value.details} == {
        "triggers.after_observations",
        "triggers.hourly",
    }
