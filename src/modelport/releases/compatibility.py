"""Would a new version's schema take what the consumers send today? Checked at push time.

For every consumer that sent the model traffic recently, its latest requests are read from the
ledger (as sent: the raw records where the ledger kept them, else the rows it scored), passed
through the adapter that consumer would get for the new version, and validated against the new
schema. The report names each consumer whose payloads would be rejected, how many rows, and why
(the first problems). A strict push is refused when any would be.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import InvalidInput
from ..inputs.schema import Schema
from ..ledger import sent_records
from ..store.tables import predictions
from ..timefmt import iso
from .consumers import Release

#: How far back, and how many requests per consumer, a push looks at.
WINDOW_SECONDS = 7 * 24 * 3600
REQUESTS_PER_CONSUMER = 200
_EXAMPLES = 3


def check(
    conn: Connection,
    model: str,
    schema: Schema,
    version: int,
    release: Release | None,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The compatibility report of ``schema`` (as version ``version``) with recent traffic."""
    since = (now or time.time()) - WINDOW_SECONDS
    recent = (
        predictions.c.model == model,
        predictions.c.ts >= since,
        predictions.c.shadow == sa.false(),
    )
    names = sorted(
        conn.execute(sa.select(predictions.c.consumer).where(*recent).distinct()).scalars()
    )
    consumers = []
    for consumer in names:
        rows = conn.execute(
            sa.select(predictions.c.fields, predictions.c.inputs, predictions.c.raw_inputs)
            .where(*recent, predictions.c.consumer == consumer)
            .order_by(predictions.c.id.desc())
            .limit(REQUESTS_PER_CONSUMER)
        ).all()
        records: list[Any] = [record for row in rows for record in sent_records(row)]
        adapter = None
        if release is not None:
            own = release.consumers.get(consumer)
            adapter = own.adapter if own and own.adapter else release.adapter
        if adapter is not None and not adapter.applies_to(version):
            adapter = None
        rejected, reasons = _rejections(schema, records, adapter)
        entry: dict[str, Any] = {
            "consumer": consumer,
            "requests_checked": len(rows),
            "rows_checked": len(records),
            "rows_rejected": rejected,
            "adapter": adapter is not None,
        }
        if rejected:
            entry["reasons"] = [
                {"field": f, "reason": r, "rows": n} for (f, r), n in reasons.most_common(_EXAMPLES)
            ]
        consumers.append(entry)
    return {
        "since": iso(since),
        "compatible": all(c["rows_rejected"] == 0 for c in consumers),
        "consumers": consumers,
    }


def _rejections(
    schema: Schema, records: list[Any], adapter: Any
) -> tuple[int, Counter[tuple[str | None, str]]]:
    """How many records the schema would reject (after the adapter), and the reasons counted."""
    reasons: Counter[tuple[str | None, str]] = Counter()
    rejected = 0
    for record in records:
        problems: list[dict[str, Any]] = []
        candidate = [record]
        if adapter is not None:
            candidate, problems = adapter.apply(candidate)
        if not problems:
            try:
                schema.validate(candidate)
            except InvalidInput as exc:
                problems = exc.details
        if problems:
            rejected += 1
            for p in problems:
                reasons[(p.get("field"), str(p.get("reason")))] += 1
    return rejected, reasons
