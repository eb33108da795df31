"""SIGKILL mid-load loses nothing that was acknowledged: of a lone server, or of one replica
among several over one store and one artifact store (the others keep serving)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import Client
from tests.api.test_metrics import commit_counts
from tests.conftest import S3Bucket, make_key
from tests.procs import ServerProcess

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Load:
    """Threads predicting (and posting feedback) at one server until it dies or time is up,
    keeping what was acknowledged."""

    def __init__(self, url: str, key: str, threads: int, seconds: float) -> None:
        self.url, self.key, self.seconds = url, key, seconds
        self.acked: list[str] = []
        self.feedback_acked: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def wait_for(self, predictions: int, seconds: float | None = None) -> None:
        """Until ``predictions`` were acknowledged, or ``seconds`` (default: all the time)."""
        deadline = time.monotonic() + (self.seconds if seconds is None else seconds)
        while len(self.acked) < predictions and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        ) as http:
            deadline = time.monotonic() + self.seconds
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = http.post("/v1/models/iris/predict", json={"inputs": [ROW, ROW]})
                    if r.status_code != 200:
                        continue
                    ids = r.json()["prediction_ids"]
                    self.acked.extend(ids)
                    f = http.post(
                        "/v1/feedback",
                        json={"feedback": [{"prediction_id": ids[0], "label": "setosa"}]},
                    )
                    if f.status_code == 200:
                        self.feedback_acked.append((ids[0], f.json()["accepted"][0]["feedback_id"]))
                except httpx.TransportError:
                    return  # the server is gone


def _assert_all_stored(url: str, key: str, store_url: str, load: Load) -> None:
    """Every acknowledged prediction and feedback is in the ledger, read through ``url``."""
    with Client(url, key) as mp:
        stored: set[str] = set()
        cursor = None
        while True:
            page = mp.predictions("iris", limit=1000, cursor=cursor)
            stored.update(p["id"] for p in page["predictions"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert set(load.acked) <= stored
        for pid, feedback_id in load.feedback_acked[-20:]:
            assert feedback_id in {f["id"] for f in mp.prediction(pid)["feedback"]}
    import sqlalchemy as sa

    from modelport.store import Store
    from modelport.store.tables import feedback

    st = Store(store_url)
    try:
        with st.read() as conn:
            ids = set(conn.execute(sa.select(feedback.c.id)).scalars())
    finally:
        st.close()
    assert {fid for _, fid in load.feedback_acked} <= ids


@pytest.mark.parametrize("threads", [4, 1], ids=["4 connections", "1 connection"])
def test_sigkill_under_load_loses_no_acknowledged_prediction_or_feedback(
    tmp_path: Path,
    store_url: str,
    settings: Any,
    iris_pipeline: Any,
    iris_frame: Any,
    threads: int,
) -> None:
    """Four connections: the writer thread's group commits; one: its commits made inline on
    the event loop's thread (``inline_when_alone``), counted before the kill."""
    home = tmp_path / "home"
    key = make_key(
        settings.model_copy(update={"home": home, "store": store_url}), "load", ["admin"]
    )
    proc = ServerProcess(home, store_url).start()
    try:
        with Client(proc.url, key) as mp:
            mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        auth = {"Authorization": f"Bearer {key}"}
        with Load(proc.url, key, threads=threads, seconds=20) as load:
            load.wait_for(200)
            answered = len(load.acked) // 2  # requests of two rows, each committed before
            with httpx.Client(base_url=proc.url, headers=auth, timeout=10) as http:
                _, inline = commit_counts(http)
            proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            proc.proc.wait(timeout=30)  # type: ignore[union-attr]
    finally:
        proc.kill()

    assert len(load.acked) >= 200 and len(load.feedback_acked) >= 50, (
        len(load.acked),
        len(load.feedback_acked),
    )
    if threads == 1:  # all but a few: the push's connection may still be closing at first
        assert inline >= answered - 5, (inline, answered)
    restarted = ServerProcess(home, store_url).start()
    try:
        _assert_all_stored(restarted.url, key, store_url, load)
    finally:
        restarted.kill()


def test_sigkill_of_a_replica_under_load_loses_nothing_and_the_others_keep_serving(
    tmp_path: Path,
    store_url: str,
    settings: Any,
    s3_bucket: S3Bucket,
    iris_pipeline: Any,
    iris_frame: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = make_key(settings.model_copy(update={"store": store_url}), "load", ["admin"])
    # The endpoint from the usual environment this time, not from artifacts_options.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
    args = ["--artifacts", s3_bucket.url()]
    a = ServerProcess(tmp_path / "a", store_url, args=args).start()
    b = ServerProcess(tmp_path / "b", store_url, args=args).start()
    try:
        with Client(b.url, key) as mp:
            mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        # Load at both (bounded in time); replica a dies in the middle of it.
        with Load(a.url, key, threads=3, seconds=10) as at_a, Load(b.url, key, 2, 10) as at_b:
            at_a.wait_for(150, seconds=3)
            a.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            a.proc.wait(timeout=30)  # type: ignore[union-attr]
            killed_at = len(at_a.acked)
            before = len(at_b.acked)
            at_b.wait_for(before + 50, seconds=5)  # b goes on answering
        assert killed_at >= 20 and len(at_b.acked) >= before + 50, (killed_at, before)
        a.kill()
        a = ServerProcess(tmp_path / "a", store_url, port=a.port, args=args).start()
        for load in (at_a, at_b):
            _assert_all_stored(a.url, key, store_url, load)
        with Client(a.url, key) as mp:
            assert mp.predict("iris", [ROW])["version"] == 1
    finally:
        a.kill()
        b.kill()
