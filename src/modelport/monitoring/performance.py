"""Live performance per version: feedback labels joined to the predictions they judge.

For a window of prediction times (``since`` to ``until``), each version's labelled predictions
(the newest label per prediction, shadow copies left out, optionally one consumer's) are scored
with scikit-learn's metrics: accuracy, macro precision/recall/F1 (and the positive class's
where there are two classes), log loss and ROC AUC where the ledger kept probabilities, or MAE,
RMSE and R² for regression. Label coverage counts predictions (rows, not requests); label delay
is feedback time minus prediction time. The window is also cut into equal time buckets, each
with its own figures. At most ``max_rows`` labels are read, the newest predictions first; the
answer says when that cut the window short.

Prediction counts come from the ledger's per-minute roll-ups (:mod:`modelport.store.rollups`),
so they cost the window's minutes; labelled predictions the retention moved to the archive
(:mod:`modelport.store.archive`) are read from there, once each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..ids import first_id_at
from ..registry import models as registry
from ..store import rollups
from ..store.archive import Archive
from ..store.tables import feedback, predictions
from ..timefmt import iso

#: Ledger rows whose outputs are read in one query.
_CHUNK = 500


@dataclass(frozen=True)
class Labelled:
    """One labelled prediction."""

    version: int
    ts: float  # prediction time
    delay: float  # label time - prediction time
    label: Any
    prediction: Any
    classes: list[str] | None
    probabilities: list[float] | None


def window_dict(since: float, until: float) -> dict[str, Any]:
    return {"since": iso(since), "until": iso(until), "seconds": until - since}


#: How long before its ledger time (``ts``) a prediction's id may have been made: ids are made
#: before scoring, the time is taken after.
ID_MARGIN = 3600.0


def read_labelled(
    conn: Connection, name: str, since: float, until: float, max_rows: int, **filters: Any
) -> tuple[list[Labelled], bool]:
    """The newest label of each prediction of model ``name`` in ``[since, until)`` (shadow
    copies left out; of the version, consumer and segment in ``filters`` that are not None),
    newest predictions first, at most ``max_rows`` (and whether there were more).

    Driven from the feedback, whose ledger ids (time-ordered) narrow it to the window, newest
    first, then the predictions by primary key, checked here: the cost follows the labels
    read, not the window's predictions (a database that plans from the predictions' time
    index reads them all).
    """
    wanted = {k: v for k, v in filters.items() if v is not None}
    newest = (
        sa.select(sa.func.max(feedback.c.id))
        .where(
            feedback.c.ledger_id >= first_id_at(since - ID_MARGIN),
            feedback.c.ledger_id < first_id_at(until + 1),
            feedback.c.label.is_not(None),
        )
        .group_by(feedback.c.ledger_id, feedback.c.ledger_row)
    )
    labels = conn.execute(
        sa.select(feedback.c.ledger_id, feedback.c.ledger_row, feedback.c.label, feedback.c.ts)
        .where(feedback.c.id.in_(newest))
        .order_by(feedback.c.ledger_id.desc(), feedback.c.ledger_row.desc())
    )
    found: list[tuple[Any, Any]] = []
    pending: list[Any] = []

    def flush() -> None:
        chunk = sorted({f.ledger_id for f in pending})
        rows = {
            r.id: r
            for r in conn.execute(
                sa.select(
                    predictions.c.id,
                    predictions.c.ts,
                    predictions.c.version,
                    predictions.c.outputs,
                    predictions.c.model,
                    predictions.c.shadow,
                    predictions.c.consumer,
                    predictions.c.segment,
                ).where(predictions.c.id.in_(chunk))
            )
        }
        rows = {
            k: r
            for k, r in rows.items()
            if r.model == name
            and not r.shadow
            and since <= r.ts < until
            and all(getattr(r, f) == v for f, v in wanted.items())
        }
        found.extend((f, rows[f.ledger_id]) for f in pending if f.ledger_id in rows)
        pending.clear()

    for f in labels:
        pending.append(f)
        if len(pending) >= _CHUNK:
            flush()
            if len(found) > max_rows:
                break
    labels.close()
    if pending:
        flush()
    found.sort(key=lambda pair: (pair[1].ts, pair[0].ledger_row), reverse=True)
    truncated = len(found) > max_rows
    out = [
        labelled(r.version, r.ts, f.ts, f.label, r.outputs, f.ledger_row)
        for f, r in found[:max_rows]
    ]
    return out, truncated


def labelled(
    version: int, ts: float, label_ts: float, label: Any, outputs: dict[str, Any], at: int
) -> Labelled:
    """The ``at``-th prediction of a ledger row's ``outputs`` with its label."""
    probas = outputs.get("probabilities")
    classes = outputs.get("classes")
    return Labelled(
        version=int(version),
        ts=float(ts),
        delay=float(label_ts) - float(ts),
        label=label,
        prediction=outputs["predictions"][at],
        classes=[str(c) for c in classes] if classes and probas is not None else None,
        probabilities=probas[at] if probas is not None else None,
    )


def archived_labelled(
    conn: Connection,
    archive: Archive,
    name: str,
    since: float,
    until: float,
    **filters: Any,
) -> list[Labelled]:
    """The newest label of each archived prediction in the window that the ledger table no
    longer holds (rows in both are read from the table)."""
    rows = archive.window(
        conn, name, since, until, columns=("id", "ts", "version", "outputs"), **filters
    )
    if not rows:
        return []
    ids = [r.id for r in rows]
    hot: set[str] = set()
    labels: dict[tuple[str, int], Any] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        hot.update(
            conn.execute(sa.select(predictions.c.id).where(predictions.c.id.in_(chunk))).scalars()
        )
        for f in conn.execute(
            sa.select(feedback.c.ledger_id, feedback.c.ledger_row, feedback.c.label, feedback.c.ts)
            .where(feedback.c.ledger_id.in_(chunk), feedback.c.label.is_not(None))
            .order_by(feedback.c.id)
        ):
            labels[(f.ledger_id, f.ledger_row)] = f
    by_id = {r.id: r for r in rows if r.id not in hot}
    return [
        labelled(r.version, r.ts, f.ts, f.label, r.outputs, at)
        for (ledger_id, at), f in labels.items()
        if (r := by_id.get(ledger_id)) is not None
    ]


def classification_metrics(items: Sequence[Labelled]) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 (and the positive class's for two classes), log
    loss and ROC AUC when every item has probabilities over classes that include its label."""
    from sklearn import metrics

    if not items:
        return {}
    y_true = [str(i.label) for i in items]
    y_pred = [str(i.prediction) for i in items]
    out: dict[str, Any] = {"accuracy": float(metrics.accuracy_score(y_true, y_pred))}
    p, r, f, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    out.update(precision=float(p), recall=float(r), f1=float(f))
    classes = items[0].classes
    with_probas = classes is not None and all(
        i.classes == classes and i.probabilities is not None for i in items
    )
    known = sorted(set(y_true) | set(y_pred)) if classes is None else classes
    if len(known) == 2:
        positive = known[1]
        p, r, f, _ = metrics.precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=positive, zero_division=0
        )
        out.update(
            positive_class=positive,
            precision_positive=float(p),
            recall_positive=float(r),
            f1_positive=float(f),
        )
    if not with_probas or classes is None or not set(y_true) <= set(classes):
        return out
    proba = np.asarray([i.probabilities for i in items], dtype=float)
    out["log_loss"] = float(metrics.log_loss(y_true, proba, labels=classes))
    if len(set(y_true)) < 2:
        return out  # ROC AUC needs both kinds of answer
    try:
        if len(classes) == 2:
            truth = [y == classes[1] for y in y_true]
            out["roc_auc"] = float(metrics.roc_auc_score(truth, proba[:, 1]))
        elif len(set(y_true)) == len(classes):
            out["roc_auc"] = float(
                metrics.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
            )
    except ValueError:
        pass  # probabilities that do not sum to one, or a class missing: no AUC
    return out


def regression_metrics(items: Sequence[Labelled]) -> dict[str, Any]:
    """MAE and RMSE (and R² from two labels on) over items whose label and prediction are
    numbers."""
    from sklearn import metrics

    pairs = [
        (float(i.label), float(i.prediction))
        for i in items
        if _number(i.label) and _number(i.prediction)
    ]
    if not pairs:
        return {}
    y_true, y_pred = (np.asarray(v) for v in zip(*pairs, strict=True))
    out = {
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(metrics.mean_squared_error(y_true, y_pred))),
    }
    if len(pairs) >= 2:
        out["r2"] = float(metrics.r2_score(y_true, y_pred))
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def report(
    conn: Connection,
    name: str,
    *,
    since: float,
    until: float,
    version: int | None = None,
    buckets: int = 24,
    consumer: str | None = None,
    segment: str | None = None,
    max_rows: int = 200_000,
    archive: Archive | None = None,
) -> dict[str, Any]:
    """The performance answer of ``GET /v1/models/{name}/performance`` (labelled
    predictions in the ``archive`` too, when given)."""
    model = registry.model_row(conn, name)
    if version is not None:
        registry.version_row(conn, name, version)  # 404 for an unknown version
    filters: dict[str, Any] = {"version": version, "consumer": consumer, "segment": segment}
    counts = rollups.counts(conn, name, since, until, archive=archive, **filters)
    items, truncated = read_labelled(conn, name, since, until, max_rows, **filters)
    if archive is not None and not truncated:
        items += archived_labelled(conn, archive, name, since, until, **filters)
        items.sort(key=lambda i: i.ts, reverse=True)
        truncated = len(items) > max_rows
        items = items[:max_rows]
    task = "regression" if model.task == "regression" else "classification"
    score = regression_metrics if task == "regression" else classification_metrics
    by_version: dict[int, list[Labelled]] = {}
    for item in items:
        by_version.setdefault(item.version, []).append(item)
    numbers = sorted(set(counts) | set(by_version) | ({version} if version is not None else set()))
    step = (until - since) / buckets
    out = []
    for number in numbers:
        mine = by_version.get(number, [])
        made = counts.get(number, 0)
        delays = np.asarray([i.delay for i in mine], dtype=float)
        slots: list[list[Labelled]] = [[] for _ in range(buckets)]
        for item in mine:
            slots[min(int((item.ts - since) / step), buckets - 1)].append(item)
        out.append(
            {
                "version": number,
                "predictions": made,
                "labelled": len(mine),
                "coverage": len(mine) / made if made else None,
                "label_delay_seconds": (
                    {
                        "median": float(np.median(delays)),
                        "p90": float(np.percentile(delays, 90)),
                    }
                    if delays.size
                    else None
                ),
                "metrics": score(mine),
                "series": [
                    {
                        "start": iso(since + k * step),
                        "end": iso(since + (k + 1) * step),
                        "labelled": len(slot),
                        "metrics": score(slot),
                    }
                    for k, slot in enumerate(slots)
                ],
            }
        )
    return {
        "model": name,
        "task": task,
        "window": window_dict(since, until),
        "consumer": consumer,
        "segment": segment,
        "truncated": truncated,
        "max_rows": max_rows,
        "versions": out,
    }
