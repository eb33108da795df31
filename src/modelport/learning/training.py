"""Training and evaluating a built-in algorithm: a seeded holdout split, the fit (batch, or in
mini-batches for online estimators), and the holdout metrics a promotion gate compares.

Runs in job workers (and tests), never in a serving process."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import InvalidInput
from .algorithms import ONLINE_TRAIN_BATCH, build_estimator, check_spec, lookup
from .online import (
    checked_codes,
    class_codes,
    classes_of,
    label_array,
    numeric_labels,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..inputs.schema import Schema

Task = Literal["classification", "regression"]
ParamKind = Literal["int", "float", "bool", "choice"]
#: Rows per ``learn`` call when an online algorithm is trained on a dataset.


@dataclass(frozen=True)
class TrainResult:
    """A fitted estimator, its holdout metrics, and what it was trained with."""

    estimator: Any
    algorithm: str
    task: Task
    params: dict[str, Any]
    metrics: dict[str, Any]
    train_rows: int
    holdout_rows: int
    #: The holdout rows (inputs and target), to score another model on the very same rows.
    holdout: pd.DataFrame
    #: Rows left out because their label was missing.
    skipped_rows: int
    seed: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        """Everything but the estimator and the rows, JSON-ready."""
        return {
            "algorithm": self.algorithm,
            "task": self.task,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "train_rows": self.train_rows,
            "holdout_rows": self.holdout_rows,
            "skipped_rows": self.skipped_rows,
            "seed": self.seed,
            "seconds": self.seconds,
        }


def split_positions(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and holdout row positions, each in data order; a function of n and seed only."""
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout < 1:
        raise InvalidInput(
            f"holdout must be a fraction in [0, 1), not {holdout!r}",
            details=[{"field": "holdout", "reason": "expected a number from 0 up to (not) 1"}],
        )
    n_hold = min(max(1, round(n * holdout)), n - 1) if holdout > 0 and n >= 2 else 0
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def train(
    algorithm: str,
    params: Mapping[str, Any],
    schema: Schema,
    frame: pd.DataFrame,
    target: str,
    *,
    holdout: float = 0.2,
    seed: int = 0,
    classes: Sequence[Any] | None = None,
) -> TrainResult:
    """Train an algorithm on a dataset and score it on a holdout drawn with ``seed``.

    Rows without a label are skipped. Classifiers use ``classes`` when given (labels are matched
    to them by key, so ``1.0`` from a Parquet file is the class ``1``), else the labels present.
    Online algorithms learn the training rows in data order, ``ONLINE_TRAIN_BATCH`` at a time,
    ``params["epochs"]`` times over: what online learning would have done with the same stream.
    """
    started = time.perf_counter()
    entry = lookup(algorithm)
    full = check_spec(algorithm, params, schema=schema)
    data, skipped = _labelled(schema, frame, target)
    if entry.task == "classification":
        classes = list(classes) if classes is not None else classes_of(data[target].tolist())
        codes = checked_codes(classes, data[target].tolist(), target)
        labels = label_array([classes[c] for c in codes.tolist()])
    else:
        labels = numeric_labels(data[target].tolist(), target)
    data[target] = labels
    train_at, hold_at = split_positions(len(data), holdout, seed)
    X = data[schema.names]
    X_train, y_train = X.iloc[train_at], labels[train_at]
    if entry.task == "classification" and not entry.online and len(set(y_train.tolist())) < 2:
        reason = "the training rows need at least two classes"
        raise InvalidInput(reason, details=[{"field": target, "reason": reason}])
    estimator = build_estimator(algorithm, full, schema, classes=classes, target=target)
    if entry.online:
        for _ in range(full["epochs"]):
            for start in range(0, len(X_train), ONLINE_TRAIN_BATCH):
                stop = start + ONLINE_TRAIN_BATCH
                estimator.learn(X_train.iloc[start:stop], y_train[start:stop])
    else:
        estimator.fit(X_train, y_train)
    held = data.iloc[hold_at].reset_index(drop=True)
    metrics = evaluate(estimator, held, target, entry.task) if len(held) else {}
    return TrainResult(
        estimator=estimator,
        algorithm=entry.name,
        task=entry.task,
        params=full,
        metrics=metrics,
        train_rows=len(train_at),
        holdout_rows=len(hold_at),
        holdout=held,
        skipped_rows=skipped,
        seed=seed,
        seconds=time.perf_counter() - started,
    )


def _labelled(schema: Schema, frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """A new frame of the schema's columns and the target, rows with a label only."""
    missing = [n for n in schema.names if n not in frame.columns]
    problems = [{"field": n, "reason": "not in the training data"} for n in missing]
    if target not in frame.columns:
        problems.append({"field": target, "reason": "the target is not in the training data"})
    if problems:
        raise InvalidInput(
            f"training data lacks the column(s) {', '.join(p['field'] for p in problems)}",
            details=problems,
        )
    has_label = frame[target].notna().to_numpy()
    data = frame.loc[has_label, [*schema.names, target]].reset_index(drop=True)
    if data.empty:
        reason = "no row has a label"
        raise InvalidInput(
            f"nothing to train on: {reason}", details=[{"field": target, "reason": reason}]
        )
    return data, int((~has_label).sum())


def evaluate(estimator: Any, frame: pd.DataFrame, target: str, task: str) -> dict[str, Any]:
    """Metrics of ``estimator`` on the labelled rows of ``frame``, JSON-ready.

    Classification: ``accuracy``, ``f1`` (macro), ``log_loss`` with probabilities and
    ``roc_auc`` for two classes (when the rows hold both); regression: ``mae``, ``rmse``,
    ``r2`` (two rows or more). A metric that is undefined on these rows is left out.
    """
    if target not in frame.columns:
        reason = "the target is not in the data"
        raise InvalidInput(reason, details=[{"field": target, "reason": reason}])
    rows = frame.loc[frame[target].notna().to_numpy()]
    names = getattr(estimator, "feature_names_in_", None)
    X = rows[list(names)] if names is not None else rows.drop(columns=[target])
    y = rows[target].tolist()
    if not y:
        return {"rows": 0}
    if task == "classification":
        return {"rows": len(y), **_classification_metrics(estimator, X, y)}
    if task == "regression":
        return {"rows": len(y), **_regression_metrics(estimator, X, numeric_labels(y, target))}
    reason = "expected 'classification' or 'regression'"
    raise InvalidInput(
        f"cannot evaluate a {task!r} model", details=[{"field": "task", "reason": reason}]
    )


def _classification_metrics(estimator: Any, X: pd.DataFrame, y: list[Any]) -> dict[str, Any]:
    from sklearn.metrics import f1_score, log_loss, roc_auc_score

    predicted = np.asarray(estimator.predict(X)).tolist()
    known = getattr(estimator, "classes_", None)
    classes = list(known) if known is not None else classes_of(y + predicted)
    truth = class_codes(classes, y)
    guess = class_codes(classes, predicted)
    k = len(classes)
    out: dict[str, Any] = {
        "accuracy": float(np.mean(truth == guess)),
        "f1": float(
            f1_score(truth, guess, labels=list(range(k)), average="macro", zero_division=0)
        ),
    }
    seen = truth >= 0
    if known is None or not callable(getattr(estimator, "predict_proba", None)) or not seen.any():
        return out
    proba = np.asarray(estimator.predict_proba(X), dtype="float64")[seen]
    if proba.shape[1] != k:
        return out
    out["log_loss"] = float(log_loss(truth[seen], proba, labels=list(range(k))))
    if k == 2 and len(set(truth[seen].tolist())) == 2:
        out["roc_auc"] = float(roc_auc_score(truth[seen] == 1, proba[:, 1]))
    return out


def _regression_metrics(estimator: Any, X: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import r2_score

    predicted = np.asarray(estimator.predict(X), dtype="float64")
    error = predicted - y
    out: dict[str, Any] = {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }
    if len(y) >= 2:
        out["r2"] = float(r2_score(y, predicted))
    return {k: v for k, v in out.items() if math.isfinite(v)}
