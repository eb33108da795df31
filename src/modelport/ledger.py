"""The prediction ledger and feedback: every scored row, and the labels that arrive later.

Each scored request is one ledger row holding all its predictions (their ids are consecutive:
see :mod:`modelport.ids`); reads hand out one record per prediction. Rows are written by the
writer thread in groups (see :mod:`modelport.store.writer`); the functions here build those rows
and read them back. Feedback is append-only: a later label for
a prediction supersedes the earlier one, and both stay in the history.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .errors import InvalidInput, PredictionNotFound
from .ids import lowest_first, offset
from .store.tables import feedback, predictions
from .timefmt import iso

if TYPE_CHECKING:
    from .inputs.table import Table
    from .store.archive import Archive

MAX_PAGE = 1000


#: Column order of the tuples :func:`ledger_row` builds.
PREDICTION_COLUMNS = (
    "id",
    "rows",
    "fields",
    "ts",
    "model",
    "version",
    "alias",
    "consumer",
    "request_id",
    "inputs",
    "outputs",
    "latency_ms",
    "policy",
    "arm",
    "traffic_rev",
    "shadow",
    "raw_inputs",
    "segment",
    "cached",
    "idempotency_key",
)
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# How a ledger row's inputs are encoded: a two-byte tag, then the rows.
_FLOAT64 = b"F8"  # little-endian float64, row-major, one value per field
_JSON_ROWS = b"JS"  # a JSON list of rows


def insert_statement(paramstyle: str) -> str:
    """The ledger INSERT for the driver's parameter style (``qmark`` or ``format``)."""
    mark = "?" if paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(PREDICTION_COLUMNS))})"
    )


def encode_inputs(table: Table) -> bytes:
    """A table's rows as stored: raw little-endian float64 when held as one matrix, else JSON."""
    matrix = table.float_matrix
    if matrix is not None:
        return _FLOAT64 + matrix.astype("<f8", copy=False).tobytes()
    return _JSON_ROWS + orjson.dumps(table.rows(), option=_NUMPY)


def decode_inputs(blob: bytes, width: int) -> list[list[Any]]:
    """The rows :func:`encode_inputs` stored (missing numbers come back as None)."""
    blob = bytes(blob)
    tag = blob[:2]
    if tag == _FLOAT64:
        matrix = np.frombuffer(blob, dtype="<f8", offset=2).reshape(-1, width)
        rows: list[list[Any]] = matrix.tolist()
        if np.isnan(matrix).any():
            rows = [[None if v != v else v for v in row] for row in rows]
        return rows
    if tag == _JSON_ROWS:
        decoded: list[list[Any]] = orjson.loads(blob[2:])
        return decoded
    raise ValueError(f"unknown ledger input encoding {tag!r}")


def sent_records(row: Any) -> list[dict[str, Any]]:
    """A ledger row's records as the consumer sent them: the raw records where the ledger kept
    them, else its rows by field name."""
    if row.raw_inputs:
        raw: list[dict[str, Any]] = orjson.loads(row.raw_inputs)
        return raw
    fields = orjson.loads(row.fields)
    return [
        dict(zip(fields, values, strict=True)) for values in decode_inputs(row.inputs, len(fields))
    ]


def ledger_row(
    first_id: str,
    *,
    model: str,
    version: int,
    alias: str | None,
    consumer: str,
    request_id: str,
    table: Table,
    predictions: list[Any],
    classes: list[Any] | None,
    probabilities: np.ndarray | None,
    latency_ms: float,
    policy: str | None = None,
    arm: str | None = None,
    traffic_rev: int | None = None,
    shadow: bool = False,
    segment: str | None = None,
    cached: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Any, ...]:
    """The ledger row of one scored request, ready for ``executemany``.

    ``segment``: the rows' segment (a segmented model); ``cached``: one "0"/"1" per row, "1"
    where the prediction cache answered.

    Inputs and outputs are encoded here, each in one call over whole arrays, so the writer
    thread only hands a tuple to the driver.
    """
    outputs: dict[str, Any] = {"predictions": predictions}
    if probabilities is not None:
        outputs["classes"] = classes
        outputs["probabilities"] = probabilities
    return (
        first_id,
        len(table),
        table.schema.names_json,
        time.time(),
        model,
        version,
        alias,
        consumer,
        request_id,
        encode_inputs(table),
        orjson.dumps(outputs, option=_NUMPY).decode(),
        latency_ms,
        policy,
        arm,
        traffic_rev,
        shadow,
        table.raw,
        segment,
        cached,
        idempotency_key,
    )


def answered(
    conn: Connection, consumer: str, model: str, idempotency_key: str, since: float
) -> dict[str, Any] | None:
    """The answer a consumer's earlier request with this idempotency key got (a native predict
    response), when the ledger holds it from ``since`` on; None otherwise."""
    # Only the key's own index narrows it down: a query naming the model and the time too
    # tempts SQLite into the (model, ts) index, a scan of the whole window. A key has one row.
    found = conn.execute(
        sa.select(
            predictions.c.id,
            predictions.c.rows,
            predictions.c.version,
            predictions.c.outputs,
            predictions.c.model,
            predictions.c.ts,
            predictions.c.shadow,
        ).where(
            predictions.c.consumer == consumer, predictions.c.idempotency_key == idempotency_key
        )
    ).all()
    rows = [r for r in found if r.model == model and r.ts >= since and not r.shadow]
    if not rows:
        return None
    row = max(rows, key=lambda r: r.id)
    outputs = row.outputs
    base = uuid.UUID(row.id).int
    out: dict[str, Any] = {
        "model": model,
        "version": row.version,
        "predictions": outputs["predictions"],
        "prediction_ids": [str(uuid.UUID(int=base + i)) for i in range(row.rows)],
    }
    if outputs.get("probabilities") is not None:
        keys = [str(c) for c in outputs.get("classes") or ()]
        out["probabilities"] = [dict(zip(keys, p, strict=True)) for p in outputs["probabilities"]]
    return out


def _records(row: sa.Row[Any], start: int = 0) -> list[dict[str, Any]]:
    """The predictions of one ledger row, from its ``start``-th on."""
    fields = orjson.loads(row.fields)
    inputs = decode_inputs(row.inputs, len(fields))
    outputs = row.outputs
    preds = outputs["predictions"]
    classes = [str(c) for c in outputs.get("classes") or ()]
    probabilities = outputs.get("probabilities")
    base = uuid.UUID(row.id).int
    raw = orjson.loads(row.raw_inputs) if row.raw_inputs else None
    shared = {
        "time": iso(row.ts),
        "model": row.model,
        "version": row.version,
        "alias": row.alias,
        "consumer": row.consumer,
        "request_id": row.request_id,
        "policy": row.policy,
        "arm": row.arm,
        "shadow": bool(row.shadow),
        "segment": row.segment,
    }
    cached = row.cached or ""
    out = []
    for i in range(start, row.rows):
        result: dict[str, Any] = {"prediction": preds[i]}
        if probabilities is not None:
            result["probabilities"] = dict(zip(classes, probabilities[i], strict=True))
        out.append(
            {
                "id": str(uuid.UUID(int=base + i)),
                **shared,
                "inputs": dict(zip(fields, inputs[i], strict=True)),
                "outputs": result,
                "latency_ms": row.latency_ms,
                "cached": cached[i : i + 1] == "1",
            }
        )
        if raw is not None and i < len(raw):
            out[-1]["raw_inputs"] = raw[i]  # as sent, before adapters and defaults
    return out


#: The predictions of one ledger row as API records (the dashboard's recent predictions).
records = _records


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


def _locate(conn: Connection, prediction_id: str, *columns: Any) -> tuple[Any, int] | None:
    """The ledger row holding ``prediction_id`` and the prediction's place in it, or None."""
    if not _is_id(prediction_id):
        return None
    # Bounded below: an unbounded backward scan from an archived id would step over every
    # deleted row older than it (on PostgreSQL, dead index entries until a vacuum). The bounds
    # are scalar subqueries so that PostgreSQL's planner does not see their values: for a
    # value in the first or last bucket of the column's histogram (an old, archived id) it
    # would read the index's true end to estimate the range, over the same dead entries.
    row = conn.execute(
        sa.select(*(columns or (predictions,)))
        .where(
            predictions.c.id <= _opaque(prediction_id),
            predictions.c.id >= _opaque(lowest_first(prediction_id)),
        )
        .order_by(predictions.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    at = offset(row.id, prediction_id)
    return (row, at) if 0 <= at < row.rows else None


def _opaque(value: str) -> Any:
    """``value`` as ``(SELECT value)``: a parameter the planner cannot look into."""
    return sa.select(sa.literal(value, predictions.c.id.type)).scalar_subquery()


def _is_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def archived(
    conn: Connection, prediction_ids: Iterable[str], archive: Archive
) -> dict[str, tuple[Any, int]]:
    """The predictions among ``prediction_ids`` that only the archive holds: their archived
    ledger row and place in it (read before a write, so the writer never waits on a file)."""
    out: dict[str, tuple[Any, int]] = {}
    if not archive.listed(conn):
        return out  # nothing was ever archived: one query for the whole request
    for pid in set(prediction_ids):
        # The archive's list first: with no file spanning the id, the ledger table has it
        # (or nobody does), and the lookup cost one query on a small table.
        if not _is_id(pid) or not archive.candidates(conn, pid):
            continue
        if _locate(conn, pid, predictions.c.id, predictions.c.rows) is None:
            found = archive.locate(conn, pid)
            if found is not None:
                out[pid] = found
    return out


def get_prediction(
    conn: Connection,
    prediction_id: str,
    archive: Archive | None = None,
    known: dict[str, tuple[Any, int]] | None = None,
) -> dict[str, Any]:
    """One prediction with its feedback: from the ledger table, else from ``known`` archived
    rows, else from the ``archive``."""
    found = _locate(conn, prediction_id)
    if found is None and known is not None:
        found = known.get(prediction_id)
    if found is None and archive is not None and _is_id(prediction_id):
        found = archive.locate(conn, prediction_id)
    if found is None:
        raise PredictionNotFound(f"no prediction with id {prediction_id!r}")
    row, at = found
    record = _records(row, at)[0]
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
    consumer: str | None = None,
) -> dict[str, Any]:
    """A page of a model's predictions (of one ``consumer``'s, if given), oldest first;
    ``next_cursor`` continues after it."""
    limit = max(1, min(limit, MAX_PAGE))
    query = sa.select(predictions).where(predictions.c.model == model)
    if consumer is not None:
        query = query.where(predictions.c.consumer == consumer)
    if version is not None:
        query = query.where(predictions.c.version == version)
    if since is not None:
        query = query.where(predictions.c.ts >= since)
    if until is not None:
        query = query.where(predictions.c.ts < until)
    skip_in: str | None = None  # the ledger row the cursor is in, whose rows up to it are done
    skip_to = 0
    if cursor:
        found = _locate(conn, cursor, predictions.c.id, predictions.c.rows)
        if found is not None:
            skip_in, skip_to = found[0].id, found[1] + 1
            query = query.where(predictions.c.id >= skip_in)
        else:
            query = query.where(predictions.c.id > cursor)
    # Every ledger row holds at least one prediction, so limit + 1 rows fill a page and tell
    # whether more follow (one more when the cursor's own row may have nothing left).
    wanted = limit + 1 + (skip_in is not None)
    rows = conn.execute(query.order_by(predictions.c.id).limit(wanted)).all()
    records: list[dict[str, Any]] = []
    for row in rows:
        records.extend(_records(row, skip_to if row.id == skip_in else 0))
        if len(records) > limit:
            break
    page = records[:limit]
    return {
        "predictions": page,
        "next_cursor": page[-1]["id"] if len(records) > limit else None,
    }


def count_predictions(conn: Connection, model: str | None = None) -> int:
    """How many predictions the ledger holds (of one model, or in all)."""
    query = sa.select(sa.func.coalesce(sa.func.sum(predictions.c.rows), 0))
    if model is not None:
        query = query.where(predictions.c.model == model)
    return int(conn.execute(query).scalar_one())


def prediction_ids(conn: Connection, model: str | None = None) -> Iterator[str]:
    """Every prediction id in the ledger (of one model, or in all), in id order."""
    query = sa.select(predictions.c.id, predictions.c.rows).order_by(predictions.c.id)
    if model is not None:
        query = query.where(predictions.c.model == model)
    for first, rows in conn.execute(query):
        base = uuid.UUID(first).int
        for i in range(rows):
            yield str(uuid.UUID(int=base + i))


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


def _against(label: Any, prediction: Any) -> dict[str, Any]:
    """A label against its prediction: ``correct`` for class-like predictions (not floats),
    ``error`` (label - prediction) when both are numbers; None where it does not apply."""
    if label is None:
        return {"correct": None, "error": None}
    correct = None
    if not isinstance(prediction, float):
        correct = label == prediction or str(label) == str(prediction)
    error = None
    numeric = (int, float)
    if (
        isinstance(label, numeric)
        and isinstance(prediction, numeric)
        and not isinstance(label, bool)
        and not isinstance(prediction, bool)
    ):
        error = float(label) - float(prediction)
    return {"correct": correct, "error": error}


def store_feedback(
    conn: Connection,
    items: list[dict[str, Any]],
    consumer: str,
    archived: dict[str, tuple[Any, int]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Insert feedback for known predictions (in the ledger table, or ``archived``: see
    :func:`archived`); report unknown ids per item."""
    known: dict[str, tuple[str, int, Any, str, int]] = {}
    for pid in {item["prediction_id"] for item in items}:
        found = _locate(
            conn,
            pid,
            predictions.c.id,
            predictions.c.rows,
            predictions.c.outputs,
            predictions.c.model,
            predictions.c.version,
        )
        if found is None and archived is not None:
            found = archived.get(pid)
        if found is not None:
            row, at = found
            known[pid] = (row.id, at, row.outputs["predictions"][at], row.model, row.version)
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
                    "ledger_id": known[item["prediction_id"]][0],
                    "ledger_row": known[item["prediction_id"]][1],
                    **_against(item.get("label"), known[item["prediction_id"]][2]),
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
        {
            "index": item["index"],
            "prediction_id": item["prediction_id"],
            "feedback_id": fid,
            "model": known[item["prediction_id"]][3],
            "version": known[item["prediction_id"]][4],
        }
        for item, fid in zip(good, new_ids, strict=True)
    ]
    return accepted, rejected
