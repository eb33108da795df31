"""Old module paths that stored artifacts may name, and the modules that answer for them now.

A pickle names each class and function by module and name. Models learned online (and the
batch pipelines of the built-in algorithms) were pickled while their code lived at
``modelport._online`` and ``modelport.algorithms``; those modules are now
:mod:`modelport.learning.online` and :mod:`modelport.learning.algorithms`. Before a pickle
is read, :func:`alias_moved_modules` registers each old name in ``sys.modules`` as the module
that holds the code today, so artifacts in existing stores still load.
"""

from __future__ import annotations

import importlib
import sys

#: Old module path -> where its code lives now (only modules whose objects get pickled).
MOVED = {
    "modelport._online": "modelport.learning.online",
    "modelport.algorithms": "modelport.learning.algorithms",
    "modelport._expressions": "modelport.inputs.expressions",
    "modelport.schema": "modelport.inputs.schema",
    "modelport.table": "modelport.inputs.table",
}


def alias_moved_modules() -> None:
    """Make every old path in :data:`MOVED` import as its module of today."""
    for old, new in MOVED.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
