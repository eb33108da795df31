"""modelport: serve, version, log and learn.

The public surface: :class:`Client` (talk to a server), :class:`Model` (base class for custom
model code), :class:`ModelportError` (root of every error), and ``errors`` for the rest.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import errors
from .client import Client
from .errors import ModelportError
from .model import Model

__all__ = ["Client", "Model", "ModelportError", "__version__", "errors"]
