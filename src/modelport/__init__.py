"""modelport: serve, version, log and learn.

The public surface: :class:`Client` (talk to a server), :class:`Model` (base class for custom
model code), :class:`ModelportError` (root of every error), and ``errors`` for the rest.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import errors  # noqa: E402
from .client import Client  # noqa: E402
from .errors import ModelportError  # noqa: E402
from .model import Model  # noqa: E402

__all__ = ["Client", "Model", "ModelportError", "__version__", "errors"]
