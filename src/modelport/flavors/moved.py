"""Old module paths that stored artifacts may name, and the modules that answer for them now.

A pickle names each class and function by module and name. Models learned online (and the
batch pipelines of the built-in algorithms) were pickled while their code lived at
``modelport._online`` and ``modelport.algorithms``; those modules are now
:mod:`modelport.learning.online` and :mod:`modelport.learning.algorithms`. Before a pickle
is read, :func:`alias_moved_modules` teaches the import system the old names: importing one
gives the module that holds the code today, so artifacts in existing stores still load.
An old name is resolved only when an artifact names it: importing all of them up front would
load pandas and the training code into every serving process.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: Old module path -> where its code lives now (only modules whose objects get pickled).
MOVED = {
    "modelport._online": "modelport.learning.online",
    "modelport.algorithms": "modelport.learning.algorithms",
    "modelport._expressions": "modelport.inputs.expressions",
    "modelport.schema": "modelport.inputs.schema",
    "modelport.table": "modelport.inputs.table",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the module of today (the same
    module object, so classes pickled under either name are one class)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        pass  # the module of today has run already


_FINDER = _MovedFinder()


def alias_moved_modules() -> None:
    """Make every old path in :data:`MOVED` import as its module of today, when asked for."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
