"""Replay: logged traffic re-scored through a version, offline, to see what it would have done.

The ledger's requests of a model in a time range (optionally one consumer's; shadow copies left
out), as they were sent (the raw records where the ledger kept them, else the rows it scored),
go through the version's schema (rows it rejects are counted, with the reasons) and model, in
the order they came. The report compares the version with what was served: the share of rows
where both predict the same, and on rows that have feedback, the metric of each (accuracy for
class labels, MAE and RMSE for numbers), plus the version's scoring latency. Requests the
retention moved to the archive (:mod:`modelport.store.archive`) are replayed too.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa

from .. import flavors
from ..errors import InvalidInput
from ..inputs.schema import parse_schema
from ..ledger import sent_records
from ..registry import models as registry
from ..store.archive import Archive, merged
from ..store.tables import feedback, predictions
from ..timefmt import iso, parse_time

_BATCH = 500


def run_replay(
    store: Any, artifacts: Any, job: dict[str, Any], progress: Callable[[float, str], None]
) -> dict[str, Any]:
    params = job["params"]
    return replay_version(
        store,
        artifacts,
        job["model"],
        params["version"],
        since=parse_time(params.get("since"), "since"),
        until=parse_time(params.get("until"), "until"),
        consumer=params.get("consumer"),
        limit=params.get("limit", 10_000),
        progress=progress,
    )


def replay_version(
    store: Any,
    artifacts: Any,
    name: str,
    version: int,
    *,
    since: float | None,
    until: float | None,
    consumer: str | None = None,
    limit: int = 10_000,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """The replay report of ``version`` over the model's logged traffic."""
    with store.read() as conn:
        row = registry.version_row(conn, name, version)
        where = [predictions.c.model == name, predictions.c.shadow == sa.false()]
        if since is not None:
            where.append(predictions.c.ts >= since)
        if until is not None:
            where.append(predictions.c.ts < until)
        if consumer is not None:
            where.append(predictions.c.consumer == consumer)
        logged = conn.execute(
            sa.select(
                predictions.c.id,
                predictions.c.rows,
                predictions.c.fields,
                predictions.c.inputs,
                predictions.c.raw_inputs,
                predictions.c.outputs,
            )
            .where(*where)
            .order_by(predictions.c.id)
            .limit(limit)
        ).all()
        columns = ("id", "rows", "fields", "inputs", "raw_inputs", "outputs")
        old = Archive(artifacts).window(
            conn, name, since, until, columns=columns, consumer=consumer
        )
        logged = merged(logged, old)[:limit]
        labels = _labels(conn, [r.id for r in logged])
    schema = parse_schema(row.input_schema)
    loaded = flavors.load(row.flavor, artifacts.local_path(row.sha256), trust_code=True)
    records: list[Any] = []
    served: list[Any] = []
    truth: list[Any] = []
    for r in logged:
        records.extend(sent_records(r))
        served.extend(r.outputs["predictions"])
        truth.extend(labels.get((r.id, i)) for i in range(r.rows))
    total = len(records)
    reasons: Counter[tuple[str | None, str]] = Counter()
    ours: list[Any] = [None] * total
    rejected = 0
    seconds = 0.0
    for start in range(0, total, _BATCH):
        chunk = records[start : start + _BATCH]
        good_idx, good = [], []
        for j, record in enumerate(chunk):
            try:
                schema.validate([record])
            except InvalidInput as exc:
                rejected += 1
                first = exc.details[0]
                reasons[(first.get("field"), str(first.get("reason")))] += 1
                continue
            good_idx.append(start + j)
            good.append(record)
        if good:
            table = schema.table(good)
            began = time.perf_counter()
            preds, _ = loaded.predict_with_proba(table)
            seconds += time.perf_counter() - began
            values = preds.tolist() if isinstance(preds, np.ndarray) else list(preds)
            for k, value in zip(good_idx, values, strict=True):
                ours[k] = value
        if progress is not None:
            progress(
                0.1 + 0.8 * min(1.0, (start + _BATCH) / max(total, 1)),
                f"{start + len(chunk)} of {total} rows",
            )
    scored = [i for i in range(total) if ours[i] is not None]
    agree = sum(1 for i in scored if _same(ours[i], served[i]))
    report: dict[str, Any] = {
        "model": name,
        "version": version,
        "since": iso(since) if since else None,
        "until": iso(until) if until else None,
        "consumer": consumer,
        "requests": len(logged),
        "rows": total,
        "scored": len(scored),
        "rejected": rejected,
        "rejected_share": rejected / total if total else None,
        "rejections": [
            {"field": f, "reason": why, "rows": n} for (f, why), n in reasons.most_common(10)
        ],
        "agreement": agree / len(scored) if scored else None,
        "latency_ms_per_row": seconds * 1000 / len(scored) if scored else None,
        "feedback": _compare(
            [ours[i] for i in scored], [served[i] for i in scored], [truth[i] for i in scored]
        ),
    }
    return report


def _labels(conn: Any, ledger_ids: list[str]) -> dict[tuple[str, int], Any]:
    """The newest label of each logged prediction that has one."""
    out: dict[tuple[str, int], Any] = {}
    for start in range(0, len(ledger_ids), 500):
        chunk = ledger_ids[start : start + 500]
        rows = conn.execute(
            sa.select(feedback.c.ledger_id, feedback.c.ledger_row, feedback.c.label)
            .where(feedback.c.ledger_id.in_(chunk), feedback.c.label.is_not(None))
            .order_by(feedback.c.id)
        )
        for r in rows:
            out[(r.ledger_id, r.ledger_row)] = r.label
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b or str(a) == str(b)


def _compare(ours: list[Any], served: list[Any], truth: list[Any]) -> dict[str, Any]:
    """The version against what was served, on the rows that have a label."""
    rows = [(o, s, t) for o, s, t in zip(ours, served, truth, strict=True) if t is not None]
    out: dict[str, Any] = {"rows": len(rows)}
    if not rows:
        return out
    numeric = all(
        isinstance(v, int | float) and not isinstance(v, bool) for row in rows for v in row
    ) and any(isinstance(v, float) for row in rows for v in row[:2])
    if numeric:
        o, s, t = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
        out["metric"] = "rmse"
        out["version"] = {
            "mae": float(np.mean(np.abs(o - t))),
            "rmse": float(np.sqrt(np.mean((o - t) ** 2))),
        }
        out["served"] = {
            "mae": float(np.mean(np.abs(s - t))),
            "rmse": float(np.sqrt(np.mean((s - t) ** 2))),
        }
    else:
        out["metric"] = "accuracy"
        out["version"] = {"accuracy": sum(_same(o, t) for o, _, t in rows) / len(rows)}
        out["served"] = {"accuracy": sum(_same(s, t) for _, s, t in rows) / len(rows)}
    return out
