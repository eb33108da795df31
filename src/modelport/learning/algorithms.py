"""The built-in algorithms: a model made from one JSON document, trained in batch or online.

A user creates a model with ``{"algorithm": "logistic_regression", "params": {"C": 0.5},
"schema": {...}, "target": "churned"}``. This module holds the catalog (``GET /v1/algorithms``,
:func:`catalog`), checks an algorithm's parameters (:func:`check_spec`), builds the estimator
with the preprocessing the schema calls for (:func:`build_estimator`), and trains and scores it
for the retrain jobs (:func:`train`, :func:`evaluate`).

Preprocessing, fixed when the estimator is built, from the schema alone:

============  ======================================  =========================================
field type    linear and SGD models                   tree models (forest, gradient boosting)
============  ======================================  =========================================
number        standardized; missing -> the mean       as is; missing left NaN (trees route it)
integer       as number                               as number
boolean       0/1, then as number                     0/1, missing NaN
category      one-hot over the schema's categories    one-hot over the schema's categories
string        rejected (``InvalidInput`` naming the field): free text has no stable encoding
============  ======================================  =========================================

The one-hot encoding uses the categories the schema declares (never those seen in training), so
it is the same for every version and can learn online; a value outside them (or missing)
encodes as all zeros (``handle_unknown="ignore"``), i.e. the model answers as for an average
row of that field. Category values are compared by their string key, so ``1``, ``1.0`` and
``"1"`` are one category.

Online algorithms (``online: true``) become an :class:`~modelport.learning.online.OnlineModel`: the
scaler learns incrementally (:class:`~modelport.learning.online.RunningScaler`, so missing numbers
become the running mean), the estimator learns with ``partial_fit``. Their defaults track
drift: the SGD ``learning_rate`` is ``"constant"``, so every observation moves the weights as
much as the first did. ``"invscaling"`` shrinks the step as observations accumulate (steadier,
but after a few thousand rows the model all but stops adapting); the classifier's
``"optimal"`` takes very large steps for a long time (quick, but noisy when nothing changes).
``eta0`` is 0.01 for regression: the weights forget with a time constant of about
``1/eta0 = 100`` standardized observations, so a changed slope is followed within a few
hundred. It is 0.05 for classification, whose log-loss gradient vanishes on rows already
classified well: with it, a flipped decision boundary is recovered within a few hundred
observations, while accuracy on a stable stream stays that of 0.01.

If the ``river`` package is importable, river entries (``river_linear_regression``,
``river_logistic_regression`` (two classes), ``river_hoeffding_tree_classifier``) are listed
too, all online, behind the same scaler and encoder; without river they are simply absent.

Training is reproducible: every estimator with a seed gets ``random_state`` (default 0), and
:func:`train`'s holdout split depends only on ``seed`` and the number of rows, so the same
snapshot, parameters and seed give the same model and the same predictions.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidInput
from .online import (
    OnlineModel,
    batch_preprocessor,
)

if TYPE_CHECKING:
    from ..inputs.schema import Schema

Task = Literal["classification", "regression"]
ParamKind = Literal["int", "float", "bool", "choice"]
#: Rows per ``learn`` call when an online algorithm is trained on a dataset.
ONLINE_TRAIN_BATCH = 256
_NUMERIC_TYPES = frozenset({"number", "integer", "boolean"})


@dataclass(frozen=True)
class Param:
    """One parameter of an algorithm: its type, default, allowed values and help."""

    name: str
    kind: ParamKind
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "default": self.default}
        if self.minimum is not None:
            out["exclusive_minimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.choices:
            out["choices"] = list(self.choices)
        if self.nullable:
            out["nullable"] = True
        out["help"] = self.help
        return out

    def check(self, value: Any) -> tuple[Any, str]:
        """The value coerced to the parameter's type, and the problem ("" if none)."""
        if value is None:
            return None, "" if self.nullable else "null is not allowed"
        if self.kind == "bool":
            return value, "" if isinstance(value, bool) else "expected true or false"
        if self.kind == "choice":
            if value in self.choices and isinstance(value, str):
                return value, ""
            return value, f"expected one of {', '.join(map(repr, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, f"expected {'an integer' if self.kind == 'int' else 'a number'}"
        if not math.isfinite(value):
            return value, "expected a finite number"
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                return value, "expected an integer"
            value = int(value)
        else:
            value = float(value)
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.exclusive_minimum else value < lo):
            return value, f"must be {'above' if self.exclusive_minimum else 'at least'} {lo:g}"
        if hi is not None and value > hi:
            return value, f"must be at most {hi:g}"
        return value, ""


@dataclass(frozen=True)
class Algorithm:
    """A catalog entry: what it predicts, whether it learns online, its parameters, a factory."""

    name: str
    task: Task
    online: bool
    description: str
    params: tuple[Param, ...]
    make: Callable[[Mapping[str, Any]], Any] = field(repr=False)
    #: Linear and SGD models want standardized numbers and no NaN; trees take them raw.
    scaled: bool = True
    #: An upper bound on the number of classes (river's logistic regression is binary).
    max_classes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "online": self.online,
            "description": self.description,
            "params": [p.to_dict() for p in self.params],
        }


# -- parameters --------------------------------------------------------------------------------


def _int(name: str, default: int | None, lo: float, hi: float, help: str, **kw: Any) -> Param:
    return Param(name, "int", default, help, minimum=lo, maximum=hi, **kw)


def _float(name: str, default: float, lo: float, hi: float, help: str, **kw: Any) -> Param:
    return Param(name, "float", default, help, minimum=lo, maximum=hi, **kw)


def _choice(name: str, default: str, choices: tuple[str, ...], help: str) -> Param:
    return Param(name, "choice", default, help, choices=choices)


_SEED = _int(
    "random_state", 0, 0, 2**32 - 1, "Seed of the estimator's randomness: same seed, same model."
)
_EPOCHS = _int(
    "epochs",
    1,
    1,
    1000,
    "Passes over the rows, in order, when a retrain job trains this online model on a dataset "
    "(online learning sees each observation once).",
)
_DEPTH = _int("max_depth", None, 1, 1000, "Deepest a tree may grow; null: no limit.", nullable=True)
_CLASS_WEIGHT = _choice(
    "class_weight",
    "none",
    ("none", "balanced"),
    "'balanced' weighs classes inversely to their frequency.",
)
_SCHEDULE = (
    "'constant' keeps the step eta0 for every observation, so the model keeps adapting to drift; "
    "'invscaling' shrinks it as eta0 / t ** power_t (steadier, slow to follow a change); "
    "'adaptive' divides eta0 by 5 after fit() epochs that stop improving the loss, a count that "
    "every partial_fit call starts afresh, so online it behaves like 'constant'."
)


def _sgd_params(task: Task) -> tuple[Param, ...]:
    classifier = task == "classification"
    schedules = ("constant", "invscaling", "adaptive") + (("optimal",) if classifier else ())
    optimal = " 'optimal' is 1 / (alpha * (t + t0)): large early steps, then ever smaller."
    return (
        _choice(
            "learning_rate", "constant", schedules, _SCHEDULE + (optimal if classifier else "")
        ),
        _float(
            "eta0",
            0.05 if classifier else 0.01,
            0.0,
            10.0,
            "Step size (the first step for decaying schedules); with 'constant' the weights forget "
            "old observations with a time constant of about 1/eta0 rows.",
            exclusive_minimum=True,
        ),
        _float("alpha", 1e-4, 0.0, 100.0, "Strength of the L2 penalty on the weights."),
        _float("power_t", 0.5 if classifier else 0.25, 0.0, 5.0, "Exponent of 'invscaling'."),
        _EPOCHS,
        _SEED,
    )


def _forest_params(task: Task) -> tuple[Param, ...]:
    classifier = task == "classification"
    return (
        _int("n_estimators", 100, 1, 5000, "Number of trees."),
        _DEPTH,
        _int("min_samples_leaf", 1, 1, 100_000, "Fewest training rows in a leaf."),
        _choice(
            "max_features",
            "sqrt" if classifier else "all",
            ("sqrt", "log2", "all"),
            "Features tried at each split: sqrt or log2 of their number, or all of them.",
        ),
        *((_CLASS_WEIGHT,) if classifier else ()),
        _SEED,
    )


_BOOSTING = (
    _float("learning_rate", 0.1, 0.0, 1.0, "Shrinkage of each tree.", exclusive_minimum=True),
    _int("max_iter", 100, 1, 10_000, "Boosting rounds (trees per class)."),
    _int("max_leaf_nodes", 31, 2, 100_000, "Most leaves per tree."),
    _DEPTH,
    _int("min_samples_leaf", 20, 1, 100_000, "Fewest training rows in a leaf."),
    _float("l2_regularization", 0.0, 0.0, 1e6, "L2 penalty on leaf values."),
    Param(
        "early_stopping",
        "bool",
        False,
        "Stop adding trees when a validation split (10% of the training rows, drawn with "
        "random_state) stops improving.",
    ),
    _SEED,
)


# -- estimator factories (an estimator's module is imported when one is first built) -------------

#: Choice values that stand for another argument value.
_ARGUMENTS: Mapping[str, Any] = MappingProxyType({"none": None, "all": 1.0})
#: Parameters that drive training, not the estimator.
_TRAINING_ONLY = frozenset({"epochs"})


@dataclass(frozen=True)
class _Sklearn:
    """Makes a scikit-learn estimator: the parameters are its arguments, ``fixed`` adds more."""

    path: str
    fixed: tuple[tuple[str, Any], ...] = ()

    def __call__(self, params: Mapping[str, Any]) -> Any:
        module, _, name = self.path.rpartition(".")
        kw = {
            k: _ARGUMENTS.get(v, v) if isinstance(v, str) else v
            for k, v in params.items()
            if k not in _TRAINING_ONLY
        }
        return getattr(importlib.import_module(module), name)(**kw, **dict(self.fixed))


# Averaged SGD weights remember the whole stream: they would not follow drift.
_SGD = (("penalty", "l2"), ("average", False))


def _river_linear(p: Mapping[str, Any], classifier: bool) -> Any:
    from river import linear_model, optim

    cls = linear_model.LogisticRegression if classifier else linear_model.LinearRegression
    return cls(optimizer=optim.SGD(p["lr"]), l2=p["l2"], intercept_lr=p["intercept_lr"])


def _river_tree(p: Mapping[str, Any]) -> Any:
    from river import tree

    return tree.HoeffdingTreeClassifier(
        grace_period=p["grace_period"], max_depth=p["max_depth"], delta=p["delta"]
    )


# -- the catalog --------------------------------------------------------------------------------


def _river_entries() -> tuple[Algorithm, ...]:
    """The river algorithms, when river is installed (it is an optional extra)."""
    if importlib.util.find_spec("river") is None:
        return ()
    linear = (
        _float("lr", 0.01, 0.0, 10.0, "Constant SGD step: keeps adapting.", exclusive_minimum=True),
        _float("l2", 0.0, 0.0, 100.0, "L2 penalty on the weights."),
        _float("intercept_lr", 0.01, 0.0, 10.0, "Step of the intercept."),
        _EPOCHS,
    )
    tree = (
        _int("grace_period", 200, 1, 1e6, "Observations a leaf sees between split attempts."),
        _DEPTH,
        _float("delta", 1e-7, 0.0, 1.0, "Allowed error of a split.", exclusive_minimum=True),
        _EPOCHS,
    )
    return (
        Algorithm(
            "river_linear_regression",
            "regression",
            True,
            "river LinearRegression, constant-step SGD (deterministic: no seed).",
            linear,
            lambda p: _river_linear(p, False),
        ),
        Algorithm(
            "river_logistic_regression",
            "classification",
            True,
            "river LogisticRegression, constant-step SGD; two classes only.",
            linear,
            lambda p: _river_linear(p, True),
            max_classes=2,
        ),
        Algorithm(
            "river_hoeffding_tree_classifier",
            "classification",
            True,
            "river Hoeffding tree: splits a leaf once enough observations support it.",
            tree,
            _river_tree,
        ),
    )


def _build_catalog() -> Mapping[str, Algorithm]:
    entries = (
        Algorithm(
            "linear_regression",
            "regression",
            False,
            "Ordinary least squares (scikit-learn LinearRegression).",
            (
                Param("fit_intercept", "bool", True, "Learn an intercept."),
                Param("positive", "bool", False, "Constrain every weight to be >= 0."),
            ),
            _Sklearn("sklearn.linear_model.LinearRegression"),
        ),
        Algorithm(
            "online_linear_regression",
            "regression",
            True,
            "Linear regression learned batch by batch with SGD (scikit-learn SGDRegressor).",
            _sgd_params("regression"),
            _Sklearn("sklearn.linear_model.SGDRegressor", (("loss", "squared_error"), *_SGD)),
        ),
        Algorithm(
            "logistic_regression",
            "classification",
            False,
            "L2-regularized logistic regression (scikit-learn LogisticRegression, lbfgs).",
            (
                _float(
                    "C",
                    1.0,
                    0.0,
                    1e6,
                    "Inverse of the regularization strength.",
                    exclusive_minimum=True,
                ),
                _int("max_iter", 1000, 1, 100_000, "Solver iterations at most."),
                _CLASS_WEIGHT,
                _SEED,
            ),
            _Sklearn("sklearn.linear_model.LogisticRegression"),
        ),
        Algorithm(
            "online_logistic_regression",
            "classification",
            True,
            "Logistic regression learned batch by batch with SGD (scikit-learn SGDClassifier).",
            _sgd_params("classification"),
            _Sklearn("sklearn.linear_model.SGDClassifier", (("loss", "log_loss"), *_SGD)),
        ),
        Algorithm(
            "random_forest_classifier",
            "classification",
            False,
            "Random forest of decision trees (scikit-learn RandomForestClassifier).",
            _forest_params("classification"),
            _Sklearn("sklearn.ensemble.RandomForestClassifier"),
            scaled=False,
        ),
        Algorithm(
            "random_forest_regressor",
            "regression",
            False,
            "Random forest of regression trees (scikit-learn RandomForestRegressor).",
            _forest_params("regression"),
            _Sklearn("sklearn.ensemble.RandomForestRegressor"),
            scaled=False,
        ),
        Algorithm(
            "gradient_boosting_classifier",
            "classification",
            False,
            "Histogram gradient boosting (scikit-learn HistGradientBoostingClassifier).",
            _BOOSTING,
            _Sklearn("sklearn.ensemble.HistGradientBoostingClassifier"),
            scaled=False,
        ),
        Algorithm(
            "gradient_boosting_regressor",
            "regression",
            False,
            "Histogram gradient boosting (scikit-learn HistGradientBoostingRegressor).",
            _BOOSTING,
            _Sklearn("sklearn.ensemble.HistGradientBoostingRegressor"),
            scaled=False,
        ),
        *_river_entries(),
    )
    return MappingProxyType({a.name: a for a in entries})


_CATALOG = _build_catalog()


def catalog() -> list[dict[str, Any]]:
    """Every algorithm with its task, whether it learns online and its parameters, JSON-ready."""
    return [a.to_dict() for a in _CATALOG.values()]


def lookup(algorithm: Any) -> Algorithm:
    """The catalog entry named ``algorithm``; ``InvalidInput`` (field ``algorithm``) if none."""
    entry = _CATALOG.get(algorithm) if isinstance(algorithm, str) else None
    if entry is None:
        reason = f"unknown algorithm {algorithm!r}; known: {', '.join(_CATALOG)}"
        raise InvalidInput(reason, details=[{"field": "algorithm", "reason": reason}])
    return entry


# -- checking a spec ------------------------------------------------------------------------------


def check_spec(algorithm: Any, params: Any, *, schema: Schema | None = None) -> dict[str, Any]:
    """The algorithm's full parameters (defaults filled in), or ``InvalidInput`` naming every
    problem: ``algorithm``, ``params``, ``params.<name>`` and, given a schema, its unusable
    fields (``schema.fields[i]``)."""
    entry = lookup(algorithm)
    problems: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    if not isinstance(params, Mapping):
        problems.append({"field": "params", "reason": "expected an object"})
        params = {}
    known = {p.name: p for p in entry.params}
    for key in params:
        if key not in known:
            names = ", ".join(known) or "none"
            problems.append(
                {"field": f"params.{key}", "reason": f"unknown parameter; known: {names}"}
            )
    for p in entry.params:
        value, problem = p.check(params[p.name]) if p.name in params else (p.default, "")
        if problem:
            problems.append({"field": f"params.{p.name}", "reason": problem})
        out[p.name] = value
    if schema is not None:
        problems += schema_problems(schema)
    if problems:
        first = problems[0]
        raise InvalidInput(
            f"invalid {entry.name} spec: {first['field']}: {first['reason']}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            details=problems,
        )
    return out


def schema_problems(schema: Schema) -> list[dict[str, Any]]:
    """Why a schema cannot feed a built-in algorithm (string fields, no fields), per field."""
    problems = [
        {
            "field": f"schema.fields[{i}]",
            "reason": f"{f.name!r} is a string field: built-in algorithms take number, integer, "
            "boolean and category fields (declare its values as a category, or leave it out)",
        }
        for i, f in enumerate(schema.fields)
        if f.type == "string"
    ]
    if not schema.fields:
        problems.append({"field": "schema.fields", "reason": "the model needs an input field"})
    return problems


# -- building ---------------------------------------------------------------------------------------


def build_estimator(
    algorithm: str,
    params: Mapping[str, Any],
    schema: Schema,
    *,
    classes: Sequence[Any] | None = None,
    target: str = "label",
) -> Any:
    """An unfitted estimator taking a DataFrame with the schema's columns.

    Batch algorithms give a scikit-learn ``Pipeline`` (preprocessing, then the estimator);
    online algorithms an :class:`OnlineModel`, which needs ``classes`` for classifiers.
    """
    entry = lookup(algorithm)
    full = check_spec(algorithm, params, schema=schema)
    if entry.max_classes is not None and classes is not None and len(classes) > entry.max_classes:
        reason = f"{entry.name} handles at most {entry.max_classes} classes"
        raise InvalidInput(reason, details=[{"field": "classes", "reason": reason}])
    estimator = entry.make(full)
    numeric = [f.name for f in schema.fields if f.type in _NUMERIC_TYPES]
    categorical = {f.name: f.categories or () for f in schema.fields if f.type == "category"}
    if entry.online:
        return OnlineModel(
            estimator,
            algorithm=entry.name,
            task=entry.task,
            numeric=numeric,
            categorical=categorical,
            classes=classes,
            hyperparameters=full,
            target=target,
        )
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [("prepare", batch_preprocessor(numeric, categorical, entry.scaled)), ("model", estimator)]
    )
