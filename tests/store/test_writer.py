"""Group commit: many jobs, few commits; failures stay with their own job; stop flushes."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelport.errors import Conflict, StoreUnavailable
from modelport.ids import new_id
from modelport.store import Store
from modelport.store.tables import ledger_rollups, predictions, registry_generation
from modelport.store.writer import Writer
from tests.conftest import wait_until


def _row(tag: object, first: str | None = None, rows: int = 1) -> tuple[object, ...]:
    """A ledger row whose request_id is ``tag``, starting at id ``first`` (a new one by
    default) and said to hold ``rows`` predictions."""
    inputs, outputs = b"JS[[1]]", '{"predictions": [0]}'
    head = (
        first or new_id(),
        rows,
        '["x"]',
        1.0,
        "m",
        1,
        None,
        "c",
        str(tag),
        inputs,
        outputs,
        0.1,
    )
    # policy, arm, revision, shadow, raw inputs, segment, cached, idempotency key
    return (*head, None, None, None, False, None, None, None, None)


def _count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())


def test_concurrent_jobs_share_commits(store: Store) -> None:
    writer = Writer(store)
    writer.start()
    futures: list[Future[None]] = []
    lock = threading.Lock()

    def submit(t: int) -> None:
        for i in range(100):
            fut = writer.submit_rows([_row(f"{t}-{i}-a"), _row(f"{t}-{i}-b")])
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
    with store.read() as conn:
        stored = conn.execute(sa.select(predictions.c.request_id)).scalars().all()
    expected = {f"{t}-{i}-{x}" for t in range(8) for i in range(100) for x in "ab"}
    assert len(stored) == 1600 and set(stored) == expected
    assert writer.stats.jobs == 800 and writer.stats.rows == 1600
    assert writer.stats.commits < 800


def test_a_failing_job_fails_alone(store: Store) -> None:
    writer = Writer(store)
    holding, release = threading.Event(), threading.Event()

    def slow(conn: sa.Connection) -> None:
        holding.set()
        release.wait(10)  # holds the writer so the next jobs queue up into one group

    def bump(conn: sa.Connection) -> int:
        conn.execute(
            registry_generation.update().values(generation=registry_generation.c.generation + 1)
        )
        return 1

    def boom(conn: sa.Connection) -> None:
        conn.execute(registry_generation.update().values(generation=1000))
        raise Conflict("no")

    def broken_sql(conn: sa.Connection) -> None:
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")

    writer.start()
    first = writer.submit(slow)
    assert holding.wait(10)
    group: list[Future[Any]] = [
        writer.submit(bump),
        writer.submit(boom),
        writer.submit_rows([_row(0)]),
        writer.submit(broken_sql),
        writer.submit(bump),
    ]
    release.set()
    wait([first, *group], timeout=30)
    writer.stop()
    assert writer.stats.commits == 2  # the slow job alone, then the whole group at once
    assert writer.stats.jobs == 6
    assert group[0].result() == 1 and group[4].result() == 1
    with pytest.raises(Conflict, match="no"):
        group[1].result()
    assert group[2].result() is None
    with pytest.raises(StoreUnavailable, match="no_such_table"):
        group[3].result()
    with store.read() as conn:
        assert conn.execute(sa.select(registry_generation.c.generation)).scalar_one() == 2
    assert _count(store) == 1


def test_stop_commits_everything_queued(store: Store) -> None:
    writer = Writer(store, max_batch=7)
    futures = [writer.submit_rows([_row(i)]) for i in range(50)]  # queued before the thread runs
    writer.start()
    futures += [writer.submit_rows([_row(i)]) for i in range(50)]
    writer.stop()
    assert all(f.done() and f.exception() is None for f in futures)
    assert _count(store) == 100
    assert writer.stats.jobs == 100 and writer.stats.commits >= 100 / 7
    with pytest.raises(StoreUnavailable, match="shutting down"):
        writer.submit_rows([_row(0)])


def test_awaited_jobs_are_answered_with_one_wake_up_per_group(store: Store) -> None:
    writer = Writer(store)
    writer.start()

    async def main() -> None:
        await asyncio.gather(*(writer.insert_rows([_row(f"a{i}")]) for i in range(300)))
        assert await writer.run(lambda conn: 42) == 42

    asyncio.run(main())
    writer.stop()
    assert _count(store) == 300
    assert writer.stats.jobs == 301
    # every group woke the loop once, however many of its requests were waiting
    assert writer.stats.wakeups == writer.stats.commits < 301


def test_a_ledger_row_that_fails_fails_alone_and_the_next_group_commits(store: Store) -> None:
    """Ledger-only groups go straight to the driver: its errors still come out as the
    service's, the other jobs of the group still commit, the roll-ups count only what
    committed, and the writer's connection is usable afterwards."""
    writer = Writer(store)
    holding, release = threading.Event(), threading.Event()

    def slow(conn: sa.Connection) -> None:
        holding.set()
        release.wait(10)

    taken = _row("first")
    writer.start()
    assert writer.submit_rows([taken]).result(timeout=30) is None
    first = writer.submit(slow)
    assert holding.wait(10)
    duplicate = (taken[0], *_row("again")[1:])  # the same prediction id: the key refuses it
    group = [writer.submit_rows([_row(f"ok{i}")]) for i in range(3)]
    group.insert(1, writer.submit_rows([_row("also"), duplicate]))
    release.set()
    wait([first, *group], timeout=30)
    with pytest.raises(Conflict, match="concurrent change"):
        group[1].result()
    assert [f.result() for f in (group[0], group[2], group[3])] == [None, None, None]
    assert writer.submit_rows([_row("after")]).result(timeout=30) is None
    writer.stop()
    with store.read() as conn:
        stored = set(conn.execute(sa.select(predictions.c.request_id)).scalars())
        counted = conn.execute(sa.select(sa.func.sum(ledger_rollups.c.requests))).scalar_one()
    assert stored == {"first", "ok0", "ok1", "ok2", "after"}  # nothing of the failed job
    assert counted == 5


def _wal_bytes(store: Store) -> int:
    path = Path(str(store.write_engine.url.database) + "-wal")
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("background", [True, False])
def test_a_checkpoint_thread_keeps_the_log_short_without_the_writer(
    store: Store, background: bool
) -> None:
    """On SQLite a checkpoint thread copies the write-ahead log into the database, so the
    writer, whose own threshold is then ten times SQLite's, does not: when writing pauses now
    and then (here 0.06 s between steps) a checkpoint finds the log fully copied, the next
    commit reuses it from its start and it stays short. (Under writing that never pauses the
    log is restarted by the writer's threshold, at ~40 MB.) Without the thread (its threshold
    raised the same way to show it) the log grows with what was written."""
    if store.dialect != "sqlite":
        assert Writer(store, checkpoint_seconds=0.1).checkpoint_seconds == 0  # nothing to do
        return
    writer = Writer(store, checkpoint_seconds=0.05 if background else 0.0)
    writer.start()
    if not background:
        writer.submit(lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint=10000")).result(
            timeout=30
        )
    threshold = writer.submit(
        lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    ).result(timeout=30)
    assert threshold == 10_000  # the writer alone would let the log grow to ~40 MB
    blob = "x" * 20_000  # ~5 pages a row
    for step in range(60):  # ~48 MB in all, in steps the checkpoints can come between
        futures = [
            writer.submit_rows([(*_row(f"{step}-{i}")[:9], b"JS[]", blob, *_row(0)[11:])])
            for i in range(40)
        ]
        wait(futures, timeout=30)
        assert all(f.exception() is None for f in futures)
        time.sleep(0.06)
    longest = _wal_bytes(store)
    writer.stop()
    assert _count(store) == 2400
    if background:
        assert longest < 8 * 2**20, longest
    else:
        assert longest > 20 * 2**20, longest


def test_the_checkpoint_thread_skips_rounds_with_nothing_committed(store: Store) -> None:
    """An idle server runs no checkpoint: a round after which the writer committed nothing is
    skipped, and the next commit brings the checkpoints back."""
    if store.dialect != "sqlite":
        assert Writer(store, checkpoint_seconds=0.02).checkpoint_seconds == 0  # no such thread
        return
    writer = Writer(store, checkpoint_seconds=0.02)
    writer.start()
    try:
        writer.submit_rows([_row("a")]).result(timeout=30)
        wait_until(lambda: writer.stats.checkpoints >= 1, what="a checkpoint")
        time.sleep(0.3)  # a round that read the count before the commit may still run once
        idle = writer.stats.checkpoints
        time.sleep(0.4)  # twenty rounds
        assert writer.stats.checkpoints == idle
        writer.submit_rows([_row("b")]).result(timeout=30)
        wait_until(lambda: writer.stats.checkpoints > idle, what="a checkpoint")
    finally:
        writer.stop()
    assert _count(store) == 2


def test_none_bytes_and_bools_bind_as_before_without_the_adapter_lookup(tmp_path: Path) -> None:
    """The store registers None, bytes and bool with the SQLite driver as themselves (so
    binding them skips a failed adapter lookup); what reaches the database is unchanged."""
    import sqlite3

    import modelport.store as store_module

    store = Store(f"sqlite:///{tmp_path / 'bind.db'}")
    for kind in (type(None), bytes, bool):
        assert sqlite3.adapters[(kind, sqlite3.PrepareProtocol)] is store_module._as_is
    writer = Writer(store)
    writer.start()
    try:
        row = _row("bound")
        writer.submit_rows([row]).result(timeout=30)
    finally:
        writer.stop()
        store.close()
    with sqlite3.connect(tmp_path / "bind.db") as raw:
        got = raw.execute(
            "SELECT typeof(alias), typeof(inputs), inputs, typeof(shadow), shadow "
            "FROM predictions WHERE id = ?",
            (row[0],),
        ).fetchone()
        assert got == ("null", "blob", b"JS[[1]]", "integer", 0)
        assert raw.execute("SELECT typeof(?), ?, typeof(?)", (True, True, None)).fetchone() == (
            "integer",
            1,
            "null",
        )
        assert raw.execute("SELECT shadow FROM ledger_rollups").fetchall() == [(0,)]


def test_an_adapter_the_application_registered_first_is_kept() -> None:
    import sqlite3

    import modelport.store as store_module

    key = (bytes, sqlite3.PrepareProtocol)
    ours = sqlite3.adapters.pop(key, None)  # registered when a SQLite store opened, if one did
    try:
        sqlite3.register_adapter(bytes, bytes.hex)
        store_module._bind_without_lookup()
        assert sqlite3.adapters[key] is bytes.hex
        with sqlite3.connect(":memory:") as raw:
            assert raw.execute("SELECT ?", (b"\x01\x02",)).fetchone() == ("0102",)
    finally:
        sqlite3.adapters.pop(key, None)
        if ours is not None:
            sqlite3.adapters[key] = ours


def test_an_inline_insert_commits_on_the_callers_thread_when_the_writer_is_idle(
    store: Store,
) -> None:
    """``insert_rows(inline=True)`` with nothing queued: the rows are committed on the
    caller's own thread, and are in the store when it returns; the store's refusal comes
    out as from the writer thread, and the next inline insert still commits."""
    writer = Writer(store)
    threads: list[tuple[str, bool]] = []
    writer.observer = lambda seconds, jobs, inline: threads.append(
        (threading.current_thread().name, inline)
    )
    writer.start()
    taken = _row("first")

    async def main() -> None:
        await writer.insert_rows([taken], inline=True)
        assert _count(store) == 1  # committed before the await returned
        duplicate = (taken[0], *_row("again")[1:])
        with pytest.raises(Conflict, match="concurrent change"):
            await writer.insert_rows([duplicate], inline=True)
        await writer.insert_rows([_row("after")], inline=True)
        await writer.insert_rows([_row("queued")])  # not inline: the writer thread's

    asyncio.run(main())
    writer.stop()
    me = threading.current_thread().name
    assert threads == [(me, True), (me, True), (me, True), ("modelport-writer", False)]
    assert writer.stats.inline == 2 and writer.stats.commits == 3
    with store.read() as conn:
        stored = set(conn.execute(sa.select(predictions.c.request_id)).scalars())
        counted = conn.execute(sa.select(sa.func.sum(ledger_rollups.c.requests))).scalar_one()
    assert stored == {"first", "after", "queued"}
    assert counted == 3


def test_an_inline_insert_queues_while_the_writer_commits_and_is_refused_after_stop(
    store: Store,
) -> None:
    """While the writer thread holds a group, an inline insert does not wait for its lock on
    the event loop: it joins the queue and is answered by the writer like any other job."""
    writer = Writer(store)
    holding, release = threading.Event(), threading.Event()

    def slow(conn: sa.Connection) -> None:
        holding.set()
        release.wait(10)

    writer.start()

    async def main() -> None:
        first = writer.submit(slow)
        assert await asyncio.to_thread(holding.wait, 10)
        insert = asyncio.ensure_future(writer.insert_rows([_row("behind")], inline=True))
        await asyncio.sleep(0.2)
        assert not insert.done()  # the loop was not blocked: this line ran, the row waits
        release.set()
        await insert
        assert first.result(timeout=10) is None

    asyncio.run(main())
    assert writer.stats.inline == 0 and writer.stats.commits == 2
    writer.stop()
    assert _count(store) == 1

    async def after_stop() -> None:
        await writer.insert_rows([_row("late")], inline=True)

    with pytest.raises(StoreUnavailable, match="shutting down"):
        asyncio.run(after_stop())
    assert _count(store) == 1


def test_an_inline_insert_never_waits_for_another_process_writing_to_the_store(
    store: Store,
) -> None:
    """SQLite's writers take turns through a lock file; while another process holds it (here
    a second open of the file, which ``flock`` treats alike), an inline insert does not wait
    on the caller's thread: it goes to the writer thread, which waits for its turn."""
    if store.dialect != "sqlite":
        pytest.skip("the write lock file is SQLite's (PostgreSQL orders its own writers)")
    import fcntl
    import os

    writer = Writer(store)
    writer.start()
    lock_file = os.open(
        str(store.write_engine.url.database) + ".write-lock", os.O_RDWR | os.O_CREAT
    )
    fcntl.flock(lock_file, fcntl.LOCK_EX)

    async def main() -> None:
        insert = asyncio.ensure_future(writer.insert_rows([_row("waits")], inline=True))
        await asyncio.sleep(0.2)
        assert not insert.done()  # this line ran: the loop was not held by the lock
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        await insert
        await writer.insert_rows([_row("alone")], inline=True)  # the lock is free again

    try:
        asyncio.run(main())
    finally:
        os.close(lock_file)
    writer.stop()
    assert writer.stats.inline == 1 and writer.stats.commits == 2
    assert _count(store) == 2
