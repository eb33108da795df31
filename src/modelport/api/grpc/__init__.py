"""The Open Inference Protocol V2 over gRPC (``serve --grpc-port``), beside REST ``/v2``.

grpc_predict_v2.proto: the protocol's definition (field numbers as published);
grpc_predict_v2_pb2*.py: generated from it by scripts/gen_grpc (messages, a client stub);
tensors.py: messages <-> the protocol's plain data in :mod:`modelport.api.oip`;
servicer.py: the RPCs (keys from metadata, errors as status codes, metrics) and ``score``,
the one call into the service; server.py: the ``grpc.aio`` server and its shutdown.

This module imports no gRPC library itself: grpcio is an extra (``modelport[grpc]``), needed
only when ``grpc_port`` is set.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ...errors import InvalidRequest

if TYPE_CHECKING:
    from ...service.core import Service
    from ...settings import Settings


@contextlib.asynccontextmanager
async def serving(service: Service, settings: Settings) -> AsyncIterator[int | None]:
    """Serve gRPC for the duration of the block when ``grpc_port`` is set (else nothing);
    yields the port bound (the one the system chose for ``grpc_port`` 0), or None."""
    if settings.grpc_port is None:
        yield None
        return
    try:
        from .server import GrpcServer
    except ImportError as exc:
        raise InvalidRequest(
            f"grpc_port needs the grpc extra (pip install 'modelport[grpc]'): {exc}"
        ) from None
    server = GrpcServer(service, settings)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop()
