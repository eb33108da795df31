"""Group commit: many jobs, few commits; failures stay with their own job; stop flushes."""

from __future__ import annotations

import threading
from concurrent.futures import Future, wait

import pytest
import sqlalchemy as sa

from modelport.errors import Conflict
from modelport.ids import new_id
from modelport.store import Store
from modelport.store.tables import predictions, registry_generation
from modelport.store.writer import Writer


def _row(i: int) -> tuple:
    return (new_id(), 1.0, "m", 1, None, "c", f"r{i}", '{"x": 1}', '{"prediction": 0}', 0.1)


def _count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())


def test_concurrent_jobs_share_commits(store: Store) -> None:
    writer = Writer(store)
    writer.start()
    futures: list[Future] = []
    lock = threading.Lock()

    def submit(t: int) -> None:
        for i in range(100):
            fut = writer.submit_rows([_row(i), _row(i)])
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait(futures, timeout=60)
    assert all(f.exception() is None for f in futures)
    writer.stop()
    assert _count(store) == 1600
    assert writer.stats.jobs == 800 and writer.stats.rows == 1600
    assert writer.stats.commits < 800


def test_a_failing_job_fails_alone(store: Store) -> None:
    writer = Writer(store)
    release = threading.Event()

    def slow(conn: sa.Connection) -> None:
        release.wait(10)  # holds the writer so the next jobs queue up into one group

    def bump(conn: sa.Connection) -> int:
        conn.execute(
            registry_generation.update().values(generation=registry_generation.c.generation + 1)
        )
        return 1

    def boom(conn: sa.Connection) -> None:
        conn.execute(registry_generation.update().values(generation=1000))
        raise Conflict("no")

    writer.start()
    first = writer.submit(slow)
    group = [
        writer.submit(bump),
        writer.submit(boom),
        writer.submit_rows([_row(0)]),
        writer.submit(bump),
    ]
    release.set()
    wait([first, *group], timeout=30)
    writer.stop()
    assert group[0].result() == 1 and group[3].result() == 1
    with pytest.raises(Conflict):
        group[1].result()
    assert group[2].result() is None
    with store.read() as conn:
        assert conn.execute(sa.select(registry_generation.c.generation)).scalar_one() == 2
    assert _count(store) == 1


def test_stop_commits_everything_queued(store: Store) -> None:
    writer = Writer(store)
    futures = [writer.submit_rows([_row(i)]) for i in range(50)]  # queued before the thread runs
    writer.start()
    writer.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    assert _count(store) == 50
