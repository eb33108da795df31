"""Artifacts pickled before the modules moved into packages still load and predict.

The pickles are made here under the old module path: the module's classes and functions are
registered as ``modelport._online`` while they are dumped, as they were when that module
existed, and unregistered again before the artifact is loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from modelport import flavors
from modelport.inputs.schema import parse_schema
from modelport.learning import algorithms, online

OLD = "modelport._online"
SCHEMA = parse_schema(
    {
        "fields": [
            {"name": "x", "type": "number"},
            {"name": "colour", "type": "category", "categories": ["red", "blue"]},
        ]
    }
)


def _frame(n: int = 80) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    X = pd.DataFrame({"x": x, "colour": ["red", "blue"] * (n // 2)})
    return X, ["yes" if v > 0 else "no" for v in x]


def _pickled_under_the_old_path(obj: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setitem(sys.modules, OLD, online)
        for value in vars(online).values():
            if getattr(value, "__module__", None) == online.__name__:
                m.setattr(value, "__module__", OLD)
        joblib.dump(obj, path)
    data = path.read_bytes()
    assert OLD.encode() in data and online.__name__.encode() not in data


@pytest.mark.parametrize("algorithm", ["online_logistic_regression", "logistic_regression"])
def test_a_model_pickled_under_the_old_module_path_loads_and_predicts(
    algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, labels = _frame()
    model = algorithms.build_estimator(algorithm, {}, SCHEMA, classes=["no", "yes"], target="y")
    if isinstance(model, online.OnlineModel):  # the learner's snapshots
        model.learn(X, labels)
    else:  # a retrain's pipeline: its features are online.py's functions, by reference
        model.fit(X, labels)
    expected = model.predict(X)
    artifact = tmp_path / "model.joblib"
    _pickled_under_the_old_path(model, artifact, monkeypatch)

    monkeypatch.delitem(sys.modules, OLD, raising=False)
    loaded = flavors.load("pickle", artifact, trust_code=True)
    assert type(loaded.obj).__module__ != OLD
    assert list(loaded.obj.predict(X)) == list(expected)
