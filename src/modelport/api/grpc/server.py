"""The gRPC server: a ``grpc.aio`` server on the REST server's event loop.

It shares the loop, and so the service, its batchers and its writer, with the REST server of
the same process; the app's lifespan starts it after the service and stops it before. Stopping
refuses new calls and gives the ones in flight ``GRACE_SECONDS`` to finish (as uvicorn gives
HTTP requests), then the service commits what they wrote.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from ...errors import InvalidRequest
from .servicer import Servicer

if TYPE_CHECKING:
    from ...service.core import Service
    from ...settings import Settings

log = logging.getLogger("modelport.server")

#: How long calls in flight may take to finish once the server stops (uvicorn's is the same).
GRACE_SECONDS = 30.0


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC reads it (an IPv6 address in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class GrpcServer:
    """The Open Inference Protocol over gRPC, for one service."""

    def __init__(self, service: Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Listen on the host setting and ``grpc_port``; the port bound."""
        settings = self.settings
        assert settings.grpc_port is not None
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                # Workers of one server share the port (the kernel spreads connections over
                # them); a lone server must not share it with anything else.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ]
        )
        server.add_generic_rpc_handlers((Servicer(self.service).handler(),))
        where = address(settings.host, settings.grpc_port)
        try:
            port = int(server.add_insecure_port(where))
        except RuntimeError as exc:
            raise InvalidRequest(f"cannot listen for gRPC on {where}: {exc}") from None
        await server.start()
        self._server, self.port = server, port
        log.info("gRPC (Open Inference Protocol) on %s", address(settings.host, port))
        return port

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Refuse new calls, let those in flight finish (up to ``grace`` seconds)."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
