"""Replicas: ``modelport serve`` processes started on their own, over one store (PostgreSQL, or
one SQLite file) and one artifact store (S3), behave as one service."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from modelport import Client
from modelport.settings import Settings
from modelport.store import Store
from modelport.store.tables import predictions
from tests.conftest import S3Bucket, make_key
from tests.procs import ServerProcess

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
#: The issue's bound: a change made through one replica is served by all within a second.
BOUND = 1.0


def replica_args(bucket: S3Bucket) -> list[str]:
    """The flags that put a replica's artifacts on the shared bucket."""
    return ["--artifacts", bucket.url(), "--artifacts-options", json.dumps(bucket.options)]


class Caller:
    """Predicts on one replica with one key, keeping every id it got a 200 for."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        self.acked: list[str] = []

    def predict(self) -> httpx.Response:
        r = self.http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
        if r.status_code == 200:
            self.acked.extend(r.json()["prediction_ids"])
        return r

    def version(self) -> int | None:
        r = self.predict()
        return int(r.json()["version"]) if r.status_code == 200 else None

    def delay_until(self, served: Callable[[int | None], bool], since: float) -> float:
        """Seconds from ``since`` until this replica answers as ``served`` wants (polled)."""
        deadline = since + 15
        while time.monotonic() < deadline:
            if served(self.version()):
                return time.monotonic() - since
            time.sleep(0.01)
        raise AssertionError("the change never reached this replica")


def _ledger_ids(store_url: str) -> tuple[set[str], int]:
    """The ids of the one-row predictions in the store, and how many rows it holds."""
    st = Store(store_url)
    try:
        with st.read() as conn:
            ids = set(conn.execute(sa.select(predictions.c.id)).scalars())
            rows = conn.execute(sa.select(sa.func.sum(predictions.c.rows))).scalar() or 0
    finally:
        st.close()
    return ids, int(rows)


def test_replicas_serve_pushes_alias_moves_traffic_and_pins_made_through_any_of_them(
    tmp_path: Path,
    store_url: str,
    settings: Settings,
    s3_bucket: S3Bucket,
    iris_pipeline: Any,
    iris_frame: Any,
) -> None:
    shared = settings.model_copy(update={"home": tmp_path / "keys", "store": store_url})
    admin = make_key(shared, "ops", ["admin"])
    app_key = make_key(shared, "checkout", ["predict"])
    a = ServerProcess(tmp_path / "a", store_url, args=replica_args(s3_bucket)).start()
    b = ServerProcess(tmp_path / "b", store_url, args=replica_args(s3_bucket)).start()
    callers = [Caller(a.url, admin), Caller(b.url, admin), Caller(b.url, app_key)]
    on_a, on_b, app_on_b = callers
    delays: dict[str, float] = {}
    try:
        with Client(a.url, admin) as via_a, Client(b.url, admin) as via_b:
            assert on_b.version() is None  # nothing pushed yet

            via_a.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
            delays["push"] = on_b.delay_until(lambda v: v == 1, time.monotonic())

            via_a.push("iris", iris_pipeline, train_data=iris_frame)  # version 2, no alias
            assert on_b.version() == 1
            via_a.promote("iris", 2, reason="through replica a")
            delays["alias move"] = on_b.delay_until(lambda v: v == 2, time.monotonic())

            via_b.set_traffic("iris", {"policy": "single", "target": {"version": 1}})
            delays["traffic"] = on_a.delay_until(lambda v: v == 1, time.monotonic())

            via_a.pin("iris", "checkout", version=2)
            delays["pin"] = app_on_b.delay_until(lambda v: v == 2, time.monotonic())
            assert on_b.version() == 1  # everyone else still follows the traffic policy
        assert all(d < BOUND for d in delays.values()), delays

        # Every replica's ledger is in the one store.
        acked = [pid for c in callers for pid in c.acked]
        assert on_a.acked and on_b.acked and app_on_b.acked
        stored, rows = _ledger_ids(store_url)
        assert set(acked) <= stored and rows == len(acked)

        # A restart of replica b (SIGTERM, start again) loses nothing and comes back current.
        for _ in range(20):
            assert on_b.predict().status_code == 200
        for c in callers:
            c.http.close()
        assert b.signal(signal.SIGTERM) == 0
        b.kill()
        b = ServerProcess(tmp_path / "b", store_url, port=b.port, args=replica_args(s3_bucket))
        b.start()
        acked = [pid for c in callers for pid in c.acked]
        stored, rows = _ledger_ids(store_url)
        assert set(acked) <= stored and rows == len(acked)
        again, app_again = Caller(b.url, admin), Caller(b.url, app_key)
        assert again.version() == 1 and app_again.version() == 2
        again.http.close()
        app_again.http.close()
    finally:
        for c in callers:
            c.http.close()
        a.kill()
        b.kill()
