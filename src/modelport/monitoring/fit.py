"""The online-learning view: a one-input regression's labelled points and its prediction line.

For a model with exactly one numeric input field and a numeric target, the last N labelled
points are read (observations for models made from algorithms, which include feedback labels;
feedback labels joined to their predictions' inputs for pushed models; of several labels for
one prediction, the newest), and the production version's predictions on a grid over their x
range make the line. The grid is scored straight through the loaded model: nothing is written
to the ledger.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import Conflict
from ..ledger import decode_inputs
from ..registry import models as registry
from ..releases.outcomes import newest_feedback
from ..serving.routing import Served
from ..store.tables import feedback, observations, predictions
from ..timefmt import iso
from .timeline import check_count

MAX_POINTS = 1000
GRID = 60


def check_points(points: int) -> int:
    return check_count(points, "points", MAX_POINTS)


def input_field(served: Served) -> str:
    """The one numeric input of a regression version; 409 when the model has another shape."""
    fields = served.schema.fields
    problems = []
    if served.task != "regression":
        problems.append(f"its task is {served.task!r}, not regression (a numeric target)")
    if len(fields) != 1:
        problems.append(f"it has {len(fields)} input fields, not one")
    elif fields[0].type not in ("number", "integer"):
        problems.append(f"its input {fields[0].name!r} is a {fields[0].type}, not a number")
    if problems:
        raise Conflict(
            f"model {served.model!r} version {served.version} has no fit view: "
            + "; ".join(problems),
            details=[{"field": "model", "reason": p} for p in problems],
        )
    return fields[0].name


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def labelled_points(conn: Connection, name: str, field: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` labelled points (x, y), oldest first."""
    model = registry.model_row(conn, name)
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    if model.spec is not None:
        query = (
            sa.select(
                observations.c.id,
                observations.c.ts,
                observations.c.inputs,
                observations.c.label,
                observations.c.source,
                observations.c.prediction_id,
            )
            .where(observations.c.model_id == model.id, observations.c.label.is_not(None))
            .order_by(observations.c.id.desc())
        )
        after: int | None = None
        while len(points) < limit:
            page = query if after is None else query.where(observations.c.id < after)
            chunk = conn.execute(page.limit(limit * 2)).all()
            if not chunk:
                break
            for r in chunk:
                if r.prediction_id is not None:
                    if r.prediction_id in seen:
                        continue  # superseded by a newer label of the same prediction
                    seen.add(r.prediction_id)
                x, y = _number(orjson.loads(r.inputs).get(field)), _number(r.label)
                if x is not None and y is not None and len(points) < limit:
                    points.append({"x": x, "y": y, "time": iso(r.ts), "source": r.source})
            after = chunk[-1].id
        return points[::-1]
    newest = newest_feedback(
        predictions.c.model == name,
        predictions.c.shadow == sa.false(),
        feedback.c.label.is_not(None),
    )
    labelled = conn.execute(
        sa.select(
            feedback.c.label,
            feedback.c.ledger_row,
            feedback.c.ts,
            predictions.c.fields,
            predictions.c.inputs,
        )
        .select_from(
            feedback.join(newest, newest.c.id == feedback.c.id).join(
                predictions, predictions.c.id == feedback.c.ledger_id
            )
        )
        .order_by(feedback.c.id.desc())
        .limit(limit)
    )
    for row in labelled:
        fields = orjson.loads(row.fields)
        if field not in fields:
            continue
        x = _number(decode_inputs(row.inputs, len(fields))[row.ledger_row][fields.index(field)])
        y = _number(row.label)
        if x is not None and y is not None:
            points.append({"x": x, "y": y, "time": iso(row.ts), "source": "feedback"})
    return points[::-1]


def grid(points: list[dict[str, Any]], served: Served) -> list[float]:
    """Evenly spaced x values over the points' range (within the field's bounds)."""
    if not points:
        return []
    xs = [p["x"] for p in points]
    lo, hi = min(xs), max(xs)
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    spec = served.schema.fields[0]
    if spec.minimum is not None:
        lo = max(lo, spec.minimum)
    if spec.maximum is not None:
        hi = min(hi, spec.maximum)
    values = np.linspace(lo, hi, GRID)
    if spec.type == "integer":
        values = np.unique(np.round(values))
    return [float(v) for v in values]


def line(served: Served, xs: list[float]) -> list[dict[str, float]]:
    """The version's predictions at ``xs`` (scored directly; not logged)."""
    if not xs:
        return []
    integer = served.schema.fields[0].type == "integer"
    rows = served.schema.table_from_rows([[int(x) if integer else x] for x in xs])
    preds, _ = served.loaded.predict_with_proba(rows)
    return [{"x": x, "y": float(y)} for x, y in zip(xs, np.asarray(preds).tolist(), strict=True)]
