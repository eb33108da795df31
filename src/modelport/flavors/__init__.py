"""Flavors: how an artifact is recognized, loaded and called.

Every flavor produces a :class:`LoadedModel`, the one contract serving relies on. The flavors:

============== ============================================= ============================
flavor          artifact                                      loading runs code?
============== ============================================= ============================
``sklearn``     a scikit-learn estimator saved with skops     no (types are checked)
``pickle``      a joblib or pickle file of an estimator or    yes: admin keys only
                any object with ``predict`` (cloudpickle)
``mlflow``      a zip of an MLflow model directory            yes: admin keys only
                (``MLmodel`` with sklearn or python_function)
============== ============================================= ============================

A :class:`modelport.Model` subclass is saved with cloudpickle and is a ``pickle`` artifact.
"""

from __future__ import annotations

from ._base import (
    FLAVORS,
    SAFE_FLAVORS,
    LoadedModel,
    describe_object,
    detect_flavor,
    import_libraries,
    libraries_for,
    load,
    serialize,
)

__all__ = [
    "FLAVORS",
    "SAFE_FLAVORS",
    "LoadedModel",
    "describe_object",
    "detect_flavor",
    "import_libraries",
    "libraries_for",
    "load",
    "serialize",
]
