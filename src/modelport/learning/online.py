"""How a schema's rows become features and labels, and the online model wrapper.

Shared by the batch pipelines of :mod:`modelport.learning.algorithms` and by :class:`OnlineModel`, so
that a row is encoded the same way whichever learns from it: numbers and booleans (0/1) as
floats with missing values NaN; category values by a string key over the categories the schema
declares (a missing or unknown value encodes as all zeros); labels matched to the classes by the
same key.

:class:`OnlineModel` is what an online algorithm becomes: an incremental estimator
(scikit-learn's ``partial_fit``, or a river model's ``learn_one``) behind preprocessing that
itself learns incrementally. Numbers are standardized by a :class:`RunningScaler` updated
before the estimator sees each batch, so a missing number becomes 0 after scaling: the running
mean. The one-hot encoding is fixed from the schema when the model is
made. Snapshots of an online model are pushed as immutable versions, so the wrapper pickles
with joblib, and it never mutates the frames and labels it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin

from ..errors import InvalidInput, ModelNotReady
from ..model import Model

if TYPE_CHECKING:
    from sklearn.preprocessing import OneHotEncoder


# -- features (module-level functions: the batch pipelines pickle them by reference) ---------


def as_numbers(X: pd.DataFrame) -> np.ndarray:
    """Numeric and boolean columns as a float64 matrix: booleans 0/1, anything missing NaN."""
    # A new array in every case: callers may write into it without touching the caller's frame.
    return np.array(X.to_numpy(dtype="float64", na_value=np.nan), dtype="float64", copy=True)


def category_key(value: Any) -> str | None:
    """The string a category value is encoded by, or None when it is missing.

    Category values arrive as what JSON, Parquet or pandas made of them (``1``, ``1.0``,
    ``np.int64(1)``); one key per value keeps the encoding the same whichever way it came.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return None if pd.isna(value) else str(value)


def as_category_keys(X: pd.DataFrame) -> np.ndarray:
    """Category columns as an object matrix of :func:`category_key` values."""
    out = np.empty(X.shape, dtype=object)
    for j, name in enumerate(X.columns):
        out[:, j] = [category_key(v) for v in X[name].tolist()]
    return out


def category_keys(categories: Sequence[Any]) -> list[str]:
    """A field's declared categories as encoder keys, in order, without duplicates."""
    keys: list[str] = []
    for c in categories:
        key = category_key(c)
        if key is not None and key not in keys:
            keys.append(key)
    return keys


class RunningScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Standardizes numbers with a running mean and deviation per column; missing -> 0 (the mean).

    ``partial_fit`` folds a batch in (Chan et al.'s pairwise update); ``fit`` starts afresh.
    Each column keeps its own count of values seen, so a batch with no value in a column leaves
    that column as it was. (``StandardScaler.partial_fit`` would make that column's variance NaN
    for good, and one observation with an optional field left out is such a batch.) A column
    with no spread, or no value yet, is only centred.
    """

    n_samples_seen_: np.ndarray
    mean_: np.ndarray
    var_: np.ndarray

    def fit(self, X: np.ndarray, y: Any = None) -> RunningScaler:
        self.n_samples_seen_, self.mean_, self.var_ = np.zeros((3, np.shape(X)[1]))
        return self.partial_fit(X)

    def partial_fit(self, X: np.ndarray, y: Any = None) -> RunningScaler:
        X = np.asarray(X, dtype="float64")
        width = X.shape[1]
        if not hasattr(self, "mean_"):
            self.n_samples_seen_, self.mean_, self.var_ = np.zeros((3, width))
        seen = self.n_samples_seen_
        present = ~np.isnan(X)
        n = present.sum(axis=0).astype("float64")
        values = np.where(present, X, 0.0)
        mean = np.divide(values.sum(axis=0), n, out=np.zeros(width), where=n > 0)
        m2 = (np.where(present, X - mean, 0.0) ** 2).sum(axis=0)
        total = seen + n
        share = np.divide(n, total, out=np.zeros(width), where=total > 0)
        delta = mean - self.mean_
        m2_total = self.var_ * seen + m2 + delta**2 * seen * share
        self.mean_ = self.mean_ + delta * share
        self.var_ = np.divide(m2_total, total, out=np.zeros(width), where=total > 0)
        self.n_samples_seen_ = total
        return self

    @property
    def scale_(self) -> np.ndarray:
        """The standard deviation per column; 1 where it is (about) 0."""
        std = np.sqrt(np.maximum(self.var_, 0.0))
        tiny = 1e-12 * np.maximum(1.0, np.abs(self.mean_))
        return np.asarray(np.where(std > tiny, std, 1.0), dtype="float64")

    def transform(self, X: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(X, dtype="float64") - self.mean_) / self.scale_
        return np.asarray(np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0), dtype="float64")


def batch_preprocessor(
    numeric: list[str], categorical: Mapping[str, Sequence[Any]], scaled: bool
) -> Any:
    """The batch pipelines' first step: a ``ColumnTransformer`` over the schema's fields.

    ``scaled`` (linear models) standardizes the numbers and fills a missing one with the
    training mean; unscaled (trees) leaves missing numbers NaN, which the trees route.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [
            ("numbers", FunctionTransformer(as_numbers, feature_names_out="one-to-one"))
        ]
        if scaled:
            steps.append(("scale", RunningScaler()))
        parts.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        encoder = OneHotEncoder(
            categories=[category_keys(c) for c in categorical.values()],
            handle_unknown="ignore",
            sparse_output=False,
            # A name, not the class np.float64: get_params() stays JSON-able for the lineage.
            dtype="float64",
        )
        keys = FunctionTransformer(as_category_keys, feature_names_out="one-to-one")
        parts.append(
            ("category", Pipeline([("keys", keys), ("onehot", encoder)]), list(categorical))
        )
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


# -- labels ------------------------------------------------------------------------------------


def classes_of(labels: Sequence[Any]) -> list[Any]:
    """The distinct labels (one per key) as plain values: numbers first, then strings, sorted."""
    seen: dict[str | None, Any] = {}
    for v in labels:
        seen.setdefault(category_key(v), v.item() if hasattr(v, "item") else v)
    return sorted(seen.values(), key=lambda v: (1, v) if isinstance(v, str) else (0, v))


def class_codes(classes: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
    """Each label's position in ``classes`` (matched by key), or -1.

    ``True`` also matches a class ``1`` when there is no class ``True``: JSON and Parquet do
    not always keep the difference.
    """
    index: dict[str | None, int] = {}
    for i, c in enumerate(classes):
        index.setdefault(category_key(c), i)
    out = np.empty(len(labels), dtype="int64")
    for i, value in enumerate(labels):
        code = index.get(category_key(value), -1)
        if code < 0 and isinstance(value, bool | np.bool_):
            code = index.get(category_key(int(value)), -1)
        out[i] = code
    return out


def checked_codes(classes: Sequence[Any], labels: Sequence[Any], target: str) -> np.ndarray:
    """:func:`class_codes`, with ``InvalidInput`` naming every row whose label is no class."""
    codes = class_codes(classes, labels)
    _refuse(
        np.flatnonzero(codes < 0),
        target,
        f"unknown class; classes: {', '.join(map(repr, classes))}",
    )
    return codes


def numeric_labels(labels: Sequence[Any], target: str) -> np.ndarray:
    """Regression labels as floats, with ``InvalidInput`` naming every row that is no number."""
    out = np.full(len(labels), np.nan)
    for i, v in enumerate(labels):
        if not isinstance(v, bool | str):
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                continue
    _refuse(np.flatnonzero(~np.isfinite(out)), target, "expected a finite number")
    return out


def _refuse(bad: np.ndarray, target: str, reason: str) -> None:
    if bad.size:
        raise InvalidInput(
            f"{bad.size} unusable label(s), the first at row {int(bad[0])}: {reason}",
            details=[{"row": int(i), "field": target, "reason": reason} for i in bad[:100]],
        )


def label_array(values: Sequence[Any]) -> np.ndarray:
    """Labels as a typed array when they are all of one plain type, else an object array."""
    plain = [v.item() if hasattr(v, "item") else v for v in values]
    kinds = set(map(type, plain))
    if len(kinds) == 1 and kinds <= {str, int, float, bool}:
        return np.array(plain)
    out = np.empty(len(plain), dtype=object)
    out[:] = plain
    return out


# -- the wrapper -------------------------------------------------------------------------------


class OnlineModel(Model):
    """An incrementally learning model over a schema's columns.

    ``learn(X, y)`` updates the scaler, then the estimator, with a batch of observations;
    ``predict`` and (classifiers) ``predict_proba`` take a DataFrame with the schema's columns.
    Classifiers know every class from the start (``classes``), so the first batch need not
    contain them all and ``predict_proba`` always has one column per class.
    """

    def __init__(
        self,
        estimator: Any,
        *,
        algorithm: str,
        task: str,
        numeric: Sequence[str],
        categorical: Mapping[str, Sequence[Any]],
        classes: Sequence[Any] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        target: str = "label",
    ) -> None:
        from sklearn.preprocessing import OneHotEncoder

        if task == "classification" and (classes is None or len(classes) < 2):
            raise InvalidInput(
                "an online classifier needs its classes up front",
                details=[{"field": "classes", "reason": "expected two or more distinct labels"}],
            )
        self.estimator = estimator
        self.algorithm = algorithm
        self.task = task
        self.target = target
        self.hyperparameters = dict(hyperparameters or {})
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.classes_: list[Any] | None = list(classes) if classes is not None else None
        self.n_seen = 0
        self.scaler = RunningScaler() if self.numeric else None
        self.encoder: OneHotEncoder | None = None
        keys = [category_keys(categorical[name]) for name in self.categorical]
        if self.categorical:
            self.encoder = OneHotEncoder(
                categories=keys, handle_unknown="ignore", sparse_output=False, dtype="float64"
            )
            # The categories are given, so fitting on one row of them fixes the encoding.
            self.encoder.fit(np.array([[k[0] for k in keys]], dtype=object))
        self.feature_names = self.numeric + [
            f"{name}={key}" for name, ks in zip(self.categorical, keys, strict=True) for key in ks
        ]
        self._river = callable(getattr(estimator, "learn_one", None))

    # -- learning ------------------------------------------------------------------------------

    def learn(self, X: pd.DataFrame, y: Any) -> None:
        """Learn from a batch of observations, in order; ``X`` and ``y`` are left untouched."""
        labels = list(y.tolist() if hasattr(y, "tolist") else y)
        if len(labels) != len(X):
            raise InvalidInput(
                f"{len(X)} rows of inputs but {len(labels)} labels",
                details=[{"field": self.target, "reason": "one label per row expected"}],
            )
        if not labels:
            return
        target = self._targets(labels)
        numbers, keys = self._raw(X)
        # Everything is checked: only now does the model change.
        if self.scaler is not None and numbers is not None:
            self.scaler.partial_fit(numbers)
        features = self._encode(numbers, keys)
        if self._river:
            names = self.feature_names
            for row, t in zip(features.tolist(), target.tolist(), strict=True):
                self.estimator.learn_one(dict(zip(names, row, strict=True)), t)
        elif self.task == "classification":
            assert self.classes_ is not None
            self.estimator.partial_fit(features, target, classes=np.arange(len(self.classes_)))
        else:
            self.estimator.partial_fit(features, target)
        self.n_seen += len(labels)

    def _targets(self, labels: list[Any]) -> np.ndarray:
        """Labels as what the estimator learns: class indices, or floats for regression."""
        if self.task == "classification":
            return checked_codes(self.classes_ or (), labels, self.target)
        return numeric_labels(labels, self.target)

    # -- predicting ----------------------------------------------------------------------------

    def predict(self, X: pd.DataFrame) -> Any:
        """One prediction per row (an array): a class label, or a number."""
        self._check_ready()
        if self.task == "classification":
            assert self.classes_ is not None
            labels = np.empty(len(self.classes_), dtype=object)
            labels[:] = self.classes_
            if self._river:
                codes = self.predict_proba(X).argmax(axis=1)
            else:
                codes = np.asarray(self.estimator.predict(self._features(X)), dtype="int64")
            return label_array(labels.take(codes).tolist())
        if self._river:
            rows = self._river_rows(X)
            return np.array([float(self.estimator.predict_one(r)) for r in rows], dtype="float64")
        return np.asarray(self.estimator.predict(self._features(X)), dtype="float64")

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Class probabilities, one column per class in the order of ``classes_``."""
        if self.task != "classification" or self.classes_ is None:
            raise AttributeError("a regressor has no predict_proba")
        self._check_ready()
        k = len(self.classes_)
        if not self._river:
            return np.asarray(self.estimator.predict_proba(self._features(X)), dtype="float64")
        out = np.zeros((len(X), k))
        for i, row in enumerate(self._river_rows(X)):
            # river answers {label: p} for the labels it has seen; a binary river model answers
            # {False: p, True: q}, which the class indices 0 and 1 look up as well.
            proba = self.estimator.predict_proba_one(row)
            out[i] = [float(proba.get(c, 0.0)) for c in range(k)]
        total = out.sum(axis=1, keepdims=True)
        # A river model that has seen no class yet answers {}: uniform, not 0/0.
        uniform = np.full_like(out, 1.0 / k)
        np.divide(out, total, out=uniform, where=total > 0)
        return uniform

    # -- state ---------------------------------------------------------------------------------

    def ready(self, min_observations: int = 1) -> bool:
        """True once the model has learned from at least ``min_observations`` rows (and one)."""
        return self.n_seen >= max(1, min_observations)

    def params(self) -> dict[str, Any]:
        """What the model learned, JSON-ready: observations seen, scaling, weights."""
        out: dict[str, Any] = {
            "algorithm": self.algorithm,
            "hyperparameters": dict(self.hyperparameters),
            "n_seen": self.n_seen,
            "features": list(self.feature_names),
        }
        if self.classes_ is not None:
            out["classes"] = list(self.classes_)
        scaler = self.scaler
        if scaler is not None and hasattr(scaler, "mean_"):
            out["scaling"] = {
                name: {"mean": _num(m), "scale": _num(s)}
                for name, m, s in zip(self.numeric, scaler.mean_, scaler.scale_, strict=True)
            }
        coef = getattr(self.estimator, "coef_", None)
        if coef is not None:
            rows = np.atleast_2d(coef)
            out["coef"] = [
                dict(zip(self.feature_names, map(_num, r), strict=True)) for r in rows[:20]
            ]
            out["intercept"] = [_num(v) for v in np.ravel(self.estimator.intercept_)[:20]]
        return out

    def _check_ready(self) -> None:
        if self.n_seen == 0:
            raise ModelNotReady(f"the {self.algorithm} model has not learned anything yet")

    # -- features ------------------------------------------------------------------------------

    def _columns(self, X: pd.DataFrame, names: list[str]) -> pd.DataFrame:
        missing = [n for n in names if n not in X.columns]
        if missing:
            raise InvalidInput(
                f"the inputs lack the field(s) {', '.join(missing)}",
                details=[{"field": n, "reason": "missing"} for n in missing],
            )
        return X[names]

    def _raw(self, X: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The numbers (NaN for missing) and category keys of ``X``; a missing column named."""
        numbers = as_numbers(self._columns(X, self.numeric)) if self.numeric else None
        keys = as_category_keys(self._columns(X, self.categorical)) if self.categorical else None
        return numbers, keys

    def _encode(self, numbers: np.ndarray | None, keys: np.ndarray | None) -> np.ndarray:
        """The estimator's input: scaled numbers (missing = the running mean) and one-hots."""
        parts: list[np.ndarray] = []
        if self.scaler is not None and numbers is not None:
            parts.append(self.scaler.transform(numbers))
        if self.encoder is not None and keys is not None:
            parts.append(np.asarray(self.encoder.transform(keys), dtype="float64"))
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def _features(self, X: pd.DataFrame) -> np.ndarray:
        return self._encode(*self._raw(X))

    def _river_rows(self, X: pd.DataFrame) -> list[dict[str, float]]:
        names = self.feature_names
        return [dict(zip(names, row, strict=True)) for row in self._features(X).tolist()]


def _num(value: Any) -> float | None:
    x = float(value)
    return x if np.isfinite(x) else None
