"""One contract battery over every flavor: round trip, determinism, probabilities, untouched
inputs, schema order, detection, and trust rules."""

from __future__ import annotations

import copy
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from modelport import Model
from modelport.errors import ArtifactRejected
from modelport.flavors import describe_object, detect_flavor, libraries_for, load, serialize
from modelport.inputs.schema import Field, Schema

COLUMNS = ["a", "b", "c"]
SCHEMA = Schema(tuple(Field(c, "number") for c in COLUMNS))


def _data(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=COLUMNS)
    y = np.where(X["a"] + 0.5 * X["b"] - X["c"] > 0, "yes", "no")
    return X, y


def _pipeline(seed: int = 0) -> Any:
    X, y = _data(seed)
    return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed)).fit(X, y)


class Threshold(Model):
    """Custom code: a fixed linear rule with probabilities."""

    classes_ = ["no", "yes"]
    task = "classification"

    def predict(self, X: pd.DataFrame) -> list[str]:
        return ["yes" if s > 0 else "no" for s in self._score(X)]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1 / (1 + np.exp(-self._score(X)))
        return np.column_stack([1 - p, p])

    def _score(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(X["a"] + 0.5 * X["b"] - X["c"])

    def params(self) -> dict[str, Any]:
        return {"weights": [1.0, 0.5, -1.0]}


class PlainObject:
    """Any object with predict, no base class."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(X["a"] * 2.0)


class PyfuncModel:
    """An MLflow-style python model: predict(context, model_input)."""

    def predict(self, context: Any, model_input: pd.DataFrame) -> np.ndarray:
        return np.asarray(model_input["a"] - model_input["c"])


def _mlmodel(flavors: str, signature: bool = True) -> str:
    sig = (
        "signature:\n  inputs: '["
        + ", ".join(f'{{"type": "double", "name": "{c}", "required": true}}' for c in COLUMNS)
        + ']\'\n  outputs: \'[{"type": "string", "required": true}]\'\n'
        if signature
        else ""
    )
    return f"artifact_path: model\nflavors:\n{flavors}mlflow_version: 2.16.0\n{sig}"


def _zip(files: dict[str, bytes], top: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(top + name, data)
    return buf.getvalue()


def _mlflow_sklearn(model: Any) -> bytes:
    flavors = (
        "  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n"
        "    python_version: 3.11.7\n    env:\n      virtualenv: python_env.yaml\n"
        "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n"
        "    sklearn_version: 1.5.0\n"
    )
    return _zip(
        {"MLmodel": _mlmodel(flavors).encode(), "model.pkl": cloudpickle.dumps(model)}, "model/"
    )


def _mlflow_pyfunc(obj: Any) -> bytes:
    flavors = (
        "  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "    python_model: python_model.pkl\n    python_version: 3.11.7\n"
    )
    return _zip({"MLmodel": _mlmodel(flavors).encode(), "python_model.pkl": cloudpickle.dumps(obj)})


def _joblib(model: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


# name -> (make the in-memory model, save it as artifact bytes, expected flavor)
CASES: dict[str, tuple[Callable[[int], Any], Callable[[Any], bytes], str]] = {
    "skops": (_pipeline, lambda m: serialize(m)[0], "sklearn"),
    "joblib": (_pipeline, _joblib, "pickle"),
    "modelport.Model": (lambda seed: Threshold(), lambda m: serialize(m)[0], "pickle"),
    "plain object": (lambda seed: PlainObject(), cloudpickle.dumps, "pickle"),
    "mlflow sklearn": (_pipeline, _mlflow_sklearn, "mlflow"),
    "mlflow pyfunc": (lambda seed: PyfuncModel(), _mlflow_pyfunc, "mlflow"),
}


def _predict(loaded: Any, X: pd.DataFrame) -> list[Any]:
    """What the server would answer for the rows of ``X``: validated into a table, then scored."""
    preds, _ = loaded.predict_with_proba(SCHEMA.table_from_rows(X.to_numpy().tolist()))
    return list(preds.tolist() if isinstance(preds, np.ndarray) else preds)


def _expected(model: Any, X: pd.DataFrame) -> list[Any]:
    if isinstance(model, PyfuncModel):
        return list(model.predict(None, X))
    return list(model.predict(X))


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_gives_identical_predictions(case: str, tmp_path: Path) -> None:
    make, save, flavor = CASES[case]
    model = make(0)
    path = tmp_path / "artifact"
    path.write_bytes(save(model))
    assert detect_flavor(path) == flavor
    loaded = load(flavor, path, trust_code=True)
    X, _ = _data(1)
    assert _predict(loaded, X) == pytest.approx(_expected(model, X))


@pytest.mark.parametrize("case", ["skops", "joblib", "mlflow sklearn"])
def test_same_seed_same_predictions_after_round_trip(case: str, tmp_path: Path) -> None:
    make, save, flavor = CASES[case]
    outs = []
    for i in range(2):
        path = tmp_path / f"m{i}"
        path.write_bytes(save(make(7)))
        loaded = load(flavor, path, trust_code=True)
        preds, probas = loaded.predict_with_proba(
            SCHEMA.table_from_rows(_data(2)[0].to_numpy().tolist())
        )
        outs.append((preds.tolist(), probas.tolist()))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("case", ["skops", "joblib", "modelport.Model", "mlflow sklearn"])
def test_classifiers_give_probabilities_per_class(case: str, tmp_path: Path) -> None:
    make, save, flavor = CASES[case]
    path = tmp_path / "artifact"
    path.write_bytes(save(make(0)))
    loaded = load(flavor, path, trust_code=True)
    table = SCHEMA.table_from_rows(_data(3)[0].to_numpy().tolist()[:20])
    preds, matrix = loaded.predict_with_proba(table)
    assert matrix is not None and matrix.shape == (20, 2)
    probas = loaded.probability_records(matrix)
    for pred, probs in zip(preds, probas, strict=True):
        assert set(probs) == {"no", "yes"}
        assert sum(probs.values()) == pytest.approx(1.0)
        assert pred == max(probs, key=probs.__getitem__)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inputs_are_not_mutated_and_columns_follow_the_schema(case: str, tmp_path: Path) -> None:
    make, save, flavor = CASES[case]
    model = make(0)
    path = tmp_path / "artifact"
    path.write_bytes(save(model))
    loaded = load(flavor, path, trust_code=True)
    # Fields arrive in another order; validation puts them in schema order.
    records = [{"c": 0.3, "a": 1.5, "b": -2.0}, {"b": 0.1, "c": -1.0, "a": 0.2}]
    before = copy.deepcopy(records)
    table = SCHEMA.table(records)
    rows_before = table.rows()
    got, _ = loaded.predict_with_proba(table)
    got = got.tolist() if isinstance(got, np.ndarray) else list(got)
    assert records == before and table.rows() == rows_before
    X = pd.DataFrame([[r["a"], r["b"], r["c"]] for r in records], columns=COLUMNS)
    assert got == pytest.approx(_expected(model, X))


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        lambda: LogisticRegression(C=0.01),  # many rows near the decision boundary
        lambda: RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0),
        lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5)),
        lambda: HistGradientBoostingClassifier(max_iter=20),
        lambda: GaussianNB(),
    ],
)
@pytest.mark.parametrize("classes", [2, 3])
def test_one_call_predictions_equal_the_estimators_own(
    make: Any, classes: int, tmp_path: Path
) -> None:
    """For estimators whose predict is the most probable class, predictions come from one
    predict_proba call; they must equal what the estimator's predict says, row for row."""
    rng = np.random.default_rng(classes)
    X = rng.normal(size=(3000, 3))
    y = np.array(["no", "yes", "maybe"])[(X[:, 0] * 3).astype(int) % classes]
    model = make().fit(X, y)
    loaded = load("pickle", _saved(model, tmp_path), trust_code=True)
    assert loaded._labels is not None  # the one-call path is taken
    fresh = rng.normal(size=(5000, 3))
    preds, proba = loaded.predict_with_proba(SCHEMA.table_from_rows(fresh.tolist()))
    assert preds.tolist() == model.predict(fresh).tolist()
    assert np.allclose(proba, model.predict_proba(fresh))


def _saved(model: Any, folder: Path) -> Path:
    path = folder / "m.joblib"
    path.write_bytes(_joblib(model))
    return path


def test_other_classifiers_are_asked_for_predictions_too(tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _data()
    knn = KNeighborsClassifier(n_neighbors=4).fit(X, y)  # ties: predict need not be argmax
    loaded = load("pickle", _saved(knn, tmp_path), trust_code=True)
    assert loaded._labels is None
    fresh, _ = _data(5)
    preds, _ = loaded.predict_with_proba(SCHEMA.table_from_rows(fresh.to_numpy().tolist()))
    assert preds.tolist() == knn.predict(fresh).tolist()


@pytest.mark.parametrize("case", ["joblib", "modelport.Model", "plain object", "mlflow sklearn"])
def test_code_running_formats_need_trust(case: str, tmp_path: Path) -> None:
    make, save, flavor = CASES[case]
    path = tmp_path / "artifact"
    path.write_bytes(save(make(0)))
    with pytest.raises(ArtifactRejected, match="admin key"):
        load(flavor, path, trust_code=False)


def test_skops_is_loaded_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "m.skops"
    path.write_bytes(serialize(_pipeline())[0])
    assert load("sklearn", path, trust_code=False).task == "classification"


def _square(x: Any) -> Any:
    return x * x


def test_skops_with_untrusted_types_needs_trust(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(_square), LogisticRegression())
    X, y = _data()
    pipe.fit(X, y)
    path = tmp_path / "m.skops"
    sio.dump(pipe, path)
    assert sio.get_untrusted_types(file=path)
    with pytest.raises(ArtifactRejected, match="trusted"):
        load("sklearn", path, trust_code=False)
    assert load("sklearn", path, trust_code=True).has_proba


@pytest.mark.parametrize(
    "blob",
    [b"", b"not a model at all", b"\x80\x04garbage", _zip({"x.txt": b"hello"})],
    ids=["empty", "text", "pickle-garbage", "zip-without-model"],  # stable across xdist workers
)
def test_garbage_is_rejected(blob: bytes, tmp_path: Path) -> None:
    path = tmp_path / "artifact"
    path.write_bytes(blob)
    with pytest.raises(ArtifactRejected):
        load(detect_flavor(path), path, trust_code=True)


def test_pickle_of_an_object_without_predict_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "a.pkl"
    path.write_bytes(cloudpickle.dumps({"not": "a model"}))
    with pytest.raises(ArtifactRejected, match="no predict"):
        load("pickle", path, trust_code=True)


def test_mlflow_signature_becomes_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    path.write_bytes(_mlflow_sklearn(_pipeline()))
    loaded = load("mlflow", path, trust_code=True)
    schema = loaded.extra["schema"]
    assert [(f.name, f.type) for f in schema.fields] == [(c, "number") for c in COLUMNS]


def test_mlflow_zip_slip_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    flavors = "  sklearn:\n    pickled_model: model.pkl\n"
    path.write_bytes(_zip({"MLmodel": _mlmodel(flavors).encode(), "../evil.pkl": b"x"}))
    with pytest.raises(ArtifactRejected, match="unsafe path"):
        load("mlflow", path, trust_code=True)


def test_mlflow_unsupported_column_type_is_named(tmp_path: Path) -> None:
    flavors = "  sklearn:\n    pickled_model: model.pkl\n"
    mlmodel = (
        f'flavors:\n{flavors}signature:\n  inputs: \'[{{"type": "binary", "name": "img"}}]\'\n'
    )
    path = tmp_path / "m.zip"
    path.write_bytes(
        _zip({"MLmodel": mlmodel.encode(), "model.pkl": cloudpickle.dumps(_pipeline())})
    )
    with pytest.raises(ArtifactRejected, match="'img'"):
        load("mlflow", path, trust_code=True)


def test_describe_gives_hyperparameters_and_learned_summary() -> None:
    info = describe_object(_pipeline())
    assert info["hyperparameters"]["logisticregression__C"] == 1.0
    learned = info["learned"]["logisticregression"]
    assert learned["type"] == "LogisticRegression"
    assert np.asarray(learned["coef_"]).shape == (1, 3)
    assert learned["classes_"] == ["no", "yes"]
    assert describe_object(Threshold())["learned"] == {"weights": [1.0, 0.5, -1.0]}


def test_libraries_name_python_and_scikit_learn() -> None:
    libs = libraries_for("sklearn", _pipeline())
    import sklearn

    assert libs["scikit-learn"] == sklearn.__version__
    assert libs["python"].count(".") == 2
    assert "numpy" in libs


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=15, max_depth=6, random_state=1),
        lambda: ExtraTreesClassifier(n_estimators=15, random_state=2),
        lambda: RandomForestRegressor(n_estimators=15, max_depth=5, random_state=3),
        lambda: ExtraTreesRegressor(n_estimators=15, random_state=4),
    ],
)
@pytest.mark.parametrize("classes", [2, 3])
def test_forests_predicted_tree_by_tree_equal_the_estimators_own(
    make: Any, classes: int, tmp_path: Path
) -> None:
    """Forests fitted on arrays skip scikit-learn's per-tree job machinery: the answers must
    be bit-identical, and rows with missing values go to the estimator itself."""
    rng = np.random.default_rng(classes)
    X = rng.normal(size=(2000, 3))
    y = (X[:, 0] * 3).astype(int) % classes
    model = make().fit(X, y if hasattr(make(), "predict_proba") else X[:, 0] + y)
    loaded = load("pickle", _saved(model, tmp_path), trust_code=True)
    assert loaded._fast is not None
    fresh = rng.normal(size=(3000, 3)) * 3
    preds, proba = loaded.predict_with_proba(SCHEMA.table_from_rows(fresh.tolist()))
    assert np.array_equal(preds, model.predict(fresh))
    if proba is not None:
        assert np.array_equal(proba, model.predict_proba(fresh))
    assert loaded._fast(np.array([[np.nan, 0.0, 0.0]])) is None  # the estimator decides


def test_a_forest_fitted_on_named_columns_is_left_to_scikit_learn(tmp_path: Path) -> None:
    X, y = _data()
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    assert load("pickle", _saved(model, tmp_path), trust_code=True)._fast is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(max_iter=5000),
        lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.5)),
        lambda: make_pipeline(
            StandardScaler(with_mean=False), "passthrough", LogisticRegression(max_iter=5000)
        ),
        lambda: LinearRegression(),
        lambda: make_pipeline(StandardScaler(), Ridge(alpha=2.0)),
        lambda: Lasso(alpha=0.01),
        lambda: make_pipeline(StandardScaler(with_std=False), ElasticNet(alpha=0.01)),
    ],
)
@pytest.mark.parametrize("classes", [2, 3])
def test_linear_models_evaluated_with_numpy_equal_the_estimators_own(
    make: Any, classes: int, tmp_path: Path
) -> None:
    """Linear models (and standard-scaled pipelines) fitted on arrays skip scikit-learn's
    per-call checks: the answers must be bit-identical, for one row and for many, and rows
    with missing values are left to the estimator."""
    rng = np.random.default_rng(classes)
    X = rng.normal(size=(500, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -3.0]
    y = (X[:, 0] * 3).astype(int) % classes
    fresh = rng.normal(size=(300, 3)) * 4
    model = make()
    classifier = hasattr(model, "predict_proba")
    model.fit(X, y if classifier else X @ [1.5, -0.2, 3.0] + y)
    loaded = load("pickle", _saved(model, tmp_path), trust_code=True)
    assert loaded._fast is not None
    for rows in (fresh[:1], fresh):
        preds, proba = loaded.predict_with_proba(SCHEMA.table_from_rows(rows.tolist()))
        assert np.array_equal(preds, model.predict(rows))
        if classifier:
            assert np.array_equal(proba, model.predict_proba(rows))
    assert loaded._fast(np.array([[np.nan, 0.0, 0.0]])) is None  # the estimator decides
    assert loaded._fast(np.array([[np.inf, 0.0, 0.0]])) is None


def test_other_linear_pipelines_and_named_columns_are_left_to_scikit_learn(
    tmp_path: Path,
) -> None:
    X, y = _data()
    on_columns = LogisticRegression().fit(X, y)
    assert load("pickle", _saved(on_columns, tmp_path), trust_code=True)._fast is None
    other_scaler = make_pipeline(MinMaxScaler(), LogisticRegression()).fit(X.to_numpy(), y)
    assert load("pickle", _saved(other_scaler, tmp_path), trust_code=True)._fast is None
