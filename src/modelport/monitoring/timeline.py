"""What a model's traffic looked like over time, per version: the dashboard's request charts.

Requests, rows and errors per time bucket are exact counts, latency mean and maximum exact
too. Buckets of a minute or more are summed from the ledger's per-minute roll-ups
(:mod:`modelport.store.rollups`: a minute counts in the bucket holding its middle), plus the
ledger rows of the partial minutes at the window's ends (their whole minute's roll-up once
archived), so the cost follows the window's minutes, not its traffic; shorter buckets group
the ledger rows themselves. Percentiles need
the values, so p50 and p95 come from a bounded sample (the newest ledger rows of the window)
and the response says how large it was. Shadow copies are left out: they answered nobody.

Also here: a model's newest predictions with their current feedback (the dashboard's
"recent predictions" table).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import ledger
from ..errors import InvalidInput
from ..registry import models as registry
from ..store import rollups
from ..store.tables import failures, feedback, ledger_rollups, predictions, versions
from ..timefmt import iso

#: The most ledger rows whose latencies are read for the percentiles (the newest in the window).
LATENCY_SAMPLE = 20_000
MAX_BUCKETS = 1000
MAX_RECENT = 200


def check_count(value: int, field: str, maximum: int) -> int:
    """A count parameter from 1 to ``maximum``; else a 422 naming ``field``."""
    if isinstance(value, bool) or not 1 <= value <= maximum:
        raise InvalidInput(
            f"{field}: expected 1 to {maximum}, got {value!r}",
            details=[{"field": field, "reason": f"not between 1 and {maximum}"}],
        )
    return value


def check_buckets(buckets: int) -> int:
    """A bucket count from 1 to MAX_BUCKETS (the timeline's and the performance report's)."""
    return check_count(buckets, "buckets", MAX_BUCKETS)


def _bucket_of(conn: Connection, ts: Any, since: float, width: float) -> Any:
    """The bucket index of ``ts`` as SQL: floor((ts - since) / width), ts >= since."""
    scaled = (ts - since) / width
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.floor(scaled), sa.Integer)
    return sa.cast(scaled, sa.Integer)  # SQLite truncates, which is floor for ts >= since


def timeline(
    conn: Connection,
    name: str,
    *,
    seconds: float,
    buckets: int,
    now: float | None = None,
    segment: str | None = None,
) -> dict[str, Any]:
    """Per version and time bucket over the last ``seconds``: requests, rows, errors, latency
    (of one segment's requests when given)."""
    model = registry.model_row(conn, name)  # 404 for an unknown model
    check_buckets(buckets)
    until = time.time() if now is None else now
    since = until - seconds
    width = seconds / buckets
    where = [
        predictions.c.model == name,
        predictions.c.shadow == sa.false(),
        predictions.c.ts >= since,
        predictions.c.ts < until,
    ]
    if segment is not None:
        where.append(predictions.c.segment == segment)
    bucket = _bucket_of(conn, predictions.c.ts, since, width).label("bucket")
    cells: dict[tuple[int, int], dict[str, Any]] = {}

    def cell(version: int, index: int) -> dict[str, Any]:
        index = min(max(index, 0), buckets - 1)  # float edges: keep the last instant inside
        return cells.setdefault(
            (version, index),
            {"requests": 0, "rows": 0, "errors": 0, "lat_sum": 0.0, "lat_max": None, "lat": []},
        )

    def add(r: Any, index: int) -> None:
        c = cell(int(r.version), index)
        c["requests"] += int(r.requests)
        c["rows"] += int(r.rows or 0)
        c["lat_sum"] += float(r.lat_sum or 0.0)
        c["lat_max"] = max(float(r.lat_max), c["lat_max"] or 0.0)

    spans = [(since, until)]
    first, end = rollups.minutes_of(since, until)
    if width >= rollups.MINUTE and first < end:
        # The partial minutes at the ends come from the ledger rows, unless the retention
        # took them to the archive: then from their whole minute's roll-up.
        oldest = conn.execute(
            sa.select(sa.func.min(predictions.c.ts)).where(predictions.c.model == name)
        ).scalar()
        spans = []
        for a, b in rollups.edges(since, until):
            whole = math.floor(a / rollups.MINUTE) * rollups.MINUTE
            if oldest is not None and oldest <= whole:
                spans.append((a, b))
            else:
                first, end = min(first, whole), max(end, whole + rollups.MINUTE)
        minute = ledger_rollups.c.minute
        for r in conn.execute(
            sa.select(
                ledger_rollups.c.version,
                minute,
                sa.func.sum(ledger_rollups.c.requests).label("requests"),
                sa.func.sum(ledger_rollups.c.rows).label("rows"),
                sa.func.sum(ledger_rollups.c.latency_sum).label("lat_sum"),
                sa.func.max(ledger_rollups.c.latency_max).label("lat_max"),
            )
            .where(*rollups.rollup_scope(name, first, end, segment=segment))
            .group_by(ledger_rollups.c.version, minute)
        ):
            add(r, math.floor((r.minute + rollups.MINUTE / 2 - since) / width))
    for a, b in spans:
        for r in conn.execute(
            sa.select(
                predictions.c.version,
                bucket,
                sa.func.count().label("requests"),
                sa.func.sum(predictions.c.rows).label("rows"),
                sa.func.sum(predictions.c.latency_ms).label("lat_sum"),
                sa.func.max(predictions.c.latency_ms).label("lat_max"),
            )
            # The span's own bounds only: with the window's too, SQLite may range over the
            # whole window in the time index.
            .where(*rollups.ledger_scope(name, a, b, segment=segment))
            .group_by(predictions.c.version, bucket)
        ):
            add(r, int(r.bucket))
    fbucket = _bucket_of(conn, failures.c.ts, since, width).label("bucket")
    failed = [
        failures.c.model == name,
        failures.c.ts >= since,
        failures.c.ts < until,
        sa.or_(failures.c.arm.is_(None), failures.c.arm != "shadow"),
    ]
    if segment is not None:  # failures have no segment: the segment's versions have
        failed.append(
            failures.c.version.in_(
                sa.select(versions.c.version).where(
                    versions.c.model_id == model.id, versions.c.segment == segment
                )
            )
        )
    for r in conn.execute(
        sa.select(failures.c.version, fbucket, sa.func.count().label("n"))
        .where(*failed)
        .group_by(failures.c.version, fbucket)
    ):
        cell(int(r.version), int(r.bucket))["errors"] += int(r.n)

    sample = conn.execute(
        sa.select(predictions.c.version, predictions.c.ts, predictions.c.latency_ms)
        .where(*where)
        .order_by(predictions.c.ts.desc())
        .limit(LATENCY_SAMPLE)
    ).all()
    for version, ts, latency in sample:
        cell(int(version), math.floor((ts - since) / width))["lat"].append(latency)
    total = sum(c["requests"] for c in cells.values())

    out_versions = []
    for version in sorted({v for v, _ in cells}):
        series = []
        for i in range(buckets):
            found = cells.get((version, i))
            start = since + i * width
            point: dict[str, Any] = {
                "start": iso(start),
                "end": iso(start + width),
                "requests": 0,
                "rows": 0,
                "errors": 0,
                "latency_ms": None,
            }
            if found is not None:
                c = found
                point.update(requests=c["requests"], rows=c["rows"], errors=c["errors"])
                if c["requests"]:
                    lat = np.asarray(c["lat"], dtype=float)
                    p50, p95 = np.percentile(lat, [50, 95]) if lat.size else (None, None)
                    point["latency_ms"] = {
                        "mean": c["lat_sum"] / c["requests"],
                        "p50": None if p50 is None else float(p50),
                        "p95": None if p95 is None else float(p95),
                        "max": c["lat_max"],
                        "sampled": int(lat.size),
                    }
            series.append(point)
        out_versions.append(
            {
                "version": version,
                "requests": sum(p["requests"] for p in series),
                "rows": sum(p["rows"] for p in series),
                "errors": sum(p["errors"] for p in series),
                "series": series,
            }
        )
    return {
        "model": name,
        "window": {"since": iso(since), "until": iso(until), "seconds": seconds},
        "bucket_seconds": width,
        "buckets": buckets,
        "latency_percentiles": {
            "method": "p50 and p95 over the newest ledger rows of the window (one latency per "
            "request); requests, rows, errors, mean and max are exact",
            "sample_limit": LATENCY_SAMPLE,
            "sampled": len(sample),
            "requests": total,
            "complete": len(sample) == total,
        },
        "versions": out_versions,
    }


def recent(conn: Connection, name: str, limit: int = 50) -> dict[str, Any]:
    """A model's newest predictions (shadow copies too, marked), newest first, each with its
    current label and reward (the newest of each) and how many feedback items it has."""
    registry.model_row(conn, name)
    check_count(limit, "limit", MAX_RECENT)
    rows = conn.execute(
        sa.select(predictions)
        .where(predictions.c.model == name)
        .order_by(predictions.c.id.desc())
        .limit(limit)
    ).all()
    records: list[dict[str, Any]] = []
    for row in rows:
        records.extend(reversed(ledger.records(row)))
        if len(records) >= limit:
            break
    records = records[:limit]
    if records:
        ids = [r["id"] for r in records]
        found: dict[str, list[Any]] = {}
        for f in conn.execute(
            sa.select(feedback).where(feedback.c.prediction_id.in_(ids)).order_by(feedback.c.id)
        ):
            found.setdefault(f.prediction_id, []).append(f)
        for record in records:
            items = found.get(record["id"], [])
            labels = [f for f in items if f.label is not None]
            rewards = [f for f in items if f.reward is not None]
            record["feedback"] = {
                "items": len(items),
                "label": labels[-1].label if labels else None,
                "reward": rewards[-1].reward if rewards else None,
                "correct": labels[-1].correct if labels else None,
                "error": labels[-1].error if labels else None,
                "time": iso(items[-1].ts) if items else None,
            }
    return {"model": name, "predictions": records}
