"""Group commit: one thread owns every write of a server process.

Request handlers hand the writer a job (ledger rows as tuples, or a function over a connection) and
await it. The thread takes every job that is waiting, runs them all in one transaction and
commits once, then answers the jobs: the ones awaited on an event loop with one call into that
loop per group (a thread-safe wake-up per request would cost more than its insert). While one commit is on its way to disk, the next group forms,
so durability costs one fsync per group rather than one per request. Each function job runs in its
own savepoint, so one that fails is answered with its own error and does not fail the others.

A caller that knows its request is all the process is serving (one connection open, nothing
else scoring: see :meth:`modelport.serving.engine.Engine.alone`) may have its rows committed
on its own thread instead (``insert_rows(rows, inline=True)``), when the writer has nothing
queued and is not committing, and the store's write lock is free (SQLite: no other process is
writing; the caller's thread never waits for it): the same transaction on the writer's
connection, under the lock every commit holds. Its thread waits for the flush, but has nothing
else to do, and the hand-over to the writer thread and the wake-up back (two context switches,
a thread-safe call into the event loop) are saved: 2-8 % of a 1-row request's CPU at one
connection.

On SQLite a second thread copies the write-ahead log into the database every
``checkpoint_seconds`` (a passive checkpoint: it never blocks the writer; none after a round
in which the writer committed nothing), so that the commit that crosses SQLite's checkpoint
threshold, and every answer waiting for it, does not do that copy and its fsync itself. The
interval is short so that each copy's flush of the database file, which a commit's own flush
can wait behind, stays small. The writer keeps a far higher threshold of its own as a
backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import Conflict, InvalidInput, ModelportError, StoreUnavailable
from ..ledger import insert_statement
from . import Store, rollups, unavailable

log = logging.getLogger("modelport.writer")

T = TypeVar("T")


@dataclass(slots=True)
class _Job:
    # Answered through a concurrent future (threads) or an asyncio future on its loop.
    future: Future[Any] | asyncio.Future[Any]
    rows: list[tuple[Any, ...]] | None = None
    fn: Callable[[Connection], Any] | None = None
    live: bool = True  # False when the caller gave up waiting; the work is still done
    loop: asyncio.AbstractEventLoop | None = None


@dataclass
class WriterStats:
    """Counters the monitoring layer reads."""

    commits: int = 0
    jobs: int = 0
    wakeups: int = 0  # calls into event loops to answer awaited jobs
    rows: int = 0
    failures: int = 0
    checkpoints: int = 0  # background checkpoints run (SQLite)
    inline: int = 0  # commits made on a caller's thread (insert_rows(inline=True))


#: A job, whether it succeeded, and its result or error.
_Outcome = tuple[_Job, bool, Any]

_STOP = object()
#: The write-ahead log's size (pages) past which the writer checkpoints itself when the
#: checkpoint thread runs: ten times SQLite's 1000, only reached if that thread falls behind.
_BACKSTOP_PAGES = 10_000


class Writer:
    """The single writing thread of a process, with group commit."""

    def __init__(
        self, store: Store, *, max_batch: int = 512, checkpoint_seconds: float = 0.0
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        # SQLite only: the background checkpoints' interval (0: the writer checkpoints itself).
        self.checkpoint_seconds = checkpoint_seconds if store.dialect == "sqlite" else 0.0
        self.stats = WriterStats()
        # Told of each group commit, from the thread that made it: (seconds, jobs, inline), or
        # (None, jobs, inline) for writes the store refused; inline: on a caller's thread.
        self.observer: Callable[[float | None, int, bool], None] | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._insert_sql = insert_statement(store.write_engine.dialect.paramstyle)
        self._rollup_sql = rollups.upsert_statement(
            store.dialect, store.write_engine.dialect.paramstyle
        )
        self._thread = threading.Thread(target=self._run, name="modelport-writer", daemon=True)
        self._checkpointer = threading.Thread(
            target=self._checkpoints, name="modelport-checkpoint", daemon=True
        )
        self._no_more_checkpoints = threading.Event()
        # Held by every commit and by the connection's end: the writer thread's groups and
        # callers' inline commits take turns on the one connection.
        self._commit_lock = threading.Lock()
        self._conn: Connection | None = None  # the thread's own, kept between groups
        self._started = False
        self._stopped = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()
            if self.checkpoint_seconds > 0:
                self._checkpointer.start()

    def stop(self) -> None:
        """Commit everything queued so far, then end the threads."""
        if self._started and not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
            self._thread.join()
            self._no_more_checkpoints.set()
            if self._checkpointer.is_alive():
                self._checkpointer.join()

    # -- submitting -------------------------------------------------------------------------

    def submit_rows(self, rows: list[tuple[Any, ...]]) -> Future[None]:
        """Queue ledger rows; the future resolves once they are committed."""
        future: Future[None] = Future()
        self._submit(_Job(future, rows=rows))
        return future

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        """Queue ``fn(conn)``; the future resolves with its result once committed."""
        future: Future[T] = Future()
        self._submit(_Job(future, fn=fn))
        return future

    async def insert_rows(self, rows: list[tuple[Any, ...]], *, inline: bool = False) -> None:
        """Queue ledger rows and wait until they are committed.

        ``inline``: commit them on this thread, blocking it until they are durable, when
        nothing is queued or committing and no other process is writing to the store (else
        they are queued as usual: this thread never waits for a lock); for a caller whose
        request is all the process is serving.
        """
        done = self._commit_here(rows) if inline else None
        if done is None:
            await self._submit_async(_Job(None, rows=rows))  # type: ignore[arg-type]
            return
        done.result()  # raises the store's refusal, as the queued way does

    def _commit_here(self, rows: list[tuple[Any, ...]]) -> Future[None] | None:
        """Commit ``rows`` on this thread, if that needs no waiting; their answer, or None."""
        if not self._queue.empty() or not self._commit_lock.acquire(blocking=False):
            return None
        try:
            if self._stopped:
                raise StoreUnavailable("the server is shutting down")
            with self.store.write_lock_now() as free:
                if not free:  # another process is writing: this thread must not wait for it
                    return None
                done: Future[None] = Future()
                outcomes = self._commit_group([_Job(done, rows=rows)], inline=True)
        finally:
            self._commit_lock.release()
        _answer(outcomes)
        if done.exception() is None:
            self.stats.inline += 1
        return done

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in the next group; its result once committed."""
        result: T = await self._submit_async(_Job(None, fn=fn))  # type: ignore[arg-type]
        return result

    def _submit_async(self, job: _Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job.future = future
        job.loop = loop
        self._submit(job)
        return future

    def _submit(self, job: _Job) -> None:
        if self._stopped:
            raise StoreUnavailable("the server is shutting down")
        self._queue.put(job)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with self._commit_lock:
                self._drop_connection()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs: list[_Job] = [first]
            stop_after = False
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                jobs.append(nxt)
            for job in jobs:
                # From here a caller's cancel() no longer succeeds; a job cancelled earlier is
                # still written (its rows were predicted) but nobody is answered.
                if isinstance(job.future, Future):
                    job.live = job.future.set_running_or_notify_cancel()
            with self._commit_lock:
                outcomes = self._commit_group(jobs)
            # Answered once the lock is let go: a caller woken by its answer finds it free.
            self.stats.wakeups += _answer(outcomes)
            if stop_after:
                return

    def _commit_group(self, jobs: list[_Job], inline: bool = False) -> list[_Outcome]:
        """Commit the jobs in one transaction (each alone if that fails); their outcomes, for
        the caller to answer once it has let the commit lock go."""
        started = time.perf_counter()
        try:
            results = self._execute(jobs)
        except Exception as exc:  # the group failed as a whole: try each job on its own
            if len(jobs) > 1:
                return [out for job in jobs for out in self._commit_group([job], inline)]
            self.stats.failures += 1
            if self.observer is not None:
                self.observer(None, 1, inline)
            return [(jobs[0], False, _translate(exc))]
        elapsed = (time.perf_counter() - started) * 1000
        if self.observer is not None:
            self.observer(elapsed / 1000, len(jobs), inline)
        self.stats.commits += 1
        self.stats.jobs += len(jobs)
        return [(job, ok, value) for job, (ok, value) in zip(jobs, results, strict=True)]

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.store.write_engine.connect()
            if self.checkpoint_seconds > 0:
                # The checkpoint thread copies the log; the writer only past this backstop.
                driver: Any = self._conn.connection.driver_connection
                driver.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}").close()
        return self._conn

    def _checkpoints(self) -> None:
        """The checkpoint thread: a passive checkpoint every ``checkpoint_seconds`` on a
        connection of its own, until the writer stops (then one last one). A round after
        which the writer has committed nothing is skipped: an idle server runs none."""
        raw: Any = None
        copied = -1  # the writer's commit count at the last checkpoint
        while True:
            stopping = self._no_more_checkpoints.wait(self.checkpoint_seconds)
            commits = self.stats.commits
            if commits == copied and not stopping:
                continue
            try:
                if raw is None:
                    raw = self.store.read_engine.raw_connection()
                raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                copied = commits
                self.stats.checkpoints += 1
            except Exception as exc:  # the writer's own backstop still bounds the log
                # Another process's checkpoint running ("locked"): the next one will do.
                if "locked" not in str(exc) and "busy" not in str(exc):
                    log.warning("background checkpoint failed: %s", exc)
                    if raw is not None:
                        with contextlib.suppress(Exception):
                            raw.invalidate()
                        raw = None
            if stopping:
                break
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()

    def _drop_connection(self) -> None:
        """Give the kept connection up (after a failed group it may be broken; the next group
        takes a fresh one from the pool, which checks it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _execute(self, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        try:
            return self._execute_on(self._connection(), jobs)
        except Exception:
            self._drop_connection()
            raise

    def _insert(self, executemany: Callable[[str, Any], Any], rows: list[tuple[Any, ...]]) -> None:
        """Ledger rows (tuples of plain values, to the driver's executemany as they are) and
        the minutes' roll-ups, in the caller's transaction: the roll-ups count what commits."""
        executemany(self._insert_sql, rows)
        executemany(self._rollup_sql, rollups.summed(rows))
        self.stats.rows += len(rows)

    def _execute_on(self, conn: Connection, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        if all(job.fn is None for job in jobs):
            # Ledger rows only, the serving path: straight to the driver, which costs a
            # third of what the same statements cost through SQLAlchemy's execution layer.
            rows = [row for job in jobs if job.rows for row in job.rows]
            if not rows:
                return [(True, None)] * len(jobs)
            with self.store.driver_transaction_on(conn) as cur:
                self._insert(cur.executemany, rows)
            return [(True, None)] * len(jobs)
        results: list[tuple[bool, Any]] = []
        with self.store.transaction_on(conn):
            rows = [row for job in jobs if job.rows for row in job.rows]
            if rows:
                self._insert(conn.exec_driver_sql, rows)
            for job in jobs:
                if job.fn is None:
                    results.append((True, None))
                    continue
                savepoint = conn.begin_nested()
                try:
                    value = job.fn(conn)
                except Exception as exc:
                    savepoint.rollback()
                    results.append((False, _translate(exc)))
                else:
                    savepoint.commit()
                    results.append((True, value))
        return results


def _answer(outcomes: list[_Outcome]) -> int:
    """Settle the jobs' futures: thread futures here, loop futures with one call per loop.

    Returns how many calls into event loops that took.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
    for outcome in outcomes:
        job = outcome[0]
        if job.loop is not None:
            by_loop.setdefault(job.loop, []).append(outcome)
        elif job.live:
            _settle(job.future, outcome[1], outcome[2])
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_all, items)
    return len(by_loop)


def _settle_all(items: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in items:
        if not job.future.done():  # a caller that gave up has a cancelled future
            _settle(job.future, ok, value)


def _settle(future: Future[Any] | asyncio.Future[Any], ok: bool, value: Any) -> None:
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def unstorable(exc: sa.exc.DataError) -> InvalidInput:
    """A value the database cannot hold or compare (a NUL character in text on PostgreSQL, a
    number out of a column's range): bad input, not an unavailable store."""
    return InvalidInput(
        f"a value in the request cannot be stored or looked up: {exc.orig}",
        details=[{"field": None, "reason": str(exc.orig)}],
    )


def _translate(exc: BaseException) -> BaseException:
    """Database errors as the service's errors; ours pass through."""
    if isinstance(exc, ModelportError):
        return exc
    if isinstance(exc, sa.exc.IntegrityError):
        # Another process wrote the same row first (e.g. two pushes numbering a version).
        return Conflict(f"a concurrent change conflicted; try again ({exc.orig})")
    if isinstance(exc, sa.exc.DataError):
        return unstorable(exc)
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        unavailable.report(exc)
        return StoreUnavailable(f"the store refused the write: {exc.orig}")
    log.error("store write failed", exc_info=exc)
    return StoreUnavailable(f"the store refused the write: {exc}")
