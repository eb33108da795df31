"""Small custom models the API tests push (importable, so cloudpickle stores them by value)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from modelport import Model


class FailsOnNegative(Model):
    """Predicts 2x, raises on a negative input: a model that fails on valid input."""

    task = "regression"

    def predict(self, X: pd.DataFrame) -> list[float]:
        if (X["x"] < 0).any():
            raise ValueError("negative input")
        return [float(v) * 2 for v in X["x"]]


class AlwaysFails(Model):
    """Fails every prediction, so its push fails the smoke test."""

    def predict(self, X: pd.DataFrame) -> Any:
        raise RuntimeError("broken model")
