"""modelport: serve, version, log and learn.

The public surface: :class:`Client` (talk to a server), :class:`Model` (base class for custom
model code), :class:`ModelportError` (root of every error), and ``errors`` for the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from . import errors
from .errors import ModelportError
from .model import Model

if TYPE_CHECKING:
    from .client import Client


def __getattr__(name: str) -> Any:
    # The client (and httpx under it) loads on first use: a server process never needs it.
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")


__all__ = ["Client", "Model", "ModelportError", "__version__", "errors"]
