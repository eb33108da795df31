"""The base class for custom model code: subclass it, push the instance.

Instances are saved with cloudpickle, so the class travels with the artifact; like every
pickle-based format, loading one runs code, and only admin keys may push it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class Model:
    """A model with custom code.

    ``predict`` receives a pandas DataFrame whose columns are the schema's fields in order and
    returns one prediction per row. Optional: ``predict_proba`` (one row of class probabilities
    per input row, columns in the order of ``classes_``), ``learn(X, y)`` for online models,
    and ``params()`` describing what the model learned. Inputs must not be mutated.
    """

    #: Class labels, in the column order of ``predict_proba``; set it for classifiers.
    classes_: Sequence[Any] | None = None
    #: "classification", "regression" or "other"; used when the model is first created.
    task: str = "other"

    def predict(self, X: pd.DataFrame) -> Sequence[Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement predict(X)")

    def params(self) -> dict[str, Any]:
        """A JSON-ready summary of what the model learned (recorded in the version's lineage)."""
        return {}
