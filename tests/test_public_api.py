"""The public surface of the package is pinned."""

from __future__ import annotations

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
