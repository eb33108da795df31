"""How long a minimal commit takes on a store's engine, back to back and after other work.

Every prediction is committed before its answer goes out. Under load one commit serves a
group of requests, one right after another. With one request at a time each answer waits for
a commit of its own, and that commit comes a request's work after the one before: on some
disks, virtual ones above all, a flush that follows an idle gap costs several times one that
follows another flush at once (docs/deploy.md, "Latency: one flush before each answer"). So
the probe times commits after chosen gaps of busy CPU, the gaps in turn round after round.

A minimal commit is, on SQLite, one row inserted into a database of the probe's own in the
store's folder, in WAL mode with the store's ``synchronous`` setting (the file is removed
afterwards); on PostgreSQL, a transaction on a connection of the store that writes one
logical-decoding message to the write-ahead log (prefix ``modelport-commit-probe``, empty;
nothing goes into any table), so that its commit is flushed as a ledger commit is (a
transaction that wrote nothing to the log commits without a flush). Used by
``modelport ledger commit-time`` and bench/flush_gap.py.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ..errors import InvalidInput
from . import Store


def spin(seconds: float) -> None:
    """Keep the CPU busy for ``seconds``, as a server working on a request does."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def summary(spent: list[float]) -> dict[str, float]:
    """Mean, p50, p90 and p99 of ``spent`` (seconds), in milliseconds, and the count."""
    ordered = sorted(spent)
    n = len(ordered)
    return {
        "commits": n,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "p50_ms": ordered[n // 2] * 1e3,
        "p90_ms": ordered[int(n * 0.9)] * 1e3,
        "p99_ms": ordered[min(n - 1, int(n * 0.99))] * 1e3,
    }


#: The longest gap ``parse_gaps`` takes, in microseconds.
MOST_GAP_US = 100_000


def parse_gaps(text: str) -> list[float]:
    """Comma-separated microseconds, each from 0 to ``MOST_GAP_US``, as sorted seconds without
    repeats; ValueError naming the part that is not one."""
    gaps = set()
    for part in text.split(","):
        try:
            gap = float(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a number of microseconds") from None
        if not 0 <= gap <= MOST_GAP_US:
            raise ValueError(f"{part.strip()} is outside 0-{MOST_GAP_US} microseconds")
        gaps.add(gap / 1e6)
    return sorted(gaps)


def timed(
    commit: Callable[[], Any],
    gaps_s: list[float],
    *,
    commits: int,
    rounds: int = 1,
    wait: Callable[[float], None] = spin,
) -> dict[float, dict[str, float]]:
    """``commit()`` timed ``commits`` times per gap and round, each after ``wait(gap)``; the
    gaps in turn (reversed every other round), so a drift of the machine falls on all of them
    alike. The first commit after a change of gap is not counted: it follows the last gap.
    ``summary`` per gap."""
    spent: dict[float, list[float]] = {gap: [] for gap in gaps_s}
    for r in range(rounds):
        for gap in gaps_s if r % 2 == 0 else list(reversed(gaps_s)):
            commit()
            for _ in range(commits):
                if gap:
                    wait(gap)
                started = time.perf_counter()
                commit()
                spent[gap].append(time.perf_counter() - started)
    return {gap: summary(s) for gap, s in spent.items()}


def _sqlite_folder(store: Store) -> Path | None:
    """The folder of a SQLite store's database file; None for an in-memory one."""
    database = make_url(store.url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().parent


def where(store: Store) -> str:
    """What the probe commits to: the SQLite store's folder, or the PostgreSQL server."""
    if store.dialect == "sqlite":
        return str(_sqlite_folder(store) or ":memory:")
    url = make_url(store.url)
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def journal(store: Store, sys_root: Path = Path("/sys")) -> dict[str, Any] | None:
    """Whether a SQLite store's folder is on ext4 with a journal, as Linux's sysfs says:
    ``{"device": "vda", "journal": False}``; None where that cannot be told (another file
    system or system, PostgreSQL, an in-memory store). Without a journal, ext4's
    ``fdatasync`` also writes a file's inode whenever a write moved its time stamps, one more
    wait for the disk on many one-at-a-time commits (docs/deploy.md)."""
    folder = _sqlite_folder(store) if store.dialect == "sqlite" else None
    if folder is None:
        return None
    try:
        dev = folder.stat().st_dev
        device = (sys_root / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}").resolve()
        task = (sys_root / "fs" / "ext4" / device.name / "journal_task").read_text().strip()
    except OSError:
        return None
    return {"device": device.name, "journal": task != "<none>"}


#: The prefix of the PostgreSQL probe's logical-decoding messages.
MESSAGE_PREFIX = "modelport-commit-probe"


@contextlib.contextmanager
def minimal_commits(
    store: Store, *, sqlite_synchronous: str = "FULL"
) -> Iterator[Callable[[], str | None]]:
    """A function that makes one minimal commit on ``store``'s engine (see the module) and
    returns, on PostgreSQL, the log position of the message it committed; and the clean-up
    of what it needed when the block ends."""
    if store.dialect == "sqlite":
        folder = _sqlite_folder(store)
        if folder is None:
            raise InvalidInput(
                "an in-memory SQLite store writes nothing to disk: there is no commit to time",
                details=[{"field": "store", "reason": "in-memory SQLite"}],
            )
        with _sqlite_commits(folder, sqlite_synchronous) as commit:
            yield commit
        return
    raw = store.write_engine.raw_connection()
    try:
        cursor = raw.cursor()

        def commit() -> str:
            cursor.execute(f"SELECT pg_logical_emit_message(true, '{MESSAGE_PREFIX}', '')")
            (position,) = cursor.fetchone() or ("",)
            raw.commit()
            return str(position)

        yield commit
        cursor.close()
    finally:
        raw.close()


@contextlib.contextmanager
def _sqlite_commits(folder: Path, synchronous: str) -> Iterator[Callable[[], str | None]]:
    path = folder / f"commit-probe-{os.getpid()}.db"
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)")

        def commit() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO probe (at) VALUES (?)", (time.time(),))
            conn.execute("COMMIT")

        yield commit
    finally:
        conn.close()
        for file in files:
            file.unlink(missing_ok=True)
