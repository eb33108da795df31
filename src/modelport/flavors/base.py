"""The flavor contract (:class:`LoadedModel`) and the scikit-learn and pickle flavors."""

from __future__ import annotations

import importlib.metadata
import io
import pickle
import platform
import sys
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from ..errors import ArtifactRejected

if TYPE_CHECKING:
    from ..inputs.schema import Schema
    from ..inputs.table import Table
    from .forest import ForestPredict as FastPredict

FLAVORS = ("sklearn", "pickle", "mlflow")
#: Flavors whose loading runs no code from the artifact; anything else needs an admin key.
SAFE_FLAVORS = frozenset({"sklearn"})


class Refusal(NamedTuple):
    """How a push of something that runs code when loaded is refused: the end of the message,
    and the reason its details give (``{flavor}`` is filled in)."""

    message: str
    reason: str


#: The refusal of a push by a key without the admin scope.
ADMIN_ONLY = Refusal("only an admin key may push it", "{flavor} artifacts need an admin key")

InputKind = Literal["frame", "array"]


class LoadedModel:
    """A model ready to serve: the one interface serving, batching and jobs call.

    ``predict_with_proba`` takes a validated :class:`~modelport.inputs.table.Table` and returns the
    predictions (an array, or a list for custom code that returns one) and, for classifiers,
    the class probabilities as an ``n x classes`` float array. Whether the wrapped object
    receives a DataFrame or a numpy array is decided once, at load time: estimators fitted on
    named columns get a DataFrame, estimators fitted on bare arrays get an array, custom code
    always gets a DataFrame.
    """

    def __init__(
        self,
        obj: Any,
        flavor: str,
        *,
        input_kind: InputKind = "frame",
        task: str = "other",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.obj = obj
        self.flavor = flavor
        self.input_kind = input_kind
        self.task = task
        classes = getattr(obj, "classes_", None)
        self.classes: list[Any] | None = (
            [_plain(c) for c in classes]
            if classes is not None and hasattr(obj, "predict_proba")
            else None
        )
        self.class_keys: list[str] = [str(c) for c in self.classes or ()]
        # For estimators whose predict is by definition the most probable class, one call gives
        # both outputs; anything else is asked twice.
        self._labels = _argmax_labels(obj) if self.classes is not None else None
        self._fast = _checked_fast(obj) if input_kind == "array" else None
        self.extra = extra or {}
        # Code other than a scikit-learn estimator may hang or leak: it never runs on the event
        # loop, and its memory is watched (modelport.serving.health).
        self.custom_code = not _is_sklearn(obj)

    @property
    def has_proba(self) -> bool:
        return self.classes is not None

    def inputs(self, table: Table) -> Any:
        """Validated rows in the form the wrapped object expects."""
        return table.frame() if self.input_kind == "frame" else table.matrix()

    def predict_with_proba(self, table: Table) -> tuple[Any, np.ndarray | None]:
        """Predictions and, for classifiers that have them, class probabilities."""
        n = len(table)
        X = self.inputs(table)
        fast = self._fast(X) if self._fast is not None else None
        if self.classes is None:
            if fast is not None:
                return fast, None
            return _output(self.obj.predict(X), n, "predict"), None
        proba = fast if fast is not None else np.asarray(self.obj.predict_proba(X), dtype="float64")
        if proba.shape != (n, len(self.classes)):
            raise ValueError(
                f"predict_proba returned shape {list(proba.shape)} for {n} rows and "
                f"{len(self.classes)} classes"
            )
        if self._labels is not None:
            return self._labels.take(proba.argmax(axis=1)), proba
        return _output(self.obj.predict(X), n, "predict"), proba

    def probability_records(self, proba: np.ndarray) -> list[dict[str, float]]:
        """Probabilities as one ``{class: p}`` object per row."""
        keys = self.class_keys
        rows = proba.tolist()
        # A dict display builds a small dict twice as fast as dict(zip(...)): binary and
        # three-class models are most of what is served.
        if len(keys) == 2:
            k0, k1 = keys
            return [{k0: p0, k1: p1} for p0, p1 in rows]
        if len(keys) == 3:
            k0, k1, k2 = keys
            return [{k0: p0, k1: p1, k2: p2} for p0, p1, p2 in rows]
        return [dict(zip(keys, row, strict=True)) for row in rows]


#: Estimators whose ``predict`` returns ``classes_[argmax(predict_proba)]`` by definition.
_ARGMAX_ESTIMATORS = frozenset(
    {
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.ExtraTreeClassifier",
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.naive_bayes.GaussianNB",
    }
)


def _argmax_labels(obj: Any) -> np.ndarray | None:
    """The class labels to index with argmax, when ``obj`` predicts the most probable class."""
    final = obj
    while hasattr(final, "steps") and isinstance(final.steps, list) and final.steps:
        final = final.steps[-1][1]  # a Pipeline: the last step decides
    cls = type(final)
    if f"{cls.__module__}.{cls.__qualname__}" not in _ARGMAX_ESTIMATORS:
        return None
    classes = getattr(obj, "classes_", None)
    if not isinstance(classes, np.ndarray) or classes.ndim != 1:
        return None  # multi-output: predict is not one argmax
    return classes


def _checked_fast(obj: Any) -> FastPredict | None:
    """modelport's own evaluation of a forest (tree by tree) or of a linear model (numpy
    alone), if there is one for ``obj`` and it gives exactly the estimator's own answers."""
    from .forest import forest_predictor
    from .linear import linear_predictor

    predict = forest_predictor(obj) or linear_predictor(obj)
    if predict is None:
        return None
    rng = np.random.default_rng(0)
    sample = np.vstack(
        [np.zeros((1, obj.n_features_in_)), rng.normal(size=(63, obj.n_features_in_))]
    )
    try:
        ours = predict(sample)
        theirs = obj.predict_proba(sample) if hasattr(obj, "classes_") else obj.predict(sample)
    except Exception:
        return None
    return predict if ours is not None and np.array_equal(ours, theirs) else None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _output(out: Any, n: int, what: str) -> Any:
    """A model's predictions as an array (or a list for custom code), checked for length."""
    if hasattr(out, "to_numpy"):
        out = out.to_numpy()
    if not isinstance(out, np.ndarray):
        out = list(out)
    if len(out) != n:
        raise ValueError(f"{what} returned {len(out)} results for {n} rows")
    return out


# -- recognizing and loading -------------------------------------------------------------------


def detect_flavor(path: Path) -> str:
    """Tell an artifact's flavor from its bytes."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n == "MLmodel" or n.endswith("/MLmodel") for n in names):
            return "mlflow"
        if "schema.json" in names:
            return "sklearn"
        raise ArtifactRejected(
            "unrecognized zip artifact: expected a skops file or a zipped MLflow model directory",
            details=[{"field": "artifact", "reason": "unrecognized zip content"}],
        )
    with open(path, "rb") as fh:
        head = fh.read(4)
    # Pickle protocol 2+ starts with PROTO (0x80); joblib's compressed files with zlib/gzip/xz.
    if (
        head[:1] == b"\x80"
        or head[:2] in (b"\x78\x9c", b"\x78\x01", b"\x78\xda", b"\x1f\x8b")
        or head == b"\xfd7zX"
    ):
        return "pickle"
    raise ArtifactRejected(
        "unrecognized artifact: expected a skops file, a joblib/pickle file or a zipped MLflow model",
        details=[{"field": "artifact", "reason": "unrecognized file format"}],
    )


def import_scikit_learn() -> None:
    """Import scikit-learn's base modules without pandas (unless pandas is imported already).

    scikit-learn's compatibility module (``sklearn.utils.fixes``) imports pandas at import time
    whenever pandas is installed, and pandas 3 imports pyarrow: about 60 MiB in a serving
    process whose models get numpy arrays. Nothing uses that module-level import (its pandas
    helper takes pandas as an argument), and scikit-learn decides whether an input is a
    DataFrame by looking for pandas in ``sys.modules``: no DataFrame can exist before pandas is
    imported. So it is imported here with pandas hidden, and pandas is imported for real by the
    first thing that needs it (a model fitted on named columns, reading a file, training).

    Call it before the process serves: while it runs (about a second), ``import pandas`` fails
    in every thread.
    """
    if "sklearn.utils.fixes" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises ImportError
    try:
        import sklearn.base
        import sklearn.utils.fixes  # noqa: F401
    except ImportError:  # scikit-learn is not installed: nothing to keep light
        pass
    finally:
        if sys.modules.get("pandas", False) is None:
            del sys.modules["pandas"]


def import_libraries() -> None:
    """Import what loading the default flavor (skops files) needs.

    A replica calls it at start: importing skops takes most of a second, and its first load of
    a version pushed through another replica should not wait for it.
    """
    import skops.io  # noqa: F401


def load(
    flavor: str, path: Path, *, trust_code: bool, refusal: Refusal = ADMIN_ONLY
) -> LoadedModel:
    """Load an artifact of the given flavor.

    ``trust_code`` allows formats that run code when loaded (pickle, MLflow) and skops types
    outside the trusted defaults; pass it only for artifacts an admin key pushed. Without it,
    such artifacts are refused with ``refusal``.
    """
    if flavor not in FLAVORS:
        raise ArtifactRejected(
            f"unknown flavor {flavor!r}; known: {', '.join(FLAVORS)}",
            details=[{"field": "flavor", "reason": "unknown flavor"}],
        )
    if flavor not in SAFE_FLAVORS and not trust_code:
        raise ArtifactRejected(
            f"the {flavor} format runs code when loaded; {refusal.message} "
            "(save scikit-learn models with skops instead)",
            details=[{"field": "artifact", "reason": refusal.reason.format(flavor=flavor)}],
        )
    from .moved import alias_moved_modules

    alias_moved_modules()  # pickles (and skops types) made before the modules moved
    try:
        if flavor == "sklearn":
            return _wrap(_load_skops(path, trust_code, refusal), "sklearn")
        if flavor == "pickle":
            return _wrap(_load_pickle(path), "pickle")
        from .mlflow import load_mlflow

        return load_mlflow(path)
    except ArtifactRejected:
        raise
    except Exception as exc:
        raise ArtifactRejected(
            f"cannot load the {flavor} artifact: {type(exc).__name__}: {exc}",
            details=[{"field": "artifact", "reason": f"{type(exc).__name__}: {exc}"}],
        ) from exc


def _load_skops(path: Path, trust_code: bool, refusal: Refusal) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    if untrusted and not trust_code:
        raise ArtifactRejected(
            "the skops file holds types outside the trusted defaults: "
            + ", ".join(untrusted)
            + f" (loading them runs code: {refusal.message})",
            details=[{"field": "artifact", "reason": f"untrusted type {t}"} for t in untrusted],
        )
    return sio.load(path, trusted=untrusted)


def _load_pickle(path: Path) -> Any:
    import joblib

    with warnings.catch_warnings():
        # A model pickled by another scikit-learn release still loads; the lineage says which.
        warnings.simplefilter("ignore")
        obj = joblib.load(path)
    if not callable(getattr(obj, "predict", None)):
        raise ArtifactRejected(
            f"the pickled object ({type(obj).__name__}) has no predict method",
            details=[{"field": "artifact", "reason": "object has no predict(X)"}],
        )
    return obj


def _wrap(obj: Any, flavor: str) -> LoadedModel:
    return LoadedModel(obj, flavor, input_kind=_input_kind(obj), task=_task_of(obj))


def _input_kind(obj: Any) -> InputKind:
    from ..model import Model

    if isinstance(obj, Model):
        return "frame"
    if _is_sklearn(obj) and getattr(obj, "feature_names_in_", None) is None:
        return "array"
    return "frame"


def _is_sklearn(obj: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        return False
    return isinstance(obj, BaseEstimator)


def _task_of(obj: Any) -> str:
    from ..model import Model

    if isinstance(obj, Model):
        return obj.task
    if _is_sklearn(obj):
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(obj):
            return "classification"
        if is_regressor(obj):
            return "regression"
    return (
        "classification" if hasattr(obj, "predict_proba") and hasattr(obj, "classes_") else "other"
    )


# -- saving (client side) ------------------------------------------------------------------------


def serialize(obj: Any) -> tuple[bytes, str]:
    """Bytes and flavor for an in-memory model: skops for scikit-learn, cloudpickle otherwise."""
    if _is_sklearn(obj):
        import skops.io as sio

        try:
            return sio.dumps(obj), "sklearn"
        except Exception:
            pass
    import cloudpickle

    buf = io.BytesIO()
    cloudpickle.dump(obj, buf, protocol=pickle.DEFAULT_PROTOCOL)
    return buf.getvalue(), "pickle"


# -- lineage ---------------------------------------------------------------------------------------


def libraries_for(flavor: str, obj: Any = None) -> dict[str, str]:
    """Versions of Python and of the libraries this flavor (and this object) need."""
    names = ["numpy", "pandas"]
    if flavor == "sklearn":
        names += ["scikit-learn", "scipy", "skops"]
    elif flavor == "pickle":
        names += ["scikit-learn", "scipy", "joblib", "cloudpickle"]
    elif flavor == "mlflow":
        names += ["scikit-learn", "cloudpickle", "pyyaml"]
    if obj is not None:
        root = type(obj).__module__.split(".")[0]
        if root not in ("builtins", "__main__", "sklearn", "modelport"):
            names.append(root)
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def describe_object(obj: Any) -> dict[str, Any]:
    """Hyperparameters and a summary of learned parameters, JSON-ready."""
    from ..model import Model

    if isinstance(obj, Model):
        return {"hyperparameters": {}, "learned": _json_safe(obj.params())}
    hyper: dict[str, Any] = {}
    if callable(getattr(obj, "get_params", None)):
        try:
            hyper = {k: _json_safe(v) for k, v in obj.get_params(deep=True).items()}
        except Exception:
            hyper = {}
    return {"hyperparameters": hyper, "learned": _learned(obj)}


def _learned(obj: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    steps = getattr(obj, "steps", None)
    if depth < 3 and isinstance(steps, list):
        for name, step in steps:
            if step is not None and step != "passthrough":
                out[name] = {"type": type(step).__name__, **_learned(step, depth + 1)}
        return out
    for key, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
        if key.endswith("_") and not key.startswith("_"):
            out[key] = _summary(value)
    return out


def _summary(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.size <= 20:
            return _json_safe(value.tolist())
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, list | tuple) and len(value) > 20:
        return {"length": len(value)}
    return _json_safe(value)


def _json_safe(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, type):  # e.g. a dtype given as a class (np.float64)
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if hasattr(value, "item") and getattr(value, "size", 2) == 1:
        return _json_safe(value.item(), depth)
    if depth < 3 and isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value[:50]]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in list(value.items())[:50]}
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist(), depth + 1)
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def example_table(schema: Schema) -> Table:
    """One validated row that fits the schema, for the smoke prediction."""
    return schema.table([schema.example_record()])
