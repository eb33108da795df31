"""The learning loop's data: models made from built-in algorithms, their observations, and
content-hashed dataset snapshots.

A model created from an algorithm (``POST /v1/models`` with ``algorithm``) carries a *spec*: the
algorithm and its parameters, the input schema, the target and, for classifiers, the classes.
Observations are rows of the schema's fields plus the target, checked like predictions (every
bad row named with its index and reason, the good ones kept) and stored before the answer.
Feedback labels count too: they are stored as observations of the prediction's inputs.

A dataset is a snapshot of a model's observations, newest label per prediction, written as
Parquet (pyarrow, part of the core install) into the artifact store under the sha256 of its
bytes: the id a training run names, so it can be run again on exactly the same rows.
"""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import (
    Conflict,
    DatasetNotFound,
    InvalidInput,
    ModelportError,
)
from ..inputs.schema import Schema, parse_schema
from ..registry import models as registry
from ..store.tables import datasets, models, observations
from ..timefmt import iso

MAX_OBSERVATIONS_PER_REQUEST = 10_000
ONLINE_DEFAULTS = {"min_observations": 10, "snapshot_every": 100, "snapshot_seconds": 5.0}


def spec_of(conn: Connection, name: str) -> dict[str, Any]:
    """A model's spec; 409 for a model pushed as an artifact (it has no algorithm to run)."""
    row = registry.model_row(conn, name)
    if row.spec is None:
        raise Conflict(
            f"model {name!r} was pushed as an artifact, not made from a built-in algorithm: "
            "there is nothing to train or learn (push a new version instead)"
        )
    spec: dict[str, Any] = row.spec
    return spec


def check_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"algorithm", "params", "schema", "target", "classes", "online"}`` checked and
    completed; every problem named."""
    from . import algorithms

    problems: list[dict[str, Any]] = []
    known = {
        "name",
        "algorithm",
        "params",
        "schema",
        "target",
        "classes",
        "online",
        "description",
        "segment_by",
    }
    problems += [{"field": k, "reason": "unexpected field"} for k in doc if k not in known]
    params: dict[str, Any] = {}
    entry: dict[str, Any] | None = None
    schema: Schema | None = None
    try:
        schema = parse_schema(doc.get("schema"))
    except InvalidInput as exc:
        problems += exc.details
    try:
        params = algorithms.check_spec(doc.get("algorithm"), doc.get("params") or {}, schema=schema)
        entry = next(a for a in algorithms.catalog() if a["name"] == doc["algorithm"])
    except InvalidInput as exc:
        problems += exc.details
    target = doc.get("target")
    if not isinstance(target, str) or not target:
        problems.append({"field": "target", "reason": "expected the name of the label column"})
    elif schema is not None and target in schema.names:
        problems.append({"field": "target", "reason": "the label cannot also be an input field"})
    segment_by = doc.get("segment_by")
    if segment_by is not None:
        from ..serving.segments import check_segment_key

        try:
            check_segment_key(segment_by, schema)
        except InvalidInput as exc:
            problems += exc.details
    classes = doc.get("classes")
    task = entry["task"] if entry else None
    if task == "classification":
        if entry and entry["online"] and not classes:
            problems.append(
                {"field": "classes", "reason": "an online classifier needs its classes up front"}
            )
        if classes is not None and (
            not isinstance(classes, list)
            or len(classes) < 2
            or len(set(map(str, classes))) != len(classes)
            or not all(isinstance(c, str | int | bool) for c in classes)
        ):
            problems.append({"field": "classes", "reason": "expected two or more distinct labels"})
    elif classes is not None:
        problems.append({"field": "classes", "reason": "only classifiers have classes"})
    online = {**ONLINE_DEFAULTS, **(doc.get("online") or {})}
    for key, value in online.items():
        if key not in ONLINE_DEFAULTS:
            problems.append({"field": f"online.{key}", "reason": "unknown setting"})
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append({"field": f"online.{key}", "reason": "expected a positive number"})
    if problems:
        first = problems[0]
        raise InvalidInput(
            f"invalid model spec: {first['field']}: {first['reason']}", details=problems
        )
    assert entry is not None and schema is not None
    out = {
        "algorithm": entry["name"],
        "params": params,
        "schema": schema.to_dict(),
        "target": target,
        "task": entry["task"],
        "online": entry["online"],
    }
    if classes is not None:
        out["classes"] = classes
    if entry["online"]:
        out["learning"] = online
    if segment_by is not None:
        out["segment_by"] = segment_by
    return out


def create_algorithm_model(conn: Connection, doc: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """A model made from a built-in algorithm, with no version until it has learned."""
    name = registry.check_model_name(doc.get("name") or "")
    spec = check_spec(doc)
    registry.create_model(
        conn, name, task=spec["task"], description=doc.get("description") or "", actor=actor
    )
    conn.execute(
        models.update()
        .where(models.c.name == name)
        .values(spec=spec, segment_by=spec.get("segment_by"))
    )
    return {**registry.get_model(conn, name), "spec": spec}


# -- observations ----------------------------------------------------------------------------------


def check_observations(
    spec: dict[str, Any], rows: Any, *, text: bool = False
) -> tuple[list[tuple[dict[str, Any], Any]], list[int], list[dict[str, Any]]]:
    """Good rows as (validated inputs, label) with their indexes in ``rows``, and a rejection
    per bad row (index, field, why).

    ``text``: the cells are text, as read from a CSV file (an empty cell is missing); each is
    read as its field's type, so a cell that does not parse rejects its own row only.
    A segmented model's rows need a good segment (see :func:`segment_of_inputs`)."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(
            "'observations' must be a non-empty list of rows (the fields and the label)",
            details=[{"field": "observations", "reason": "expected a non-empty list"}],
        )
    if len(rows) > MAX_OBSERVATIONS_PER_REQUEST:
        raise InvalidInput(
            f"too many observations: {len(rows)} (at most {MAX_OBSERVATIONS_PER_REQUEST} a call)",
            details=[{"field": "observations", "reason": "too many rows"}],
        )
    schema = parse_schema(spec["schema"])
    target = spec["target"]
    if text:
        rows = _typed_text_rows(spec, schema, rows)
    good: list[tuple[dict[str, Any], Any]] = []
    rejected: list[dict[str, Any]] = []
    positions: list[int] = []  # the index in ``rows`` of each good row
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            rejected.append({"index": i, "field": None, "reason": "each row must be an object"})
            continue
        label = row.get(target)
        problem = _label_problem(spec, label)
        if problem:
            rejected.append({"index": i, "field": target, "reason": problem})
            continue
        inputs = {k: v for k, v in row.items() if k != target}
        try:
            values = schema.validate([inputs])[0]
            checked = dict(zip(schema.names, values, strict=True))
            segment_of_inputs(spec, checked)
        except InvalidInput as exc:
            first = exc.details[0]
            rejected.append({"index": i, "field": first["field"], "reason": first["reason"]})
            continue
        good.append((checked, label))
        positions.append(i)
    return good, positions, rejected


def _typed_text_rows(spec: dict[str, Any], schema: Schema, rows: list[Any]) -> list[Any]:
    """Rows of text cells with each field's cells read as its type, and the labels read as a
    number (regression) or as the model's classes (or integers, booleans when every label
    of the rows reads as one, as a typed file would have them)."""
    from ..inputs.cells import text_values

    dicts = [r for r in rows if isinstance(r, dict)]
    for f in schema.fields:
        cells = text_values([r.get(f.name) for r in dicts], f)
        for r, v in zip(dicts, cells, strict=True):
            if f.name in r:
                r[f.name] = v
    target = spec["target"]
    labels = [r.get(target) for r in dicts]
    for r, v in zip(dicts, _text_labels(spec, labels), strict=True):
        r[target] = v
    return rows


def _text_labels(spec: dict[str, Any], cells: list[Any]) -> list[Any]:
    from ..inputs.cells import missing

    def number(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v  # stays text: the label check names it

    if spec["task"] == "regression":
        return [None if missing(v) else number(v) if isinstance(v, str) else v for v in cells]
    classes = spec.get("classes")
    if classes:
        by_text = {str(c): c for c in classes}
        return [None if missing(v) else by_text.get(str(v).strip(), v) for v in cells]
    present = [str(v).strip() for v in cells if not missing(v)]
    if present and all(re.fullmatch(r"[+-]?\d+", v) for v in present):
        return [None if missing(v) else int(str(v)) for v in cells]
    if present and all(v.lower() in ("true", "false") for v in present):
        return [None if missing(v) else str(v).strip().lower() == "true" for v in cells]
    return [None if missing(v) else v for v in cells]


def segment_of_inputs(spec: dict[str, Any], inputs: dict[str, Any]) -> str | None:
    """The segment of a validated row of a segmented model (None when it is not segmented)."""
    key = spec.get("segment_by")
    if key is None:
        return None
    from ..serving.segments import segment_of

    return segment_of(inputs.get(key), key)


def _label_problem(spec: dict[str, Any], label: Any) -> str:
    if label is None:
        return "missing label"
    if spec["task"] == "regression":
        if (
            isinstance(label, bool)
            or not isinstance(label, int | float)
            or not math.isfinite(label)
        ):
            return "expected a finite number"
        return ""
    if isinstance(label, list | dict | float) and not (
        isinstance(label, float) and label.is_integer()
    ):
        return "expected a class label (string, integer or boolean)"
    classes = spec.get("classes")
    if classes is not None and label not in classes and str(label) not in map(str, classes):
        return f"unknown class {label!r}; classes: {', '.join(map(repr, classes))}"
    return ""


def over_segment_limit(
    conn: Connection,
    model_id: int,
    spec: dict[str, Any],
    good: Sequence[tuple[dict[str, Any], Any]],
    limit: int,
) -> tuple[dict[int, str], list[str], int]:
    """The rows (position in ``good`` -> segment) whose segment would be new to the model past
    ``limit`` segments, the segments refused, and how many the model has. Segments are known
    by the observations stored for them; new ones are admitted in the order they appear."""
    if spec.get("segment_by") is None:
        return {}, [], 0
    segments = [segment_of_inputs(spec, inputs) for inputs, _ in good]
    asked = sorted({s for s in segments if s is not None})
    if not asked:
        return {}, [], 0
    known = set(
        conn.execute(
            sa.select(observations.c.segment)
            .where(observations.c.model_id == model_id, observations.c.segment.in_(asked))
            .distinct()
        ).scalars()
    )
    if len(known) == len(asked):
        return {}, [], 0
    have = int(
        conn.execute(
            sa.select(sa.func.count(sa.distinct(observations.c.segment))).where(
                observations.c.model_id == model_id
            )
        ).scalar()
        or 0
    )
    admitted, refused = set(known), []
    for segment in dict.fromkeys(s for s in segments if s is not None):
        if segment in admitted:
            continue
        if have < limit:
            admitted.add(segment)
            have += 1
        else:
            refused.append(segment)
    blocked = set(refused)
    return {i: s for i, s in enumerate(segments) if s in blocked}, refused, have


def store_observations_once(
    conn: Connection,
    model_id: int,
    good: Sequence[tuple[dict[str, Any], Any]],
    source: str,
    idempotency_key: str | None,
    since: float,
) -> tuple[list[int], bool]:
    """Store the rows unless rows with this idempotency key were stored since ``since``: the
    ids (the stored ones for a repeat) and whether they are new."""
    if idempotency_key is not None:
        stored = list(
            conn.execute(
                sa.select(observations.c.id)
                .where(
                    observations.c.model_id == model_id,
                    observations.c.idempotency_key == idempotency_key,
                    observations.c.ts >= since,
                )
                .order_by(observations.c.id)
            ).scalars()
        )
        if stored:
            return stored, False
    return store_observations(conn, model_id, good, source, idempotency_key=idempotency_key), True


def store_observations(
    conn: Connection,
    model_id: int,
    good: Sequence[tuple[dict[str, Any], Any]],
    source: str,
    prediction_ids: Sequence[str | None] | None = None,
    idempotency_key: str | None = None,
) -> list[int]:
    """Insert the rows in one statement; their ids, in order."""
    now = time.time()
    spec = conn.execute(sa.select(models.c.spec).where(models.c.id == model_id)).scalar() or {}
    values = [
        {
            "model_id": model_id,
            "ts": now,
            "inputs": orjson.dumps(inputs).decode(),
            "label": label,
            "source": source,
            "prediction_id": prediction_ids[i] if prediction_ids else None,
            "segment": segment_of_inputs(spec, inputs),
            "idempotency_key": idempotency_key,
        }
        for i, (inputs, label) in enumerate(good)
    ]
    return list(
        conn.execute(
            observations.insert().returning(observations.c.id, sort_by_parameter_order=True),
            values,
        ).scalars()
    )


def observe_feedback(
    conn: Connection,
    items: Sequence[dict[str, Any]],
    archived: dict[str, tuple[Any, int]] | None = None,
) -> int:
    """Labels of predictions of models made from algorithms become observations of the
    predictions' inputs (in the same transaction as the feedback); how many. ``archived``:
    the archived ledger rows of predictions no longer in the ledger table."""
    from ..ledger import get_prediction

    by_model: dict[int, list[tuple[dict[str, Any], Any, str]]] = {}
    specs: dict[str, tuple[int, dict[str, Any]] | None] = {}
    for item in items:
        record = get_prediction(conn, item["prediction_id"], known=archived)
        name = record["model"]
        if name not in specs:
            row = conn.execute(
                sa.select(models.c.id, models.c.spec).where(models.c.name == name)
            ).first()
            specs[name] = (row.id, row.spec) if row is not None and row.spec else None
        known = specs[name]
        if known is None or record.get("shadow"):
            continue
        model_id, spec = known
        if _label_problem(spec, item["label"]):
            continue  # a label this model cannot learn from (the feedback itself is kept)
        fields = [f["name"] for f in spec["schema"]["fields"]]
        inputs = {f: record["inputs"].get(f) for f in fields}
        try:
            segment_of_inputs(spec, inputs)
        except InvalidInput:
            continue  # no segment to learn it in (the feedback itself is kept)
        by_model.setdefault(model_id, []).append((inputs, item["label"], item["prediction_id"]))
    for model_id, rows in by_model.items():
        store_observations(
            conn, model_id, [(i, lab) for i, lab, _ in rows], "feedback", [p for _, _, p in rows]
        )
    return sum(len(r) for r in by_model.values())


def observation_count(conn: Connection, model_id: int, after: int = 0) -> tuple[int, int]:
    """How many observations a model has after ``after``, and the newest id."""
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(observations.c.id), 0)).where(
            observations.c.model_id == model_id, observations.c.id > after
        )
    ).one()
    return int(row[0]), int(row[1])


def read_observations(
    conn: Connection,
    model_id: int,
    *,
    after: int = 0,
    through: int | None = None,
    limit: int = 1000,
    segment: str | None = None,
) -> list[tuple[int, dict[str, Any], Any, str | None]]:
    """(id, inputs, label, prediction id) in id order, after ``after`` (and up to ``through``),
    of one segment when ``segment`` is given."""
    query = sa.select(
        observations.c.id, observations.c.inputs, observations.c.label, observations.c.prediction_id
    ).where(observations.c.model_id == model_id, observations.c.id > after)
    if segment is not None:
        query = query.where(observations.c.segment == segment)
    if through is not None:
        query = query.where(observations.c.id <= through)
    rows = conn.execute(query.order_by(observations.c.id).limit(limit))
    return [(r.id, orjson.loads(r.inputs), r.label, r.prediction_id) for r in rows]


# -- datasets ---------------------------------------------------------------------------------------


def _frame_rows(
    conn: Connection, model_id: int, through: int
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Every observation up to ``through``; of several labels for one prediction, the newest."""
    newest: dict[str, int] = {}
    after = 0
    pending: list[tuple[int, dict[str, Any], Any, str | None]] = []
    while True:
        chunk = read_observations(conn, model_id, after=after, through=through, limit=5000)
        if not chunk:
            break
        pending.extend(chunk)
        for oid, _, _, pid in chunk:
            if pid is not None:
                newest[pid] = oid
        after = chunk[-1][0]
    for oid, inputs, label, pid in pending:
        if pid is None or newest[pid] == oid:
            yield inputs, label


@dataclass(frozen=True)
class SnapshotData:
    """A model's observations so far, as Parquet bytes not yet stored."""

    model_id: int
    rows: int
    through: int
    fields: list[str]
    target: str
    parquet: bytes


def snapshot_data(conn: Connection, name: str) -> SnapshotData:
    """Read the model's observations so far into a Parquet file's bytes."""
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        raise ModelportError(
            "dataset snapshots are Parquet files and pyarrow is missing (it is part of the core "
            "install): pip install pyarrow"
        ) from None
    model = registry.model_row(conn, name)
    spec = spec_of(conn, name)
    count, through = observation_count(conn, model.id)
    if count == 0:
        raise Conflict(f"model {name!r} has no observations to snapshot yet")
    fields = [f["name"] for f in spec["schema"]["fields"]]
    rows = [
        [inputs.get(f) for f in fields] + [label]
        for inputs, label in _frame_rows(conn, model.id, through)
    ]
    frame = pd.DataFrame(rows, columns=[*fields, spec["target"]])
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return SnapshotData(model.id, len(frame), through, fields, spec["target"], buf.getvalue())


def record_snapshot(conn: Connection, data: SnapshotData, sha: str) -> dict[str, Any]:
    """Record a stored snapshot as a dataset (reused when one with the same content exists)."""
    existing = conn.execute(sa.select(datasets).where(datasets.c.id == sha)).first()
    if existing is None:
        conn.execute(
            datasets.insert().values(
                id=sha,
                model_id=data.model_id,
                rows=data.rows,
                through_observation=data.through,
                fields=data.fields,
                target=data.target,
                size_bytes=len(data.parquet),
                created_at=time.time(),
            )
        )
    return get_dataset(conn, sha)


def snapshot(store: Any, artifacts: Any, name: str) -> dict[str, Any]:
    """Write the model's observations so far as a Parquet dataset; its record.

    The blob is stored between the read and the write transaction: a remote artifact store
    may take a while, and no transaction should be open meanwhile.
    """
    with store.read() as conn:
        data = snapshot_data(conn, name)
    sha, _ = artifacts.put(io.BytesIO(data.parquet))
    with store.transaction() as conn:
        return record_snapshot(conn, data, sha)


def get_dataset(conn: Connection, dataset_id: str) -> dict[str, Any]:
    row = conn.execute(sa.select(datasets).where(datasets.c.id == dataset_id)).first()
    if row is None:
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    model = conn.execute(sa.select(models.c.name).where(models.c.id == row.model_id)).scalar_one()
    return {
        "id": row.id,
        "model": model,
        "rows": row.rows,
        "through_observation": row.through_observation,
        "fields": row.fields,
        "target": row.target,
        "size_bytes": row.size_bytes,
        "created": iso(row.created_at),
    }


def load_dataset(artifacts: Any, dataset_id: str) -> Any:
    """The snapshot's rows as a DataFrame."""
    import pandas as pd

    return pd.read_parquet(artifacts.local_path(dataset_id))
