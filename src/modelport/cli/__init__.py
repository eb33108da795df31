"""The ``modelport`` command line: the root group and server commands (``main``), the client commands of each area (batch, learning, monitoring, releases, streams) and ``quickstart``. Run it as ``modelport`` or ``python -m modelport.cli``.

``main`` is importable from here too, as before the package existed: ``modelport.cli:main``
is the entry point that installed ``modelport`` scripts name.
"""

from .main import main

__all__ = ["main"]
