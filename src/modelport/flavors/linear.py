"""Linear models, alone or after standard scaling, evaluated with numpy alone.

On every call scikit-learn checks its input, sets up its output configuration and dispatches
through its array-API layer: for a standardized logistic regression that is about 0.2 ms of
Python per call, whatever the number of rows, against a few microseconds of arithmetic. At one
request at a time that is a fifth of a request's whole cost. For the estimators below, fitted
on arrays, :func:`linear_predictor` repeats scikit-learn's own arithmetic in its order (the
scaling, the product with the coefficients plus the intercept, then the logistic function or
the softmax), so the results are the same bits. Like the forests' path (:mod:`.forest`) it is
used only after giving exactly the estimator's own answers on sample rows at load time (see
``LoadedModel``), and rows with missing or infinite values go to the estimator, which refuses
or handles them with its own checks and messages.

Covered: ``LogisticRegression`` (binary and multinomial), ``LinearRegression``, ``Ridge``,
``Lasso`` and ``ElasticNet`` with one target, each alone or as the last step of a ``Pipeline``
whose other steps are ``StandardScaler`` (or ``"passthrough"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Given float64 rows, the model's predict_proba (classifiers) or predict (regressors); None
#: when the rows need the estimator's own checks.
LinearPredict = Callable[[np.ndarray], "np.ndarray | None"]

_SCALER = "sklearn.preprocessing._data.StandardScaler"
_LOGISTIC = "sklearn.linear_model._logistic.LogisticRegression"
_REGRESSORS = frozenset(
    {
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.linear_model._coordinate_descent.Lasso",
        "sklearn.linear_model._coordinate_descent.ElasticNet",
    }
)

Scaling = tuple["np.ndarray | None", "np.ndarray | None"]  # (mean to subtract, scale to divide)


def _name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _steps(obj: Any) -> list[Any] | None:
    """The estimators a call goes through, in order: a Pipeline's steps, or the model itself."""
    if _name(obj) != "sklearn.pipeline.Pipeline":
        return [obj]
    steps = getattr(obj, "steps", None)
    if not isinstance(steps, list) or not steps:
        return None
    return [step for _, step in steps if step not in (None, "passthrough")]


def _scaling(step: Any) -> Scaling | None:
    if _name(step) != _SCALER:
        return None
    mean = step.mean_ if step.with_mean else None
    scale = step.scale_ if step.with_std else None
    for part in (mean, scale):
        if part is not None and not (isinstance(part, np.ndarray) and part.dtype == np.float64):
            return None
    return mean, scale


def _coefficients(final: Any) -> tuple[np.ndarray, Any] | None:
    coef = getattr(final, "coef_", None)
    intercept = getattr(final, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype != np.float64:
        return None  # sparse or another precision: the estimator's own path
    if intercept is None:
        return None
    return coef, intercept


def linear_predictor(obj: object) -> LinearPredict | None:
    """The numpy evaluation of a fitted linear model (or scaled pipeline), or None for
    anything else (models fitted on named columns included: they get a DataFrame)."""
    if getattr(obj, "feature_names_in_", None) is not None:
        return None
    steps = _steps(obj)
    if not steps:
        return None
    *transforms, final = steps
    scalings = []
    for step in transforms:
        scaling = _scaling(step)
        if scaling is None:
            return None
        scalings.append(scaling)
    width = getattr(steps[0], "n_features_in_", None)
    found = _coefficients(final)
    if not isinstance(width, int) or found is None:
        return None
    coef, intercept = found
    name = _name(final)
    if name == _LOGISTIC:
        classes = getattr(final, "classes_", None)
        if not isinstance(classes, np.ndarray) or coef.ndim != 2:
            return None
        return _logistic(scalings, width, coef.T, intercept, binary=classes.size <= 2)
    if name in _REGRESSORS and coef.ndim == 1:
        return _regression(scalings, width, coef.T, intercept)
    return None


def _scaled(X: np.ndarray, width: int, scalings: list[Scaling]) -> np.ndarray | None:
    """The rows after the pipeline's scalers, or None when they need the estimator's checks."""
    if X.ndim != 2 or X.shape[1] != width or X.dtype != np.float64:
        return None
    if not np.isfinite(X).all():
        return None  # missing or infinite values: the estimator says what it makes of them
    for mean, scale in scalings:
        X = X.copy()  # StandardScaler.transform works on a copy
        if mean is not None:
            X -= mean
        if scale is not None:
            X /= scale
    return X


def _logistic(
    scalings: list[Scaling], width: int, coef_t: np.ndarray, intercept: Any, *, binary: bool
) -> LinearPredict:
    from scipy.special import expit

    def predict_proba(X: np.ndarray) -> np.ndarray | None:
        Z = _scaled(X, width, scalings)
        if Z is None:
            return None
        scores: np.ndarray = Z @ coef_t + intercept
        if binary:
            p = scores.reshape(-1)
            expit(p, out=p)
            out: np.ndarray = np.stack([1 - p, p], axis=1)
            return out
        scores -= np.reshape(np.max(scores, axis=1), (-1, 1))  # softmax, as scikit-learn's
        np.exp(scores, out=scores)
        scores /= np.reshape(np.sum(scores, axis=1), (-1, 1))
        return scores

    return predict_proba


def _regression(
    scalings: list[Scaling], width: int, coef_t: np.ndarray, intercept: Any
) -> LinearPredict:
    def predict(X: np.ndarray) -> np.ndarray | None:
        Z = _scaled(X, width, scalings)
        if Z is None:
            return None
        out: np.ndarray = Z @ coef_t + intercept
        return out

    return predict
