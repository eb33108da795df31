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


class Constant(Model):
    """A classifier that always answers ``label`` (it has no probabilities)."""

    task = "classification"

    def __init__(self, label: str, *, fail_above: float | None = None, sleep_ms: float = 0) -> None:
        self.label = label
        self.fail_above = fail_above
        self.sleep_ms = sleep_ms

    def predict(self, X: pd.DataFrame) -> list[str]:
        import time

        if self.fail_above is not None and (X["x"] > self.fail_above).any():
            raise RuntimeError("candidate broke")
        if self.sleep_ms:
            time.sleep(self.sleep_ms / 1000)
        return [self.label] * len(X)


class Doubler(Model):
    """Regression on the renamed schema: zip_code and income -> income * 2 (+ zip_code * 0)."""

    task = "regression"

    def predict(self, X: pd.DataFrame) -> list[float]:
        return [float(v) * 2 for v in X["income"]]


class Sleeper(Model):
    """Regression: 2x, but sleeps ``seconds`` on rows with x above ``above``: a model that hangs."""

    task = "regression"

    def __init__(self, seconds: float, above: float = 100.0) -> None:
        self.seconds = seconds
        self.above = above

    def predict(self, X: pd.DataFrame) -> list[float]:
        import time

        if (X["x"] > self.above).any():
            time.sleep(self.seconds)
        return [float(v) * 2 for v in X["x"]]


class Napper(Model):
    """Regression: 2x, sleeping as many seconds as its largest input: a model that hangs on
    demand (x=0, the smoke test's row, does not sleep)."""

    task = "regression"

    def predict(self, X: pd.DataFrame) -> list[float]:
        import time

        time.sleep(max(0.0, float(X["x"].max())))
        return [float(v) * 2 for v in X["x"]]


class Leaker(Model):
    """Regression: 2x, keeping ``mb`` megabytes more on every call: a model that leaks."""

    task = "regression"

    def __init__(self, mb: int) -> None:
        self.mb = mb
        self.kept: list[bytearray] = []

    def predict(self, X: pd.DataFrame) -> list[float]:
        block = bytearray(self.mb * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
        self.kept.append(block)
        return [float(v) * 2 for v in X["x"]]
