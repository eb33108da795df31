"""Retention: ledger rows older than their model's window move to the Parquet archive.

A model keeps its ledger rows for ``ledger_retention_days`` (its serving setting, else the
server's; 0 keeps them for ever). A pass takes, per model, the oldest rows past the window in
batches of ``ledger_archive_batch`` ledger rows, and for each batch, in this order:

1. writes one Parquet file per UTC day into the artifact store (content-addressed);
2. lists the files in ``ledger_archive`` (one transaction);
3. deletes the batch's rows from the hot table, a few thousand per transaction.

A crash after 1 leaves an unlisted file and the rows in place (the next pass writes the same
bytes again); after 2, the rows in both places, which reads tell apart by id. Rows are never in
neither. In a server the pass runs in a worker thread, and its writes are small jobs of the
writer thread (group commit), so it never holds the writer or the event loop for long.

Tests stop a pass at a named step with ``MODELPORT_TEST_ARCHIVE_PAUSE=STEP:FILE`` (``written``,
``registered`` or ``deleted``): the pass creates FILE and waits there for ever, to be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import InvalidRequest
from . import archive
from .tables import ledger_archive, models, predictions

if TYPE_CHECKING:
    from ..runtime import Runtime
    from . import Store
    from .artifacts import ArtifactStore

log = logging.getLogger("modelport.retention")
T = TypeVar("T")

DAY = 86400.0
#: Ledger rows deleted per transaction: short, so the writer's other work never waits long.
DELETE_CHUNK = 2000
PAUSE_ENV = "MODELPORT_TEST_ARCHIVE_PAUSE"
#: Runs ``fn(conn)`` in a write transaction and returns its result.
Write = Callable[[Callable[[Connection], Any]], Any]


def retention_days(serving: dict[str, Any] | None, default: float) -> float:
    """A model's retention in days: its own setting, else the server's."""
    value = (serving or {}).get("ledger_retention_days")
    return float(default if value is None else value)


def start_check(settings: Any) -> None:
    """Refuse to start with a retention that could not archive (no pyarrow)."""
    if settings.ledger_retention_days > 0 and not archive.available():
        raise InvalidRequest(f"ledger_retention_days: {archive.NEEDS_PYARROW}")


def _pause_at(step: str) -> None:
    """The test hook: stop here for ever when told to (see the module docstring)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    name, _, marker = wanted.partition(":")
    if name == step:
        Path(marker).write_text(step)
        while True:
            time.sleep(3600)


def archive_batch(
    store: Store, artifacts: ArtifactStore, write: Write, model: str, cutoff: float, limit: int
) -> tuple[int, int]:
    """Archive (then delete) the oldest ``limit`` ledger rows of ``model`` before ``cutoff``;
    (ledger rows, predictions) moved."""
    with store.read() as conn:
        rows = conn.execute(
            archive.select_rows()
            .where(predictions.c.model == model, predictions.c.ts < cutoff)
            .order_by(predictions.c.ts)
            .limit(limit)
        ).all()
    if not rows:
        return 0, 0
    by_day: dict[str, list[Any]] = {}
    for r in rows:
        by_day.setdefault(archive.day_of(r.ts), []).append(r)
    entries = []
    for day_rows in by_day.values():
        sha, size = artifacts.put(io.BytesIO(archive.parquet_bytes(day_rows)))
        entries.append(archive.entry(day_rows, sha, size))
    _pause_at("written")
    write(lambda conn: archive.register(conn, entries))
    _pause_at("registered")
    ids = [r.id for r in rows]
    for start in range(0, len(ids), DELETE_CHUNK):
        write(functools.partial(_delete, ids=ids[start : start + DELETE_CHUNK]))
    _pause_at("deleted")
    return len(rows), sum(r.rows for r in rows)


def _delete(conn: Connection, ids: list[str]) -> None:
    conn.execute(predictions.delete().where(predictions.c.id.in_(ids)))


def archive_pass(
    store: Store,
    artifacts: ArtifactStore,
    write: Write,
    *,
    default_days: float,
    batch: int,
    now: float | None = None,
    model: str | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Archive every model's rows past its retention (or one model's); what moved."""
    now = time.time() if now is None else now
    with store.read() as conn:
        query = sa.select(models.c.name, models.c.serving)
        if model is not None:
            query = query.where(models.c.name == model)
        windows = {r.name: retention_days(r.serving, default_days) for r in conn.execute(query)}
    due = {name: days for name, days in windows.items() if days > 0}
    if due:
        archive.require()
    started = time.perf_counter()
    moved: dict[str, dict[str, int]] = {}
    for name, days in sorted(due.items()):
        cutoff = now - days * DAY
        total = moved.setdefault(name, {"requests": 0, "predictions": 0})
        while stop is None or not stop.is_set():
            requests, preds = archive_batch(store, artifacts, write, name, cutoff, batch)
            total["requests"] += requests
            total["predictions"] += preds
            if requests < batch:
                break
    seconds = time.perf_counter() - started
    rows = sum(m["predictions"] for m in moved.values())
    return {
        "models": moved,
        "predictions": rows,
        "seconds": seconds,
        "predictions_per_second": rows / seconds if seconds > 0 and rows else None,
    }


class Retention:
    """The server's background archive loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()

    def _write(self, fn: Callable[[Connection], T]) -> T:
        result: T = self.runtime.writer.submit(fn).result()
        return result

    def run_once(self, model: str | None = None) -> dict[str, Any]:
        """One pass (in a worker thread): every write goes through the writer thread."""
        settings = self.runtime.settings
        return archive_pass(
            self.runtime.store,
            self.runtime.artifacts,
            self._write,
            default_days=settings.ledger_retention_days,
            batch=settings.ledger_archive_batch,
            model=model,
            stop=self._stop,
        )

    async def run(self, stopping: asyncio.Event, interval: float) -> None:
        """A pass every ``interval`` seconds until ``stopping`` is set."""
        waiter = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), interval)
                    break
                try:
                    moved = await asyncio.to_thread(self.run_once)
                except Exception as exc:  # the store or the artifacts may be briefly away
                    log.warning("ledger archive failed: %s", exc)
                    continue
                if moved["predictions"]:
                    log.info(
                        "archived %d predictions in %.1f s", moved["predictions"], moved["seconds"]
                    )
        finally:
            waiter.cancel()

    def stop(self) -> None:
        """Let a pass in progress end after its current batch."""
        self._stop.set()


# -- status and verification ------------------------------------------------------------------


def _hot_bytes(conn: Connection) -> int | None:
    """Bytes the hot ledger takes: the table and its indexes (None where unknown)."""
    if conn.dialect.name == "postgresql":
        return int(
            conn.exec_driver_sql("SELECT pg_total_relation_size('predictions')").scalar_one()
        )
    try:
        return int(
            conn.exec_driver_sql(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'predictions' "
                "OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'predictions')"
            ).scalar_one()
            or 0
        )
    except sa.exc.OperationalError:  # SQLite built without the dbstat table
        return None


def status(conn: Connection, default_days: float) -> dict[str, Any]:
    """Per model: hot rows and their age, retention, archive files; totals with bytes."""
    hot = {
        r.model: r
        for r in conn.execute(
            sa.select(
                predictions.c.model,
                sa.func.count().label("requests"),
                sa.func.coalesce(sa.func.sum(predictions.c.rows), 0).label("predictions"),
                sa.func.min(predictions.c.ts).label("oldest"),
            ).group_by(predictions.c.model)
        )
    }
    cold = {
        r.model: r
        for r in conn.execute(
            sa.select(
                ledger_archive.c.model,
                sa.func.count().label("files"),
                sa.func.count(sa.distinct(ledger_archive.c.day)).label("partitions"),
                sa.func.sum(ledger_archive.c.predictions).label("predictions"),
                sa.func.sum(ledger_archive.c.size_bytes).label("bytes"),
                sa.func.min(ledger_archive.c.min_ts).label("oldest"),
            ).group_by(ledger_archive.c.model)
        )
    }
    serving = {r.name: r.serving for r in conn.execute(sa.select(models.c.name, models.c.serving))}
    out = []
    for name in sorted(set(hot) | set(cold) | set(serving)):
        h, c = hot.get(name), cold.get(name)
        out.append(
            {
                "model": name,
                "retention_days": retention_days(serving.get(name), default_days),
                "hot_requests": int(h.requests) if h else 0,
                "hot_predictions": int(h.predictions) if h else 0,
                "oldest_hot": float(h.oldest) if h else None,
                "archive_files": int(c.files) if c else 0,
                "archive_partitions": int(c.partitions) if c else 0,
                "archived_predictions": int(c.predictions) if c else 0,
                "archive_bytes": int(c.bytes) if c else 0,
                "oldest_archived": float(c.oldest) if c else None,
            }
        )
    return {
        "models": out,
        "hot_bytes": _hot_bytes(conn),
        "archive_bytes": sum(m["archive_bytes"] for m in out),
    }


def verify(conn: Connection, artifacts: ArtifactStore) -> dict[str, Any]:
    """Recount every listed file against its registry entry: present, its sha256, its rows,
    predictions, ids and times. The problems found (empty: all agree)."""
    from .artifacts import sha256_file

    reader = archive.Archive(artifacts)
    problems: list[dict[str, Any]] = []
    files = conn.execute(sa.select(ledger_archive).order_by(ledger_archive.c.id)).all()
    checked = 0
    for f in files:
        try:
            path = artifacts.local_path(f.sha256)
        except Exception as exc:
            problems.append({"sha256": f.sha256, "problem": f"missing: {exc}"})
            continue
        if sha256_file(path) != f.sha256:
            problems.append({"sha256": f.sha256, "problem": "content does not match its sha256"})
            continue
        rows = reader.read(f.sha256, columns=("id", "rows", "ts", "model"))
        last = max(rows, key=lambda r: r.id, default=None)
        found = {
            "requests": len(rows),
            "predictions": sum(r.rows for r in rows),
            "first_id": min((r.id for r in rows), default=None),
            "last_id": archive.last_id(last.id, last.rows) if last is not None else None,
            "model": {r.model for r in rows} == {f.model},
            "times": all(f.min_ts <= r.ts <= f.max_ts for r in rows),
        }
        listed = {
            "requests": f.requests,
            "predictions": f.predictions,
            "first_id": f.first_id,
            "last_id": f.last_id,
            "model": True,
            "times": True,
        }
        for key, value in listed.items():
            if found[key] != value:
                problems.append(
                    {"sha256": f.sha256, "problem": f"{key}: listed {value}, found {found[key]}"}
                )
        checked += 1
    return {"files": len(files), "checked": checked, "problems": problems}


def logged(
    conn: Connection,
    reader: archive.Archive,
    model: str,
    since: float | None,
    until: float | None,
) -> list[Any]:
    """A model's ledger rows (shadow copies left out) in ``[since, until)``, from the table and
    the archive, once each, by id."""
    where = [predictions.c.model == model, predictions.c.shadow == sa.false()]
    if since is not None:
        where.append(predictions.c.ts >= since)
    if until is not None:
        where.append(predictions.c.ts < until)
    hot = conn.execute(archive.select_rows().where(*where).order_by(predictions.c.id)).all()
    cold = reader.window(conn, model, since, until)
    for row in cold:
        row.outputs = orjson.dumps(row.outputs).decode()  # as the table's rows read it
    return archive.merged(hot, cold)
