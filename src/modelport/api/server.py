"""Running the server: uvicorn over :func:`~modelport.api.app.create_app`.

uvicorn handles SIGINT and SIGTERM: it stops accepting connections, lets in-flight requests
finish, then runs the lifespan shutdown, which commits everything the writer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HTTPProtocol
else:  # httptools when installed, h11 otherwise
    from uvicorn.protocols.http.auto import AutoHTTPProtocol as _HTTPProtocol

from ..errors import InvalidRequest
from ..settings import Settings
from ..store.retention import start_check

log = logging.getLogger("modelport.server")


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve without keys beyond loopback unless forced; warn when forced."""
    if settings.no_auth and not is_loopback(settings.host):
        if not settings.force_no_auth:
            raise InvalidRequest(
                f"refusing --no-auth on {settings.host}, which is not a loopback address: anyone "
                "who can reach it could change the registry. Use API keys, or add "
                "--force-no-auth if you really mean it."
            )
        print(
            f"WARNING: serving WITHOUT authentication on {settings.host}: anyone who can reach "
            "this address can push models and read predictions.",
            file=sys.stderr,
        )


def check_port(settings: Settings) -> None:
    """Refuse, naming the port and the flag, when the address is taken (uvicorn would only
    log its ``[Errno 98]`` and exit) or when workers are to share a gRPC port left to chance."""
    if settings.grpc_port == 0 and settings.workers > 1:
        raise InvalidRequest(
            "--grpc-port 0 would give each of the --workers its own port: choose one port "
            "for them to share"
        )
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((settings.host.strip("[]"), settings.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidRequest(
                    f"port {settings.port} on {settings.host} is already in use (another "
                    "modelport or another program listens there): stop it, or choose another "
                    "port with --port"
                ) from None
            raise InvalidRequest(
                f"cannot listen on {settings.host} port {settings.port}: {exc.strerror} "
                "(see --host and --port)"
            ) from None


class ConnectionCount:
    """How many connections this process's HTTP server holds open: uvicorn's own set of
    them, which every connection's protocol shares and keeps (a websocket upgrade moves a
    connection to another protocol of the same set). The engine reads it to tell a request
    that is all the server has (``inline_when_alone``)."""

    def __init__(self) -> None:
        self._open: set[Any] = set()

    def watch(self, connections: set[Any]) -> None:
        self._open = connections

    def __call__(self) -> int:
        return len(self._open)


#: The count of this process's server (one per process: ``--workers N`` runs N processes).
OPEN_CONNECTIONS = ConnectionCount()


class HeaderTimeoutProtocol(_HTTPProtocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers take longer
    than ``header_timeout_seconds`` to arrive.

    uvicorn times out idle keep-alive connections only: one that connects, or sends its
    headers a byte at a time, stays open for as long as the client likes (hundreds of them
    hold that many sockets and protocol objects). The clock starts when the connection opens
    and again at the first byte of each later request, and stops when the request's headers
    are in; the body has its own timeout (``body_timeout_seconds``, in the app).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        OPEN_CONNECTIONS.watch(self.connections)
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._start_header_clock()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_headers():
            self._stop_header_clock()
        elif self._header_timer is None:
            self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        # A request whose headers are in has its cycle until the answer is complete.
        return self.cycle is None or self.cycle.response_complete

    def _start_header_clock(self) -> None:
        seconds = getattr(self.config, "header_timeout_seconds", None)
        if seconds is not None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(seconds, self._header_timeout)

    def _stop_header_clock(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self.transport.close()


class _Config(uvicorn.Config):
    """uvicorn's configuration with the header timeout its protocol reads (a subclass, so
    that it reaches worker processes with the rest of the configuration)."""

    def __init__(self, app: Any, *, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(app, http=HeaderTimeoutProtocol, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds


def _config(settings: Settings, app: Any, **extra: Any) -> uvicorn.Config:
    """The uvicorn configuration both ways of serving share."""
    return _Config(
        app,
        header_timeout_seconds=settings.header_timeout_seconds,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
        lifespan="on",
        **extra,
    )


def _serve_workers(settings: Settings, on_ready: Callable[[Settings], None] | None) -> None:
    """N processes on one socket (uvicorn's supervisor restarts a worker that dies); their
    metrics go to one directory, so a scrape of any worker answers for all."""
    from ..monitoring.metrics import MULTIPROC_ENV, prepare_multiprocess

    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    metrics_dir = prepare_multiprocess(settings.home / "run")
    config = _config(
        settings, "modelport.api.server:worker_app", factory=True, workers=settings.workers
    )
    sock = config.bind_socket()
    if on_ready is not None:
        on_ready(settings.model_copy(update={"port": sock.getsockname()[1]}))
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT/SIGTERM end it with exit status 0.

    uvicorn re-raises a captured signal after its graceful shutdown, which turns a clean
    Ctrl-C into a KeyboardInterrupt; a stop we asked for is not an error.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


#: How ``serve`` hands its settings to worker processes.
SETTINGS_ENV = "MODELPORT_WORKER_SETTINGS"


def worker_app() -> Any:
    """The app of one worker process (``--workers N``), from the parent's settings."""
    from .app import create_app

    tune_gc()
    settings = Settings(**orjson.loads(os.environ[SETTINGS_ENV]))
    return create_app(settings, freeze_after_start=True, connections=OPEN_CONNECTIONS)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a serving process.

    A 100-row request allocates thousands of short-lived containers; with the default
    thresholds the collector runs every few requests and now and then walks every object the
    libraries loaded (measured: p99 latency 180 ms -> 75 ms, throughput +25 % on 100-row
    requests). Objects alive after start-up are frozen out of collections (see create_app).
    """
    gc.set_threshold(50_000, 50, 100)


def serve(settings: Settings, *, on_ready: Callable[[Settings], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM. ``on_ready`` is called once the server listens, with
    the settings as bound: the ports the system chose where ``port`` or ``grpc_port`` is 0."""
    from .app import create_app

    check_exposure(settings)
    check_port(settings)
    start_check(settings)  # a retention that could not archive: one clear line, no traceback
    if settings.workers > 1:
        _serve_workers(settings, on_ready)
        return
    tune_gc()
    app = create_app(settings, freeze_after_start=True, connections=OPEN_CONNECTIONS)
    config = _config(settings, app)
    server = _Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original(sockets=sockets)
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                on_ready(
                    settings.model_copy(update={"port": port, "grpc_port": app.state.grpc_port})
                )

        server.startup = startup  # type: ignore[method-assign]
    server.run()
    if not server.started:
        raise SystemExit(1)
