"""``inline_when_alone``: a request that is all ``modelport serve`` has commits its ledger
rows on the event loop's thread; a second open connection sends every commit back to the
writer thread; a commit the database refuses there is the request's error, and the next one
takes a fresh connection. Counted from the server's own ``/metrics``, on a real server
process."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import Client
from tests.api.test_metrics import commit_counts
from tests.conftest import POSTGRES_URL, make_key
from tests.procs import ServerProcess

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
PREDICTIONS = 20


def _predict(http: httpx.Client, times: int) -> list[str]:
    ids = []
    for _ in range(times):
        answer = http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
        assert answer.status_code == 200, answer.text
        ids += answer.json()["prediction_ids"]
    return ids


@pytest.mark.parametrize("flags", [[], ["--no-inline-when-alone"]], ids=["on", "off"])
def test_one_open_connection_commits_inline_and_a_second_one_stops_it(
    tmp_path: Path,
    store_url: str,
    settings: Any,
    iris_pipeline: Any,
    iris_frame: Any,
    flags: list[str],
) -> None:
    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": store_url}), "ops", ["admin"])
    server = ServerProcess(home, store_url, args=flags).start()
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with Client(server.url, key) as mp:
            mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as one:
            commits, inline = commit_counts(one)
            alone = _predict(one, PREDICTIONS)
            commits_alone, inline_alone = commit_counts(one)
            with httpx.Client(base_url=server.url, headers=auth, timeout=30) as two:
                assert two.get("/v1/health").status_code == 200  # and stays open
                beside = _predict(one, PREDICTIONS)
                commits_beside, inline_beside = commit_counts(one)
        assert commits_alone - commits == PREDICTIONS
        assert inline_alone - inline == (0 if flags else PREDICTIONS)
        assert commits_beside - commits_alone == PREDICTIONS
        assert inline_beside == inline_alone  # two connections open: the writer thread's
        with Client(server.url, key) as mp:
            stored = [p["id"] for p in mp.predictions("iris", limit=100)["predictions"]]
        assert stored == alone + beside
        assert server.signal(signal.SIGTERM) == 0
    finally:
        server.kill()


@pytest.mark.skipif(
    not POSTGRES_URL, reason="needs PostgreSQL: its sessions can be ended from outside"
)
def test_an_inline_commit_whose_database_session_ends_is_refused_and_the_next_commits(
    tmp_path: Path, store_url: str, settings: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    """The writer's connection, which an inline commit uses, is ended by the database (a
    failover, an administrator): that request gets a 503 naming the store, not a 500 and not
    an acknowledgement, and the next requests commit inline on a fresh connection."""
    import uuid

    import psycopg

    name = f"modelport-inline-{uuid.uuid4().hex[:12]}"
    url = f"{store_url}&application_name={name}"
    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": url}), "ops", ["admin"])
    server = ServerProcess(home, url).start()
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with Client(server.url, key) as mp:
            mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as one:
            first = _predict(one, 1)
            _, inline = commit_counts(one)
            # psycopg's own form of the URL, as tests/test_concurrency.py connects
            with psycopg.connect(store_url.replace("+psycopg", ""), autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    [name],
                ).fetchone()
            assert ended is not None and ended[0] >= 1  # the writer's session at least
            refused = one.post("/v1/models/iris/predict", json={"inputs": [ROW]})
            assert refused.status_code == 503, refused.text
            assert "the store refused the write" in refused.json()["error"]["message"]
            after = _predict(one, 3)
            _, inline_after = commit_counts(one)
        assert inline_after - inline == 3
        with Client(server.url, key) as mp:
            stored = [p["id"] for p in mp.predictions("iris", limit=100)["predictions"]]
        assert stored == first + after  # nothing of the refused request
        assert server.signal(signal.SIGTERM) == 0
    finally:
        server.kill()
