"""Per-minute roll-ups of the ledger: what window reads (timelines, counts) are answered from.

The writer adds every group's ledger rows to ``ledger_rollups`` in the transaction that inserts
them (:func:`summed`, the upsert's parameters): one upsert per minute, model, version, segment, consumer and shadow flag,
summed in Python first, so the hot path pays one small ``executemany`` per group, not a
statement per row. A read over a window then reads the roll-ups of its whole minutes and the
ledger rows of the partial minutes at its two ends (:func:`minutes_of`), so its cost follows
the window's minutes, not the traffic in it. Roll-ups stay when ledger rows are archived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .archive import Archive, merged
from .tables import ledger_rollups, predictions

MINUTE = 60

# Positions in the tuples modelport.ledger.ledger_row builds (PREDICTION_COLUMNS).
_ROWS, _TS, _MODEL, _VERSION, _CONSUMER, _LATENCY, _SHADOW, _SEGMENT = 1, 3, 4, 5, 7, 11, 15, 17
_KEY = ("model", "minute", "version", "segment", "consumer", "shadow")
_VALUES = ("requests", "rows", "latency_sum", "latency_max")


def upsert_statement(dialect: str, paramstyle: str) -> str:
    """The roll-up upsert for a dialect and the driver's parameter style."""
    mark = "?" if paramstyle == "qmark" else "%s"
    columns = (*_KEY, *_VALUES)
    biggest = "max" if dialect == "sqlite" else "GREATEST"
    return (
        f"INSERT INTO ledger_rollups ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))}) "
        f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
        "requests = ledger_rollups.requests + excluded.requests, "
        "rows = ledger_rollups.rows + excluded.rows, "
        "latency_sum = ledger_rollups.latency_sum + excluded.latency_sum, "
        f"latency_max = {biggest}(ledger_rollups.latency_max, excluded.latency_max)"
    )


def summed(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Ledger row tuples summed per roll-up key: the upsert's parameters."""
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        key = (
            r[_MODEL],
            int(r[_TS] // MINUTE) * MINUTE,
            r[_VERSION],
            r[_SEGMENT] or "",
            r[_CONSUMER],
            bool(r[_SHADOW]),
        )
        cell = cells.get(key)
        if cell is None:
            cells[key] = [1, r[_ROWS], r[_LATENCY], r[_LATENCY]]
        else:
            cell[0] += 1
            cell[1] += r[_ROWS]
            cell[2] += r[_LATENCY]
            if r[_LATENCY] > cell[3]:
                cell[3] = r[_LATENCY]
    # A fixed order: two writers (replicas) upserting the same keys lock them in one order.
    return [(*key, *cell) for key, cell in sorted(cells.items())]


def add(conn: Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Count ledger row tuples into the roll-ups (in the caller's transaction)."""
    params = summed(rows)
    if params:
        conn.exec_driver_sql(statement, params)


def minutes_of(since: float, until: float) -> tuple[int, int]:
    """The whole minutes inside ``[since, until)``: ``[first, end)``, both multiples of 60
    (``first >= end`` when there is none)."""
    return math.ceil(since / MINUTE) * MINUTE, math.floor(until / MINUTE) * MINUTE


def edges(since: float, until: float) -> list[tuple[float, float]]:
    """The partial minutes at the two ends of ``[since, until)``, read from the ledger."""
    first, end = minutes_of(since, until)
    if first >= end:
        return [(since, until)]
    return [(a, b) for a, b in ((since, float(first)), (float(end), until)) if b > a]


def _scope(
    table: sa.Table,
    time: sa.Column[Any],
    model: str,
    lo: float,
    hi: float,
    filters: dict[str, Any],
    shadow: bool | None,
) -> list[Any]:
    """A model's rows of ``table`` with ``lo <= time < hi``, of the version, consumer and
    segment in ``filters`` that are not None; shadow copies or not, or both (None)."""
    where = [table.c.model == model, time >= lo, time < hi]
    if shadow is not None:
        where.append(table.c.shadow == shadow)
    where += [table.c[name] == value for name, value in filters.items() if value is not None]
    return where


def rollup_scope(
    model: str,
    first: int,
    end: int,
    *,
    version: int | None = None,
    consumer: str | None = None,
    segment: str | None = None,
    shadow: bool | None = False,
) -> list[Any]:
    """Conditions on the roll-ups of a model's whole minutes ``[first, end)``."""
    filters = {"version": version, "consumer": consumer, "segment": segment}
    return _scope(ledger_rollups, ledger_rollups.c.minute, model, first, end, filters, shadow)


def ledger_scope(
    model: str,
    since: float,
    until: float,
    *,
    version: int | None = None,
    consumer: str | None = None,
    segment: str | None = None,
) -> list[Any]:
    """The same conditions on the ledger rows of ``[since, until)`` (shadow copies left out)."""
    filters = {"version": version, "consumer": consumer, "segment": segment}
    return _scope(predictions, predictions.c.ts, model, since, until, filters, False)


def counts(
    conn: Connection,
    model: str,
    since: float,
    until: float,
    *,
    version: int | None = None,
    consumer: str | None = None,
    segment: str | None = None,
    archive: Archive | None = None,
) -> dict[int, int]:
    """Predictions (rows) per version in ``[since, until)``, shadow copies left out: the
    roll-ups of the whole minutes and the ledger rows of the partial ones (archived rows too,
    when the ``archive`` is given)."""
    out: dict[int, int] = {}
    filters: dict[str, Any] = {"version": version, "consumer": consumer, "segment": segment}
    first, end = minutes_of(since, until)
    if first < end:
        for r in conn.execute(
            sa.select(ledger_rollups.c.version, sa.func.sum(ledger_rollups.c.rows).label("n"))
            .where(*rollup_scope(model, first, end, **filters))
            .group_by(ledger_rollups.c.version)
        ):
            out[int(r.version)] = out.get(int(r.version), 0) + int(r.n or 0)
    for a, b in edges(since, until):
        hot = conn.execute(
            sa.select(predictions.c.id, predictions.c.version, predictions.c.rows).where(
                *ledger_scope(model, a, b, **filters)
            )
        ).all()
        cold = (
            archive.window(conn, model, a, b, columns=("version", "rows"), **filters)
            if archive
            else []
        )
        for r in merged(hot, cold):
            out[int(r.version)] = out.get(int(r.version), 0) + int(r.rows)
    return out


def per_minute(
    conn: Connection,
    model: str,
    since: float,
    until: float,
    *,
    version: int | None = None,
    segment: str | None = None,
) -> list[tuple[int, int]]:
    """Predictions (rows, shadow copies left out) per minute that starts in the window."""
    first = math.floor(since / MINUTE) * MINUTE
    minute = ledger_rollups.c.minute
    return [
        (int(r.minute), int(r.n))
        for r in conn.execute(
            sa.select(minute, sa.func.sum(ledger_rollups.c.rows).label("n"))
            .where(*rollup_scope(model, first, math.ceil(until), version=version, segment=segment))
            .group_by(minute)
        )
    ]


def rebuild(conn: Connection) -> None:
    """Recount every roll-up from the rows in the ledger table, after rows were changed in
    place (tests that move traffic back in time). The minutes of archived rows are lost:
    not for a store whose retention archived anything."""
    conn.execute(ledger_rollups.delete())
    minute = sa.cast(sa.func.floor(predictions.c.ts / MINUTE), sa.BigInteger) * MINUTE
    if conn.dialect.name == "sqlite":  # ts >= 0: truncation is floor
        minute = sa.cast(predictions.c.ts / MINUTE, sa.Integer) * MINUTE
    segment = sa.func.coalesce(predictions.c.segment, "")
    keys: tuple[Any, ...] = (predictions.c.model, minute, predictions.c.version, segment)
    keys += (predictions.c.consumer, predictions.c.shadow)
    conn.execute(
        ledger_rollups.insert().from_select(
            [*_KEY, *_VALUES],
            sa.select(
                *keys,
                sa.func.count(),
                sa.func.sum(predictions.c.rows),
                sa.func.sum(predictions.c.latency_ms),
                sa.func.max(predictions.c.latency_ms),
            ).group_by(*keys),
        )
    )
