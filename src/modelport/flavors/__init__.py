"""Flavors: how an artifact is recognized, loaded and called.

Every flavor produces a :class:`LoadedModel`, the one contract serving relies on. The flavors:

============== ============================================= ============================
flavor          artifact                                      loading runs code?
============== ============================================= ============================
``sklearn``     a scikit-learn estimator saved with skops     no (types are checked)
``pickle``      a joblib or pickle file of an estimator or    yes: admin keys only (and
                any object with ``predict`` (cloudpickle)     not without keys, see below)
``mlflow``      a zip of an MLflow model directory            yes: admin keys only
                (``MLmodel`` with sklearn or python_function)
============== ============================================= ============================

A :class:`modelport.Model` subclass is saved with cloudpickle and is a ``pickle`` artifact.
A server without keys (``no_auth``) refuses what runs code unless
``dangerously_allow_code_without_auth`` is set: anyone who reaches it is an admin.
"""

from __future__ import annotations

from .base import (
    ADMIN_ONLY,
    FLAVORS,
    SAFE_FLAVORS,
    LoadedModel,
    Refusal,
    describe_object,
    detect_flavor,
    import_libraries,
    import_scikit_learn,
    libraries_for,
    load,
    serialize,
)

__all__ = [
    "ADMIN_ONLY",
    "FLAVORS",
    "SAFE_FLAVORS",
    "LoadedModel",
    "Refusal",
    "describe_object",
    "detect_flavor",
    "import_libraries",
    "import_scikit_learn",
    "libraries_for",
    "load",
    "serialize",
]
