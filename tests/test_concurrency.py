"""32 concurrent clients: no errors, one ledger row per predicted row, distinct ids."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import httpx
import pytest

from modelport.ledger import count_predictions
from modelport.service.core import Service
from modelport.settings import Settings
from modelport.store import Store
from tests.conftest import IRIS_COLUMNS, POSTGRES_URL, RunningServer

CLIENTS = 32
REQUESTS_EACH = 20


def test_32_concurrent_clients(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> None:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    rows = iris_frame[IRIS_COLUMNS].to_dict("records")
    headers = {"Authorization": f"Bearer {server.key('load', 'predict')}"}

    async def client(n: int) -> tuple[int, list[str]]:
        errors, ids = 0, []
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            for i in range(REQUESTS_EACH):
                size = 10 if (n + i) % 3 == 0 else 1
                batch = rows[(n * 7 + i) % 140 :][:size]
                r = await http.post("/v1/models/iris/predict", json={"inputs": batch})
                if r.status_code != 200:
                    errors += 1
                    continue
                ids += r.json()["prediction_ids"]
                assert len(r.json()["prediction_ids"]) == size
        return errors, ids

    async def main() -> list[tuple[int, list[str]]]:
        return await asyncio.gather(*(client(n) for n in range(CLIENTS)))

    results = asyncio.run(main())
    assert sum(e for e, _ in results) == 0
    ids = [i for _, batch in results for i in batch]
    expected_rows = sum(
        10 if (n + i) % 3 == 0 else 1 for n in range(CLIENTS) for i in range(REQUESTS_EACH)
    )
    assert len(ids) == len(set(ids)) == expected_rows
    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            stored = count_predictions(conn)
    finally:
        st.close()
    assert stored == expected_rows


_NEEDS_LOCK = pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL to hold a table locked")


def _held_refresh(settings: Settings, end: str) -> list[Any]:
    """A service whose router refresh, announced from a thread as the online learner does,
    is held by a lock on the registry's generation row (which it reads first) while
    ``stop()`` runs; then the lock is let go (``end`` "release") or the refresh's database
    session is ended (``end`` "terminate"). Checks that ``stop()`` waits for the refresh
    either way; returns the psycopg connections of the store still open after it."""
    import psycopg

    quiet = {  # no polling loop of the service's own reads the registry meanwhile
        f: 3600.0
        for f in (
            "registry_poll_seconds",
            "release_check_seconds",
            "learn_poll_seconds",
            "job_poll_seconds",
        )
    }
    settings = settings.model_copy(update=quiet)
    schema = settings.store_url.rpartition("%3D")[2]
    url = settings.store_url.replace("+psycopg", "")  # psycopg's own form of the URL

    def ours_open() -> list[Any]:
        gc.collect()
        return [
            o
            for o in gc.get_objects()
            if isinstance(o, psycopg.Connection) and not o.closed and schema in o.info.dsn
        ]

    async def scenario() -> None:
        svc = Service(settings)
        await svc.start()
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE registry_generation IN ACCESS EXCLUSIVE MODE")
            await asyncio.to_thread(svc.runtime.registry_changed_from_thread)
            stopping = asyncio.create_task(svc.stop())
            await asyncio.sleep(1.0)
            assert not stopping.done(), "stop() returned while a registry refresh was running"
            active = psycopg.pq.TransactionStatus.ACTIVE
            blocked = [c for c in ours_open() if c.info.transaction_status == active]
            assert len(blocked) == 1, "the refresh should be waiting for the lock"
            if end == "terminate":
                pid = blocked[0].info.backend_pid
                with psycopg.connect(url, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            else:
                holder.rollback()
            await asyncio.wait_for(stopping, 30)

    asyncio.run(scenario())
    return ours_open()


@_NEEDS_LOCK
def test_stop_waits_for_a_registry_change_the_learner_scheduled(settings: Settings) -> None:
    """The online learner announces a new snapshot from its thread, and the router's refresh
    then runs on the event loop, on a connection of the store's. Stopping the service must wait
    for it: a store closed under it would have its connection handed back to a closed pool,
    left open until the garbage collector finds it."""
    assert _held_refresh(settings, "release") == [], "a connection outlived the store"


@_NEEDS_LOCK
def test_a_refresh_that_fails_after_a_learner_change_is_logged_and_stop_ends(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="modelport.runtime")
    assert _held_refresh(settings, "terminate") == [], "a connection outlived the store"
    failed = [r for r in caplog.records if "registry refresh after a change failed" in r.message]
    assert len(failed) == 1 and "terminat" in failed[0].getMessage(), caplog.text
