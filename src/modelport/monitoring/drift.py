"""Drift: how a version's live inputs and predictions compare with its reference.

A version's reference (``versions.reference``) is a seeded sample of the inputs it was trained
on (at push, from the client's training data; at retrain, from the dataset snapshot; for online
snapshots, from the observations the learner saw; or set later from a window of its own
traffic) and the version's predictions on that sample:

    {"source": "train_data", "rows": 150, "fields": ["a", "b"], "sample": [[1.0, "x"], ...],
     "predictions": [...], "seed": 0, "created": 1764000000.0}

Per field and for the predictions, numbers get the population stability index over the
reference's deciles and the two-sample Kolmogorov-Smirnov test; categories, booleans and
strings get a chi-square test of the two samples' counts and the PSI over categories (values the
reference never saw share one bin). A field drifts when a figure crosses the model's thresholds
(:mod:`modelport.monitoring.checks`), judged only once the window has ``min_rows`` rows.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import ledger
from ..registry import models as registry
from ..store import rollups
from ..store.tables import predictions

if TYPE_CHECKING:
    from ..inputs.schema import Schema

log = logging.getLogger("modelport.drift")

#: Rows of training data kept as a version's reference.
REFERENCE_ROWS = 2000
#: The floor of a bin's share, so an empty bin keeps the PSI finite.
EPSILON = 1e-4
#: The bin of categories the reference never saw.
UNSEEN = "(unseen)"
NUMERIC_TYPES = frozenset({"number", "integer"})


# -- statistics ------------------------------------------------------------------------------------


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two count vectors: sum((a - e) * ln(a / e)) over shares floored at EPSILON."""
    from scipy import special

    e = np.maximum(expected / max(expected.sum(), 1), EPSILON)
    a = np.maximum(actual / max(actual.sum(), 1), EPSILON)
    return float(np.sum(special.rel_entr(a, e) + special.rel_entr(e, a)))


def decile_edges(reference: np.ndarray) -> np.ndarray:
    """The inner bin edges: the reference's deciles, without repeats."""
    return np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))


def numeric_psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """PSI over ten bins cut at the reference's deciles (open at both ends)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    edges = decile_edges(ref)
    bins = len(edges) + 1
    expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=bins)
    actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins)
    return _psi(expected.astype(float), actual.astype(float))


def category_counts(
    reference: Sequence[Any], current: Sequence[Any]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Counts per category (the reference's, in order, then one bin for unseen values)."""
    ref = Counter(str(v) for v in reference)
    cur = Counter(str(v) if str(v) in ref else UNSEEN for v in current)
    names = [*sorted(ref), UNSEEN]
    return (
        names,
        np.asarray([ref.get(n, 0) for n in names], dtype=float),
        np.asarray([cur.get(n, 0) for n in names], dtype=float),
    )


def categorical_psi(reference: Sequence[Any], current: Sequence[Any]) -> float:
    _, expected, actual = category_counts(reference, current)
    return _psi(expected, actual)


def compare_numeric(reference: Sequence[float], current: Sequence[float]) -> dict[str, Any]:
    from scipy import stats

    ks = stats.ks_2samp(np.asarray(reference, dtype=float), np.asarray(current, dtype=float))
    return {
        "kind": "numeric",
        "psi": numeric_psi(reference, current),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
    }


def compare_categorical(reference: Sequence[Any], current: Sequence[Any]) -> dict[str, Any]:
    from scipy import stats

    _, expected, actual = category_counts(reference, current)
    table = np.vstack([expected, actual])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        chi2, pvalue = 0.0, 1.0  # one category in both: nothing to tell apart
    else:
        found = stats.chi2_contingency(table, correction=False)
        chi2, pvalue = float(found.statistic), float(found.pvalue)
    return {
        "kind": "categorical",
        "psi": _psi(expected, actual),
        "chi2": chi2,
        "chi2_pvalue": pvalue,
    }


def judge(figures: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    """Why ``figures`` count as drift under ``thresholds`` (empty: no drift)."""
    reasons = []
    if figures["psi"] >= thresholds["psi"]:
        reasons.append(f"psi {figures['psi']:.3f} >= {thresholds['psi']:g}")
    if figures["kind"] == "numeric" and figures["ks_pvalue"] < thresholds["ks_pvalue"]:
        reasons.append(
            f"ks p-value {figures['ks_pvalue']:.3g} < {thresholds['ks_pvalue']:g} "
            f"(statistic {figures['ks_statistic']:.3f})"
        )
    if figures["kind"] == "categorical" and figures["chi2_pvalue"] < thresholds["chi2_pvalue"]:
        reasons.append(f"chi2 p-value {figures['chi2_pvalue']:.3g} < {thresholds['chi2_pvalue']:g}")
    return reasons


def compare(
    field: str, numeric: bool, reference: Sequence[Any], current: Sequence[Any]
) -> dict[str, Any] | None:
    """One field's figures (missing values left out); None when either side has no values."""
    ref = [v for v in reference if v is not None]
    cur = [v for v in current if v is not None]
    if not ref or not cur:
        return None
    if numeric:
        try:
            return {"field": field, **compare_numeric(ref, cur)}
        except (TypeError, ValueError):
            pass  # not numbers after all: compare them as categories
    return {"field": field, **compare_categorical(ref, cur)}


# -- references ------------------------------------------------------------------------------------


def sample_rows(rows: Sequence[Any], size: int = REFERENCE_ROWS, seed: int = 0) -> list[Any]:
    """A seeded sample of at most ``size`` rows, in their order."""
    if len(rows) <= size:
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[i] for i in keep]


class Reservoir:
    """A uniform, seeded sample of at most ``size`` rows of a stream (Algorithm R): the
    observations an online learner saw."""

    def __init__(self, size: int = REFERENCE_ROWS, seed: int = 0) -> None:
        self.size = size
        self.rows: list[list[Any]] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, rows: Sequence[list[Any]]) -> None:
        for row in rows:
            self.seen += 1
            if len(self.rows) < self.size:
                self.rows.append(row)
            else:
                at = self._rng.randrange(self.seen)
                if at < self.size:
                    self.rows[at] = row


def build_reference(
    source: str,
    fields: list[str],
    rows: Sequence[Sequence[Any]],
    predict: Callable[[list[list[Any]]], list[Any]] | None,
    *,
    total: int | None = None,
    seed: int = 0,
    predictions_given: list[Any] | None = None,
) -> dict[str, Any]:
    """A reference document from rows in field order: sampled, and scored by ``predict``
    (or with the predictions that were served, ``predictions_given``, row for row)."""
    picked = sample_rows(list(range(len(rows))), seed=seed)
    sample = [list(rows[i]) for i in picked]
    if predictions_given is not None:
        preds: list[Any] | None = [predictions_given[i] for i in picked]
    else:
        preds = predict(sample) if predict is not None and sample else None
    return {
        "source": source,
        "rows": total if total is not None else len(rows),
        "fields": fields,
        "sample": orjson.loads(orjson.dumps(sample, option=orjson.OPT_SERIALIZE_NUMPY)),
        "predictions": (
            orjson.loads(orjson.dumps(preds, option=orjson.OPT_SERIALIZE_NUMPY))
            if preds is not None
            else None
        ),
        "seed": seed,
        "created": time.time(),
    }


def reference_from_frame(
    source: str, frame: Any, fields: list[str], model: Any, *, seed: int = 0
) -> dict[str, Any]:
    """A reference from a DataFrame of training data, scored by an estimator."""
    picked = frame[fields].iloc[sample_rows(list(range(len(frame))), seed=seed)]
    preds = np.asarray(model.predict(picked)).tolist()
    rows = [[_plain(v) for v in row] for row in picked.itertuples(index=False)]
    return build_reference(
        source, fields, rows, None, total=len(frame), seed=seed, predictions_given=preds
    )


def safe_reference(make: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """``make()``, or None (logged) when it fails: a version is never refused for want of a
    drift reference."""
    try:
        return make()
    except Exception as exc:
        log.warning("no drift reference: %s: %s", type(exc).__name__, exc)
        return None


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def reference_from_sample(doc: Any, schema: Schema, loaded: Any) -> dict[str, Any] | None:
    """A pushed version's reference from the sample of training rows the client sent
    (``{"fields": [...], "rows": [[...], ...], "total": n}``), scored by the loaded model.

    A sample that does not fit the version's schema gives no reference (logged): the push
    itself stands on its own checks.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        return None
    fields = doc.get("fields")
    if not isinstance(fields, list) or not set(schema.names) <= set(fields):
        log.warning("reference sample skipped: its fields do not cover the schema")
        return None
    rows = sample_rows(doc["rows"])
    try:
        records = [dict(zip(fields, row, strict=True)) for row in rows]
        table = schema.table([{n: r.get(n) for n in schema.names} for r in records])
        preds, _ = loaded.predict_with_proba(table)
    except Exception as exc:  # a sample the schema or the model refuses: no reference
        log.warning("reference sample skipped: %s", exc)
        return None
    total = doc.get("total")
    return build_reference(
        "train_data",
        list(schema.names),
        table.rows(),
        None,
        total=total if isinstance(total, int) else len(doc["rows"]),
        predictions_given=np.asarray(preds).tolist()
        if isinstance(preds, np.ndarray)
        else list(preds),
    )


def reference_from_traffic(
    conn: Connection, name: str, version: int, since: float, until: float, *, max_rows: int
) -> dict[str, Any] | None:
    """A reference from a window of the version's own logged traffic (shadow rows included:
    they are the version's answers too); None when it served nothing then."""
    fields, rows, preds = _window_rows(
        conn,
        [
            predictions.c.model == name,
            predictions.c.version == version,
            predictions.c.ts >= since,
            predictions.c.ts < until,
        ],
        max_rows,
    )
    if not rows:
        return None
    return build_reference("traffic", fields, rows, None, predictions_given=preds)


# -- the report ------------------------------------------------------------------------------------


#: The slices of a window a drift sample is drawn from, when the window holds more
#: predictions than the sample.
STRATA = 20


def _window_rows(
    conn: Connection,
    where: list[Any],
    max_rows: int,
    slices: list[tuple[float, float, int]] | None = None,
) -> tuple[list[str], list[list[Any]], list[Any]]:
    """The newest ledger rows in scope, up to ``max_rows`` predictions (or, given time slices
    with a quota each, the newest of each slice up to its quota): the fields of the newest
    row, its rows by those fields (older rows with other fields are mapped by name), and the
    predictions."""
    fields: list[str] = []
    rows: list[list[Any]] = []
    preds: list[Any] = []
    parts = [(where, max_rows)]
    if slices is not None:
        # Each slice's own time bounds replace the window's: with both, SQLite may range
        # over the whole window in the time index for every slice.
        kept = [w for w in where if not _on_time(w)]
        parts = [([*kept, predictions.c.ts >= a, predictions.c.ts < b], n) for a, b, n in slices]
    for part, quota in parts:
        if quota < 1:
            continue
        taken = 0
        result = conn.execute(
            sa.select(predictions.c.fields, predictions.c.inputs, predictions.c.outputs)
            .where(*part)
            .order_by(predictions.c.ts.desc())
            .limit(quota)  # every ledger row holds at least one prediction
        )
        for r in result:
            names = orjson.loads(r.fields)
            if not fields:
                fields = names
            decoded = ledger.decode_inputs(r.inputs, len(names))
            if names != fields:
                index = {n: i for i, n in enumerate(names)}
                decoded = [
                    [row[index[f]] if f in index else None for f in fields] for row in decoded
                ]
            rows.extend(decoded[: quota - taken])
            preds.extend(r.outputs["predictions"][: quota - taken])
            taken = min(quota, taken + len(decoded))
            if taken >= quota:
                break
        result.close()
    return fields, rows[:max_rows], preds[:max_rows]


def _on_time(condition: Any) -> bool:
    """Whether a condition bounds the ledger rows' time."""
    return getattr(condition, "left", None) is predictions.c.ts


def sample_slices(
    conn: Connection,
    name: str,
    since: float,
    until: float,
    max_rows: int,
    **filters: Any,
) -> list[tuple[float, float, int]]:
    """A window cut into :data:`STRATA` equal slices, newest first, each with its share of a
    ``max_rows`` sample: in proportion to its predictions (the roll-ups' minutes), so a
    stratified sample of the window whose size is fixed."""
    step = (until - since) / STRATA
    per = [0] * STRATA
    for minute, n in rollups.per_minute(conn, name, since, until, **filters):
        per[min(STRATA - 1, max(0, int((minute - since) // step)))] += n
    total = sum(per) or 1
    return [
        (since + k * step, since + (k + 1) * step, round(max_rows * per[k] / total))
        for k in reversed(range(STRATA))
    ]


def _kinds(schema: dict[str, Any]) -> dict[str, bool]:
    """Per field of a schema document: numeric or not."""
    return {f["name"]: f.get("type") in NUMERIC_TYPES for f in schema.get("fields", [])}


def version_drift(
    reference: dict[str, Any] | None,
    schema: dict[str, Any],
    task: str,
    fields: list[str],
    rows: list[list[Any]],
    preds: list[Any],
    thresholds: dict[str, Any],
) -> dict[str, Any]:
    """One version's entry of the drift report."""
    out: dict[str, Any] = {
        "rows": len(rows),
        "reference_rows": None,
        "reference": reference is not None,
        "reason": None,
        "drifted": False,
        "fields": [],
        "predictions": None,
    }
    if reference is None:
        out["reason"] = (
            "no reference: push with training data, or set one from a window of traffic "
            "(PUT /v1/models/{name}/versions/{version}/reference)"
        )
        return out
    sample = reference["sample"]
    out["reference_rows"] = len(sample)
    if not rows:
        out["reason"] = "no traffic in the window"
        return out
    judged = len(rows) >= thresholds["min_rows"]
    if not judged:
        out["reason"] = (
            f"{len(rows)} rows in the window; drift is judged from {thresholds['min_rows']}"
        )
    kinds = _kinds(schema)
    ref_index = {n: i for i, n in enumerate(reference["fields"])}
    cur_index = {n: i for i, n in enumerate(fields)}
    for name in reference["fields"]:
        if name not in cur_index:
            continue
        figures = compare(
            name,
            kinds.get(name, False),
            [row[ref_index[name]] for row in sample],
            [row[cur_index[name]] for row in rows],
        )
        if figures is not None:
            out["fields"].append(_judged(figures, thresholds, judged))
    if reference.get("predictions"):
        numeric = task == "regression" or all(
            isinstance(p, float) for p in reference["predictions"][:100]
        )
        figures = compare("prediction", numeric, reference["predictions"], preds)
        out["predictions"] = _judged(figures, thresholds, judged) if figures else None
    out["drifted"] = any(f["drifted"] for f in out["fields"]) or bool(
        out["predictions"] and out["predictions"]["drifted"]
    )
    return out


def _judged(figures: dict[str, Any], thresholds: dict[str, Any], judged: bool) -> dict[str, Any]:
    reasons = judge(figures, thresholds) if judged else []
    return {**figures, "drifted": bool(reasons), "reasons": reasons}


def report(
    conn: Connection,
    name: str,
    *,
    since: float,
    until: float,
    thresholds: dict[str, Any],
    version: int | None = None,
    max_rows: int = 50_000,
    segment: str | None = None,
) -> list[dict[str, Any]]:
    """Per version with traffic in the window (or the one asked for; of one segment when
    given): its drift entry.
    Versions without a reference get their row count only (no inputs are read)."""
    model = registry.model_row(conn, name)
    where = rollups.ledger_scope(name, since, until, version=version, segment=segment)
    counts = rollups.counts(conn, name, since, until, version=version, segment=segment)
    if version is not None:
        registry.version_row(conn, name, version)  # 404 for an unknown version
        counts.setdefault(version, 0)
    out = []
    for number in sorted(counts):
        row = registry.version_row(conn, name, number)
        if row.reference is None or not counts[number]:
            entry = version_drift(
                row.reference, row.input_schema, model.task, [], [], [], thresholds
            )
            entry["rows"] = counts[number]
        else:
            # A window with more predictions than the sample: the newest of each slice, so
            # the sample spans the window and its size (and cost) stays fixed.
            slices = None
            if counts[number] > max_rows:
                slices = sample_slices(
                    conn, name, since, until, max_rows, version=number, segment=segment
                )
            fields, rows, preds = _window_rows(
                conn, [*where, predictions.c.version == number], max_rows, slices
            )
            entry = version_drift(
                row.reference, row.input_schema, model.task, fields, rows, preds, thresholds
            )
        out.append({"version": number, **entry})
    return out
