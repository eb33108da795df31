"""Built-in algorithms: the catalog, spec checks, preprocessing from a schema, training,
evaluation, and the online wrapper (drift, untouched inputs, snapshots)."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

from modelport import flavors
from modelport.errors import InvalidInput, ModelNotReady
from modelport.inputs.schema import parse_schema
from modelport.learning import algorithms, training
from modelport.learning.online import OnlineModel, RunningScaler

SCHEMA = parse_schema(
    {
        "fields": [
            {"name": "x0", "type": "number"},
            {"name": "x1", "type": "number"},
            {"name": "x2", "type": "number", "required": False},
            {"name": "count", "type": "integer"},
            {"name": "flag", "type": "boolean"},
            {"name": "segment", "type": "category", "categories": ["a", "b", "c"]},
        ]
    }
)
FEATURES = SCHEMA.names
REQUIRED = {
    "linear_regression",
    "online_linear_regression",
    "logistic_regression",
    "online_logistic_regression",
    "random_forest_classifier",
    "random_forest_regressor",
    "gradient_boosting_classifier",
    "gradient_boosting_regressor",
}
# Every entry that this environment can build (river entries only appear with river installed).
ENTRIES = [a["name"] for a in algorithms.catalog()]


def _frame(task: str, n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Synthetic data with the schema's columns (a category and a boolean carry signal) and
    a ``label`` column: classes "no"/"yes" or a number."""
    if task == "classification":
        X, y = make_classification(
            n_samples=n, n_features=4, n_informative=3, n_redundant=0, random_state=seed
        )
        label: Any = np.where(y == 1, "yes", "no")
    else:
        X, y = make_regression(n_samples=n, n_features=4, noise=5.0, random_state=seed)
        label = y
    segment = np.array(["a", "b", "c"], dtype=object)[np.digitize(X[:, 2], [-0.5, 0.5])]
    x2 = X[:, 3].copy()
    x2[::7] = np.nan  # an optional field left out now and then
    return pd.DataFrame(
        {
            "x0": X[:, 0],
            "x1": X[:, 1],
            "x2": x2,
            "count": np.round(X[:, 2] * 3).astype("int64"),
            "flag": X[:, 3] > 0,
            "segment": segment,
            "label": label,
        }
    )


def _task(name: str) -> str:
    return str(algorithms.lookup(name).task)


def _small(name: str) -> dict[str, Any]:
    """Parameters that keep the forests and boosting quick in tests."""
    if "forest" in name:
        return {"n_estimators": 20}
    if "gradient_boosting" in name:
        return {"max_iter": 30}
    return {}


# -- the catalog --------------------------------------------------------------------------------


def test_catalog_lists_the_required_entries_json_ready() -> None:
    rows = algorithms.catalog()
    assert {r["name"] for r in rows} >= REQUIRED
    assert json.loads(json.dumps(rows)) == rows
    for row in rows:
        assert row["task"] in ("classification", "regression")
        assert isinstance(row["online"], bool) and row["description"]
        for p in row["params"]:
            assert p["type"] in ("int", "float", "bool", "choice")
            assert p["help"] and "default" in p
            if p["type"] == "choice":
                assert p["default"] in p["choices"]
            if p["type"] in ("int", "float") and p["default"] is not None:
                low = p.get("minimum", p.get("exclusive_minimum"))
                assert low is not None and low <= p["default"] <= p["maximum"]
    by_name = {r["name"]: r for r in rows}
    online = {n for n, r in by_name.items() if r["online"]}
    assert {"online_linear_regression", "online_logistic_regression"} <= online
    assert not {"linear_regression", "logistic_regression"} & online
    for name in REQUIRED - {"linear_regression"}:  # LinearRegression has no randomness
        seed = {p["name"]: p for p in by_name[name]["params"]}["random_state"]
        assert seed["default"] == 0, name


def test_online_defaults_are_the_drift_tracking_ones() -> None:
    defaults = algorithms.check_spec("online_linear_regression", {})
    assert defaults["learning_rate"] == "constant" and defaults["eta0"] == 0.01
    assert defaults["epochs"] == 1
    classifier = algorithms.check_spec("online_logistic_regression", {})
    assert classifier["learning_rate"] == "constant" and classifier["eta0"] == 0.05
    schedules = {
        p["name"]: p for p in algorithms.lookup("online_linear_regression").to_dict()["params"]
    }["learning_rate"]
    assert schedules["choices"] == ["constant", "invscaling", "adaptive"]


def test_river_entries_are_absent_without_river() -> None:
    # river is installed by the test set-up; a fresh interpreter where it cannot be imported
    # stands for an install without the `learn` extra.
    code = """
import sys
sys.modules["river"] = None  # import river fails, as it does where river is not installed
from modelport.learning import algorithms
from modelport.errors import InvalidInput
names = [a["name"] for a in algorithms.catalog()]
assert names and not [n for n in names if n.startswith("river")], names
try:
    algorithms.lookup("river_linear_regression")
except InvalidInput as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: "), done.stdout
    assert [name for name in ENTRIES if name.startswith("river")], "river is installed here"


# -- checking a spec ----------------------------------------------------------------------------


def test_check_spec_fills_defaults_and_coerces() -> None:
    params = algorithms.check_spec("random_forest_classifier", {"n_estimators": 50.0})
    assert params["n_estimators"] == 50 and isinstance(params["n_estimators"], int)
    assert params["max_depth"] is None and params["random_state"] == 0
    assert (
        algorithms.check_spec("random_forest_classifier", {"max_depth": None})["max_depth"] is None
    )
    assert algorithms.check_spec("logistic_regression", {"C": 2})["C"] == 2.0


def test_check_spec_names_every_problem_by_field() -> None:
    with pytest.raises(InvalidInput) as info:
        algorithms.check_spec(
            "logistic_regression",
            {"C": 0, "max_iter": 2.5, "class_weight": "heavy", "random_state": True, "bogus": 1},
        )
    reasons = {d["field"]: d["reason"] for d in info.value.details}
    assert set(reasons) == {
        "params.C",
        "params.max_iter",
        "params.class_weight",
        "params.random_state",
        "params.bogus",
    }
    assert "above 0" in reasons["params.C"]
    assert reasons["params.max_iter"] == "expected an integer"
    assert "'balanced'" in reasons["params.class_weight"]
    assert "unknown parameter" in reasons["params.bogus"]
    assert info.value.status_code == 422


@pytest.mark.parametrize(
    ("algorithm", "params", "field"),
    [
        ("no_such_thing", {}, "algorithm"),
        (None, {}, "algorithm"),
        ("linear_regression", [], "params"),
        ("online_linear_regression", {"learning_rate": "optimal"}, "params.learning_rate"),
        ("online_linear_regression", {"eta0": -0.1}, "params.eta0"),
        ("random_forest_regressor", {"n_estimators": 0}, "params.n_estimators"),
        ("random_forest_regressor", {"min_samples_leaf": None}, "params.min_samples_leaf"),
        ("gradient_boosting_classifier", {"learning_rate": "fast"}, "params.learning_rate"),
        ("gradient_boosting_classifier", {"early_stopping": 1}, "params.early_stopping"),
        ("logistic_regression", {"C": float("inf")}, "params.C"),
    ],
)
def test_check_spec_rejects(algorithm: Any, params: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        algorithms.check_spec(algorithm, params)
    assert [d["field"] for d in info.value.details] == [field]


def test_string_fields_are_rejected_naming_the_field() -> None:
    schema = parse_schema(
        {"fields": [{"name": "x", "type": "number"}, {"name": "comment", "type": "string"}]}
    )
    with pytest.raises(InvalidInput) as info:
        algorithms.check_spec("logistic_regression", {"C": -1}, schema=schema)
    details = {d["field"]: d["reason"] for d in info.value.details}
    assert set(details) == {"params.C", "schema.fields[1]"}
    assert "'comment' is a string field" in details["schema.fields[1]"]
    frame = pd.DataFrame({"x": [1.0, 2.0], "comment": ["hi", "yo"], "y": [1.0, 2.0]})
    for call in (
        lambda: algorithms.build_estimator("linear_regression", {}, schema),
        lambda: training.train("linear_regression", {}, schema, frame, "y"),
    ):
        with pytest.raises(InvalidInput) as info:
            call()
        assert [d["field"] for d in info.value.details] == ["schema.fields[1]"]


# -- every entry trains and predicts ------------------------------------------------------------


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_trains_and_predicts(name: str) -> None:
    task = _task(name)
    frame = _frame(task)
    result = training.train(name, _small(name), SCHEMA, frame, "label", holdout=0.25)
    assert (result.train_rows, result.holdout_rows, result.skipped_rows) == (180, 60, 0)
    assert result.algorithm == name and result.task == task and result.seconds > 0
    assert result.params == algorithms.check_spec(name, _small(name))
    assert list(result.holdout.columns) == [*FEATURES, "label"] and len(result.holdout) == 60
    json.dumps(result.summary())
    X = frame[FEATURES].head(25)
    predicted = np.asarray(result.estimator.predict(X))
    assert predicted.shape == (25,)
    if task == "classification":
        assert set(result.metrics) == {"rows", "accuracy", "f1", "log_loss", "roc_auc"}
        assert result.metrics["accuracy"] > 0.6, result.metrics
        assert set(predicted.tolist()) <= {"no", "yes"}
        proba = result.estimator.predict_proba(X)
        assert proba.shape == (25, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert list(result.estimator.classes_) == ["no", "yes"]
    else:
        assert set(result.metrics) == {"rows", "mae", "rmse", "r2"}
        assert result.metrics["r2"] > 0.5, result.metrics
        assert predicted.dtype.kind == "f"


@pytest.mark.parametrize("name", ENTRIES)
def test_serving_a_trained_entry_through_the_pickle_flavor(name: str, tmp_path: Path) -> None:
    """The version a retrain or an online snapshot pushes: joblib bytes, loaded as a pickle
    artifact, fed validated rows (``Table.frame()``) by the serving contract."""
    task = _task(name)
    result = training.train(name, _small(name), SCHEMA, _frame(task), "label")
    path = tmp_path / "model.joblib"
    joblib.dump(result.estimator, path)
    loaded = flavors.load(flavors.detect_flavor(path), path, trust_code=True)
    assert loaded.input_kind == "frame" and loaded.task == task
    lineage = flavors.describe_object(loaded.obj)  # what a retrain records with the version
    json.dumps(lineage)
    assert lineage["learned"] and (algorithms.lookup(name).online or lineage["hyperparameters"])
    records = [
        {"x0": 0.1, "x1": -1.0, "count": 2, "flag": True, "segment": "b"},  # x2 left out
        {"x0": 1.5, "x1": 0.3, "x2": 0.7, "count": -1, "flag": False, "segment": "c"},
    ]
    predictions, proba = loaded.predict_with_proba(SCHEMA.table(records))
    assert len(predictions) == 2
    if task == "classification":
        assert loaded.classes == ["no", "yes"] and proba is not None and proba.shape == (2, 2)
    else:
        assert proba is None


# -- determinism --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENTRIES)
def test_same_data_and_seed_give_the_same_model(name: str) -> None:
    task = _task(name)
    frame = _frame(task, seed=3)
    first = training.train(name, _small(name), SCHEMA, frame, "label", seed=7)
    second = training.train(name, _small(name), SCHEMA, frame, "label", seed=7)
    X = _frame(task, n=80, seed=4)[FEATURES]
    assert first.metrics == second.metrics
    pd.testing.assert_frame_equal(first.holdout, second.holdout)
    ours = first.estimator.predict(X)
    np.testing.assert_array_equal(ours, second.estimator.predict(X))
    clone = joblib.load(io.BytesIO(_joblib_bytes(first.estimator)))
    np.testing.assert_array_equal(ours, clone.predict(X))
    if task == "classification":
        np.testing.assert_array_equal(first.estimator.predict_proba(X), clone.predict_proba(X))


def _joblib_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def test_the_holdout_split_depends_on_the_seed_only() -> None:
    train_a, hold_a = training.split_positions(100, 0.2, seed=1)
    train_b, hold_b = training.split_positions(100, 0.2, seed=1)
    _, hold_c = training.split_positions(100, 0.2, seed=2)
    np.testing.assert_array_equal(hold_a, hold_b)
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.array_equal(hold_a, hold_c)
    assert len(hold_a) == 20 and sorted([*train_a, *hold_a]) == list(range(100))
    assert list(train_a) == sorted(train_a)  # data order kept for online learning
    assert len(training.split_positions(100, 0.0, seed=1)[1]) == 0
    for bad in (1.0, -0.1, True, "0.2"):
        with pytest.raises(InvalidInput) as info:
            training.split_positions(100, bad, seed=1)  # type: ignore[arg-type]
        assert info.value.details[0]["field"] == "holdout"


# -- preprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["logistic_regression", "online_logistic_regression", "random_forest_classifier"]
)
def test_an_unknown_or_missing_category_encodes_as_all_zeros(name: str) -> None:
    """A value outside the schema's categories (or none) predicts as no category, silently:
    with pytest's warnings as errors, any encoder warning would fail this test."""
    result = training.train(name, _small(name), SCHEMA, _frame("classification"), "label")
    X = _frame("classification", n=20, seed=5)[FEATURES]
    unknown = X.assign(segment="zzz")
    missing = X.assign(segment=None)
    p_unknown = result.estimator.predict_proba(unknown)
    np.testing.assert_array_equal(p_unknown, result.estimator.predict_proba(missing))
    assert not np.array_equal(p_unknown, result.estimator.predict_proba(X))


def test_a_missing_number_is_the_training_mean_for_linear_models() -> None:
    frame = _frame("regression")
    result = training.train("linear_regression", {}, SCHEMA, frame, "label", holdout=0.0)
    row = frame[FEATURES].head(1)
    with_nan = row.assign(x2=np.nan)
    with_mean = row.assign(x2=float(np.nanmean(frame["x2"])))
    np.testing.assert_allclose(
        result.estimator.predict(with_nan), result.estimator.predict(with_mean)
    )


def test_booleans_and_category_values_match_by_key() -> None:
    """What Parquet or JSON made of the values (object booleans with None, 1.0 for 1) is
    encoded like the declared values."""
    schema = parse_schema(
        {
            "fields": [
                {"name": "on", "type": "boolean", "required": False},
                {"name": "size", "type": "category", "categories": [1, 2, 3]},
            ]
        }
    )
    rng = np.random.default_rng(0)
    size = rng.integers(1, 4, 200)
    frame = pd.DataFrame(
        {"on": rng.random(200) < 0.5, "size": size, "y": size * 2.0 + rng.normal(0, 0.1, 200)}
    )
    result = training.train("linear_regression", {}, schema, frame, "y", holdout=0.0)
    as_ints = pd.DataFrame({"on": [True, False], "size": [1, 3]})
    as_sent = pd.DataFrame(
        {"on": pd.Series([True, None], dtype=object), "size": pd.Series([1.0, "3"], dtype=object)}
    )
    expected = result.estimator.predict(as_ints)
    np.testing.assert_allclose(expected, [2.0, 6.0], atol=0.2)
    assert abs(result.estimator.predict(as_sent)[0] - expected[0]) < 1e-9


def test_running_scaler_matches_the_whole_data_statistics_whatever_is_missing() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(300, 3))
    data[rng.random(data.shape) < 0.3] = np.nan
    data[:40, 2] = np.nan  # a column with no value at all in the first batches
    scaler = RunningScaler()
    for start in range(0, 300, 20):
        scaler.partial_fit(data[start : start + 20])
    np.testing.assert_allclose(scaler.mean_, np.nanmean(data, axis=0))
    np.testing.assert_allclose(scaler.scale_, np.nanstd(data, axis=0))
    once = RunningScaler().fit(data)
    np.testing.assert_allclose(once.mean_, scaler.mean_)
    scaled = scaler.transform(data)
    assert not np.isnan(scaled).any()
    assert (scaled[np.isnan(data)] == 0).all()


# -- training details ---------------------------------------------------------------------------


def test_rows_without_a_label_are_skipped_and_given_classes_are_used() -> None:
    frame = _frame("classification")
    # Labels as a Parquet file may hold them: floats for the integer classes 0 and 1.
    frame["label"] = np.where(frame["label"] == "yes", 1.0, 0.0)
    frame.loc[::10, "label"] = np.nan
    before = frame.copy()
    result = training.train(
        "online_logistic_regression", {"epochs": 3}, SCHEMA, frame, "label", classes=[0, 1]
    )
    pd.testing.assert_frame_equal(frame, before)
    assert result.skipped_rows == 24 and result.train_rows + result.holdout_rows == 216
    assert result.estimator.n_seen == 3 * result.train_rows
    assert result.estimator.classes_ == [0, 1]
    assert set(result.estimator.predict(frame[FEATURES]).tolist()) <= {0, 1}
    assert result.metrics["accuracy"] > 0.6


def test_training_problems_are_named() -> None:
    frame = _frame("regression")
    cases = [
        (frame.drop(columns=["x1"]), "label", ["x1"]),
        (frame, "nope", ["nope"]),
        (frame.assign(label=None), "label", ["label"]),
    ]
    for data, target, fields in cases:
        with pytest.raises(InvalidInput) as info:
            training.train("linear_regression", {}, SCHEMA, data, target)
        assert [d["field"] for d in info.value.details] == fields
    text_labels = frame.assign(label=["a"] * len(frame))
    with pytest.raises(InvalidInput) as info:
        training.train("linear_regression", {}, SCHEMA, text_labels, "label")
    assert info.value.details[0] == {
        "row": 0,
        "field": "label",
        "reason": "expected a finite number",
    }
    with pytest.raises(InvalidInput) as info:
        training.train("logistic_regression", {}, SCHEMA, frame.assign(label="x"), "label")
    assert "two classes" in info.value.details[0]["reason"]
    with pytest.raises(InvalidInput) as info:
        labels = _frame("classification")
        training.train("logistic_regression", {}, SCHEMA, labels, "label", classes=["no", "maybe"])
    assert (
        info.value.details[0]["field"] == "label"
        and "unknown class" in info.value.details[0]["reason"]
    )


def test_evaluate_scores_given_rows_like_the_holdout() -> None:
    result = training.train(
        "logistic_regression", {}, SCHEMA, _frame("classification"), "label", holdout=0.3
    )
    again = training.evaluate(result.estimator, result.holdout, "label", "classification")
    assert again == result.metrics
    perfect = result.holdout.assign(label=result.estimator.predict(result.holdout[FEATURES]))
    scores = training.evaluate(result.estimator, perfect, "label", "classification")
    assert scores["accuracy"] == 1.0 and scores["f1"] == 1.0
    regression = training.train("linear_regression", {}, SCHEMA, _frame("regression"), "label")
    rows = regression.holdout.assign(
        label=regression.estimator.predict(regression.holdout[FEATURES]) + 2.0
    )
    scores = training.evaluate(regression.estimator, rows, "label", "regression")
    assert scores["mae"] == pytest.approx(2.0) and scores["rmse"] == pytest.approx(2.0)
    with pytest.raises(InvalidInput):
        training.evaluate(regression.estimator, rows, "label", "ranking")


# -- the online wrapper -------------------------------------------------------------------------


def _stream(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 2x + 1 for the first half, y = -2x + 1 for the second, noise 0.1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    slope = np.where(np.arange(n) < n // 2, 2.0, -2.0)
    return pd.DataFrame({"x": x}), slope * x + 1.0 + rng.normal(0.0, 0.1, size=n)


def test_online_linear_regression_tracks_a_slope_that_changes() -> None:
    """Prequential: each batch of 10 is predicted, then learned. Noise alone gives a mean
    absolute error of 0.08; a model stuck on the old slope errs by 4|x| (3.2 on average).
    Bounds: under 0.3 on the 100 points before the change and on the last 100 points; over 1.0
    on the first 100 after it; the model frozen at the change stays over 2.0 at the end."""
    schema = parse_schema({"fields": [{"name": "x", "type": "number"}]})
    X, y = _stream(2000, seed=1)
    model = algorithms.build_estimator("online_linear_regression", {}, schema)
    frozen: OnlineModel | None = None
    error = np.zeros(len(y))
    frozen_error = np.zeros(len(y))
    for start in range(0, len(y), 10):
        batch, labels = X.iloc[start : start + 10], y[start : start + 10]
        if start:
            error[start : start + 10] = np.abs(model.predict(batch) - labels)
        if frozen is not None:
            frozen_error[start : start + 10] = np.abs(frozen.predict(batch) - labels)
        if start == 1000:
            frozen = pickle.loads(pickle.dumps(model))  # a snapshot, learning nothing more
        model.learn(batch, labels)
    before, right_after, end = error[900:1000], error[1000:1100], error[1900:]
    assert before.mean() < 0.3, before.mean()
    assert right_after.mean() > 1.0, right_after.mean()
    assert end.mean() < 0.3, end.mean()
    assert frozen_error[1900:].mean() > 2.0, frozen_error[1900:].mean()
    assert model.params()["coef"][0]["x"] < 0 < frozen.params()["coef"][0]["x"]  # type: ignore[union-attr]


def test_invscaling_follows_the_change_much_more_slowly() -> None:
    """The reason 'constant' is the default: the decaying step is still far off at the end."""
    schema = parse_schema({"fields": [{"name": "x", "type": "number"}]})
    X, y = _stream(2000, seed=1)
    model = algorithms.build_estimator(
        "online_linear_regression", {"learning_rate": "invscaling"}, schema
    )
    for start in range(0, 1990, 10):
        model.learn(X.iloc[start : start + 10], y[start : start + 10])
    assert np.abs(model.predict(X.iloc[1900:]) - y[1900:]).mean() > 0.3


def _online_classifier() -> tuple[OnlineModel, pd.DataFrame, list[str]]:
    frame = _frame("classification", n=60)
    model = algorithms.build_estimator(
        "online_logistic_regression", {}, SCHEMA, classes=["no", "yes"], target="label"
    )
    assert isinstance(model, OnlineModel)
    return model, frame[FEATURES], frame["label"].tolist()


def test_online_model_does_not_mutate_its_inputs() -> None:
    model, X, labels = _online_classifier()
    X = X.assign(flag=pd.Series([True, None] * 30, dtype=object), segment=["a", None, "zzz"] * 20)
    y_list = list(labels)
    y_series = pd.Series(labels)
    y_array = np.array(labels, dtype=object)
    snapshot = (X.copy(deep=True), list(y_list), y_series.copy(), y_array.copy())
    model.learn(X, y_list)
    model.learn(X, y_series)
    model.learn(X, y_array)
    model.predict(X)
    model.predict_proba(X)
    pd.testing.assert_frame_equal(X, snapshot[0])
    assert y_list == snapshot[1]
    pd.testing.assert_series_equal(y_series, snapshot[2])
    np.testing.assert_array_equal(y_array, snapshot[3])


def test_online_classifier_knows_its_classes_from_the_start() -> None:
    model, X, labels = _online_classifier()
    assert not model.ready() and model.n_seen == 0
    with pytest.raises(ModelNotReady):
        model.predict(X)
    only_no = [i for i, v in enumerate(labels) if v == "no"][:5]
    model.learn(X.iloc[only_no], [labels[i] for i in only_no])
    assert model.n_seen == 5 and model.ready(5) and not model.ready(6)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and model.classes_ == ["no", "yes"]
    before = model.predict_proba(X)
    model.learn(X, labels)
    assert not np.array_equal(before, model.predict_proba(X))  # learning changes the model
    params = model.params()
    json.dumps(params)
    assert params["n_seen"] == 65 and params["classes"] == ["no", "yes"]
    assert set(params["scaling"]) == {"x0", "x1", "x2", "count", "flag"}
    assert "segment=a" in params["coef"][0]


def test_online_learning_refuses_bad_labels_by_row() -> None:
    model, X, _ = _online_classifier()
    with pytest.raises(InvalidInput) as info:
        model.learn(X.head(3), ["no", "maybe", "yes"])
    assert info.value.details == [
        {"row": 1, "field": "label", "reason": "unknown class; classes: 'no', 'yes'"}
    ]
    with pytest.raises(InvalidInput):
        model.learn(X.head(3), ["no"])
    with pytest.raises(InvalidInput) as info:
        model.learn(X.drop(columns=["segment"]).head(2), ["no", "yes"])
    assert info.value.details == [{"field": "segment", "reason": "missing"}]
    assert model.n_seen == 0 and not hasattr(model.scaler, "mean_")  # nothing half learned
    schema = parse_schema({"fields": [{"name": "x", "type": "number"}]})
    with pytest.raises(InvalidInput) as info:
        algorithms.build_estimator("online_logistic_regression", {}, schema)
    assert info.value.details[0]["field"] == "classes"


def test_true_and_1_are_one_class() -> None:
    schema = parse_schema({"fields": [{"name": "x", "type": "number"}]})
    model = algorithms.build_estimator("online_logistic_regression", {}, schema, classes=[0, 1])
    X = pd.DataFrame({"x": [-2.0, -1.0, 1.0, 2.0]})
    model.learn(X, [False, "0", True, 1.0])
    assert model.n_seen == 4
    assert set(model.predict(X).tolist()) <= {0, 1}


def test_an_online_snapshot_keeps_learning_independently() -> None:
    model, X, labels = _online_classifier()
    model.learn(X, labels)
    snapshot = joblib.load(io.BytesIO(_joblib_bytes(model)))
    np.testing.assert_array_equal(snapshot.predict_proba(X), model.predict_proba(X))
    model.learn(X, labels)
    assert snapshot.n_seen == 60 and model.n_seen == 120
    assert not np.array_equal(snapshot.predict_proba(X), model.predict_proba(X))
