"""MLflow model directories, read without MLflow installed.

The artifact is a zip of an MLflow model directory: an ``MLmodel`` YAML file (at the root or in
one top folder) naming its flavors. Two are served:

- ``sklearn`` (or a ``python_function`` flavor whose loader is ``mlflow.sklearn``): the
  pickled estimator in ``pickled_model`` (cloudpickle or pickle);
- ``python_function`` with a ``python_model`` file: a cloudpickled object with
  ``predict(context, model_input)`` or ``predict(model_input)``.

The signature's column inputs become the version's input schema. Pickles run code when loaded,
so only admin keys may push these artifacts.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ArtifactRejected
from ..inputs.schema import Field, FieldType, Schema
from .base import LoadedModel, _input_kind, _task_of

_COLUMN_TYPES: dict[str, FieldType] = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
}


def _reject(message: str) -> ArtifactRejected:
    return ArtifactRejected(message, details=[{"field": "artifact", "reason": message}])


def _extract(path: Path, into: Path) -> Path:
    """Unzip safely (no absolute paths, no ``..``); return the folder holding ``MLmodel``."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in info.filename:
                raise _reject(f"unsafe path in the MLflow zip: {info.filename!r}")
        zf.extractall(into)
    candidates = [p.parent for p in into.rglob("MLmodel") if len(p.relative_to(into).parts) <= 2]
    if len(candidates) != 1:
        raise _reject(
            "an MLflow model zip needs exactly one MLmodel file, at its root or in one top folder"
        )
    return candidates[0]


def read_mlmodel(root: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((root / "MLmodel").read_text())
    except yaml.YAMLError as exc:
        raise _reject(f"MLmodel is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise _reject("MLmodel has no 'flavors' section")
    return data


def signature_schema(mlmodel: dict[str, Any]) -> Schema | None:
    """The input schema from an MLmodel signature (None when absent or tensor-based)."""
    signature = mlmodel.get("signature") or {}
    raw = signature.get("inputs")
    if not raw:
        return None
    try:
        columns = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise _reject("the MLmodel signature inputs are not valid JSON") from None
    if not isinstance(columns, list) or not columns:
        return None
    if any(isinstance(c, dict) and c.get("type") == "tensor" for c in columns):
        return None
    fields = []
    for i, column in enumerate(columns):
        if not isinstance(column, dict):
            raise _reject(f"signature input {i} is not an object")
        name = column.get("name")
        kind = column.get("type")
        if not isinstance(name, str) or not name:
            raise _reject(f"signature input {i} has no name (unnamed columns are not supported)")
        if kind not in _COLUMN_TYPES:
            raise _reject(
                f"signature input {name!r} has type {kind!r}, which modelport cannot serve"
            )
        fields.append(Field(name, _COLUMN_TYPES[kind], required=bool(column.get("required", True))))
    return Schema(tuple(fields))


def _load_pickle(file: Path) -> Any:
    import cloudpickle

    if not file.is_file():
        raise _reject(f"the MLflow model lacks its model file {file.name!r}")
    try:
        with open(file, "rb") as fh:
            return cloudpickle.load(fh)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("mlflow"):
            raise _reject(
                "this python_function model was pickled with references to MLflow; install "
                "mlflow beside modelport to serve it"
            ) from None
        raise


class _PythonModel:
    """Adapts an MLflow-style python model to the ``predict(X)`` contract."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        try:
            params = list(inspect.signature(obj.predict).parameters)
        except (TypeError, ValueError):
            params = []
        self._with_context = "context" in params or len(params) >= 2

    def predict(self, X: Any) -> Any:
        if self._with_context:
            return self.obj.predict(None, X)
        return self.obj.predict(X)


def load_mlflow(path: Path) -> LoadedModel:
    """Load a zipped MLflow model directory."""
    tmp = Path(tempfile.mkdtemp(prefix="modelport-mlflow-"))
    try:
        root = _extract(path, tmp)
        mlmodel = read_mlmodel(root)
        schema = signature_schema(mlmodel)
        flavors = mlmodel["flavors"]
        pyfunc = flavors.get("python_function") or {}
        sk = flavors.get("sklearn")
        if sk is None and pyfunc.get("loader_module") == "mlflow.sklearn":
            sk = {"pickled_model": pyfunc.get("model_path") or pyfunc.get("data")}
        if sk is not None:
            if sk.get("serialization_format") == "skops":
                import skops.io as sio

                file = root / str(sk.get("pickled_model"))
                obj = sio.load(file, trusted=sio.get_untrusted_types(file=file))
            else:
                obj = _load_pickle(root / str(sk.get("pickled_model") or "model.pkl"))
            return LoadedModel(
                obj,
                "mlflow",
                input_kind=_input_kind(obj),
                task=_task_of(obj),
                extra={"schema": schema, "mlflow_flavor": "sklearn"},
            )
        if pyfunc.get("python_model"):
            obj = _load_pickle(root / str(pyfunc["python_model"]))
            if not callable(getattr(obj, "predict", None)):
                raise _reject("the python_model object has no predict method")
            return LoadedModel(
                _PythonModel(obj),
                "mlflow",
                input_kind="frame",
                task="other",
                extra={"schema": schema, "mlflow_flavor": "python_function"},
            )
        raise _reject(
            "the MLflow model has neither an sklearn flavor nor a python_function python_model; "
            f"its flavors: {', '.join(sorted(flavors))}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
