"""The public surface of the package is pinned."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import modelport

PUBLIC = ["Client", "Model", "ModelportError", "__version__", "errors"]


def test_all_is_sorted_and_pinned() -> None:
    assert modelport.__all__ == sorted(modelport.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(modelport, name) is not None


def test_every_error_code_is_unique() -> None:
    from modelport.client import _error_classes

    classes = _error_classes()
    codes = [cls.code for cls in classes.values()]
    assert len(codes) == len(set(codes))
    assert {"invalid_input", "model_not_found", "no_version_behind_alias"} <= set(classes)


def test_every_error_class_lives_in_errors_under_one_root() -> None:
    import importlib
    import inspect
    import pkgutil

    from modelport import errors

    defined_elsewhere = []
    for info in pkgutil.walk_packages(modelport.__path__, "modelport."):
        if info.name.split(".")[-1] in ("spark", "__main__") or "migrations" in info.name:
            continue  # needs pyspark's JVM / runs a command / Alembic scripts
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            public = issubclass(cls, errors.ModelportError) or cls.__name__.endswith("Error")
            if public and cls.__module__ == info.name and info.name != "modelport.errors":
                defined_elsewhere.append(f"{info.name}.{cls.__name__}")
    assert not defined_elsewhere


def test_a_fresh_client_process_knows_every_error_code(server: Any) -> None:
    code = (
        "import sys\n"
        "from modelport import Client, errors\n"
        "c = Client(sys.argv[1], sys.argv[2])\n"
        "for call in (lambda: c.job(987654), lambda: c._call('GET', '/v1/datasets/nope')):\n"
        "    try:\n"
        "        call()\n"
        "    except errors.ModelportError as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, server.url, server.admin_key],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["JobNotFound", "DatasetNotFound"], done.stderr
