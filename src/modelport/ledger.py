"""The prediction ledger and feedback: every scored row, and the labels that arrive later.

Rows are written by the writer thread in groups (see :mod:`modelport.store.writer`); the
functions here build those rows and read them back. Feedback is append-only: a later label for
a prediction supersedes the earlier one, and both stay in the history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .errors import InvalidInput, PredictionNotFound
from .store.tables import feedback, predictions
from .timefmt import iso

MAX_PAGE = 1000


#: Column order of the tuples :func:`prediction_rows` builds.
PREDICTION_COLUMNS = (
    "id",
    "ts",
    "model",
    "version",
    "alias",
    "consumer",
    "request_id",
    "inputs",
    "outputs",
    "latency_ms",
)


def insert_statement(paramstyle: str) -> str:
    """The ledger INSERT for the driver's parameter style (``qmark`` or ``format``)."""
    mark = "?" if paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(PREDICTION_COLUMNS))})"
    )


def prediction_rows(
    ids: Sequence[str],
    *,
    model: str,
    version: int,
    alias: str | None,
    consumer: str,
    request_id: str,
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    preds: Sequence[Any],
    probas: Sequence[dict[str, float]] | None,
    latency_ms: float,
) -> list[tuple[Any, ...]]:
    """Ledger rows for one request, one per scored input row, ready for ``executemany``.

    Inputs and outputs are serialized here, once, so the writer thread only hands tuples to
    the driver: the ledger's cost stays off the single writing thread as far as it can.
    """
    ts = time.time()
    dumps = orjson.dumps
    option = orjson.OPT_SERIALIZE_NUMPY
    out = []
    for i, pid in enumerate(ids):
        outputs: dict[str, Any] = {"prediction": preds[i]}
        if probas is not None:
            outputs["probabilities"] = probas[i]
        out.append(
            (
                pid,
                ts,
                model,
                version,
                alias,
                consumer,
                request_id,
                dumps(dict(zip(names, rows[i], strict=True)), option=option).decode(),
                dumps(outputs, option=option).decode(),
                latency_ms,
            )
        )
    return out


def _record(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "time": iso(row.ts),
        "model": row.model,
        "version": row.version,
        "alias": row.alias,
        "consumer": row.consumer,
        "request_id": row.request_id,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "latency_ms": row.latency_ms,
    }


def _feedback_records(rows: Sequence[sa.Row[Any]]) -> list[dict[str, Any]]:
    """Feedback oldest first; the newest label (and newest reward) is current, the rest superseded."""
    latest_label = max((r.id for r in rows if r.label is not None), default=None)
    latest_reward = max((r.id for r in rows if r.reward is not None), default=None)
    return [
        {
            "id": r.id,
            "time": iso(r.ts),
            "label": r.label,
            "reward": r.reward,
            "consumer": r.consumer,
            "superseded": r.id not in (latest_label, latest_reward),
        }
        for r in rows
    ]


def get_prediction(conn: Connection, prediction_id: str) -> dict[str, Any]:
    row = conn.execute(sa.select(predictions).where(predictions.c.id == prediction_id)).first()
    if row is None:
        raise PredictionNotFound(f"no prediction with id {prediction_id!r}")
    record = _record(row)
    fb = conn.execute(
        sa.select(feedback).where(feedback.c.prediction_id == prediction_id).order_by(feedback.c.id)
    ).all()
    record["feedback"] = _feedback_records(fb)
    return record


def list_predictions(
    conn: Connection,
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of a model's predictions, oldest first; ``next_cursor`` continues after it."""
    limit = max(1, min(limit, MAX_PAGE))
    query = sa.select(predictions).where(predictions.c.model == model)
    if version is not None:
        query = query.where(predictions.c.version == version)
    if since is not None:
        query = query.where(predictions.c.ts >= since)
    if until is not None:
        query = query.where(predictions.c.ts < until)
    if cursor:
        query = query.where(predictions.c.id > cursor)
    rows = conn.execute(query.order_by(predictions.c.id).limit(limit + 1)).all()
    page = rows[:limit]
    return {
        "predictions": [_record(r) for r in page],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }


# -- feedback -------------------------------------------------------------------------------------


def check_feedback_items(items: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split feedback items into well-formed ones and per-item rejections (by shape only)."""
    if not isinstance(items, list) or not items:
        raise InvalidInput(
            "'feedback' must be a non-empty list of items",
            details=[{"field": "feedback", "reason": "expected a non-empty list"}],
        )
    good: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        reason = _item_problem(item)
        if reason:
            pid = item.get("prediction_id") if isinstance(item, dict) else None
            rejected.append({"index": i, "prediction_id": pid, "reason": reason})
        else:
            good.append({"index": i, **item})
    return good, rejected


def _item_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return "each item must be an object"
    unknown = set(item) - {"prediction_id", "label", "reward"}
    if unknown:
        return f"unexpected field(s): {', '.join(sorted(unknown))}"
    pid = item.get("prediction_id")
    if not isinstance(pid, str) or not pid:
        return "prediction_id: expected a prediction id string"
    if item.get("label") is None and item.get("reward") is None:
        return "give a label, a reward, or both"
    reward = item.get("reward")
    if reward is not None and (
        isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward)
    ):
        return "reward: expected a finite number"
    label = item.get("label")
    if isinstance(label, dict | list):
        return "label: expected a string, number or boolean"
    return ""


def store_feedback(
    conn: Connection, items: list[dict[str, Any]], consumer: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Insert feedback for known predictions; report unknown ids per item."""
    ids = {item["prediction_id"] for item in items}
    known: set[str] = set()
    id_list = list(ids)
    for start in range(0, len(id_list), 500):
        chunk = id_list[start : start + 500]
        known.update(
            conn.execute(sa.select(predictions.c.id).where(predictions.c.id.in_(chunk))).scalars()
        )
    rejected = [
        {
            "index": item["index"],
            "prediction_id": item["prediction_id"],
            "reason": "unknown prediction id",
        }
        for item in items
        if item["prediction_id"] not in known
    ]
    good = [item for item in items if item["prediction_id"] in known]
    if not good:
        return [], rejected
    now = time.time()
    new_ids = (
        conn.execute(
            feedback.insert().returning(feedback.c.id, sort_by_parameter_order=True),
            [
                {
                    "prediction_id": item["prediction_id"],
                    "label": item.get("label"),
                    "reward": float(item["reward"]) if item.get("reward") is not None else None,
                    "consumer": consumer,
                    "ts": now,
                }
                for item in good
            ],
        )
        .scalars()
        .all()
    )
    accepted = [
        {"index": item["index"], "prediction_id": item["prediction_id"], "feedback_id": fid}
        for item, fid in zip(good, new_ids, strict=True)
    ]
    return accepted, rejected
