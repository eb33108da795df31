"""The native REST API under ``/v1``: thin handlers over :class:`~modelport.service.core.Service`,
one module per part of the API, each with its ``router``; ``ROUTERS`` lists them in the order
the app includes them."""

from __future__ import annotations

from . import keys, learning, monitoring, predictions, registry, releases, service

ROUTERS = tuple(
    part.router for part in (service, predictions, registry, learning, releases, monitoring, keys)
)
