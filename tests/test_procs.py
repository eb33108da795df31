"""The test harness's server processes and ports: a port taken after it was chosen is not
mistaken for the server (the failure CI once saw as a push refused with "unknown or revoked API
key"), and no port is handed out twice (CI once saw a server's HTTP and gRPC ports collide)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.procs import ServerProcess


class _Impostor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "pid": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_whose_port_was_taken_moves_to_another_and_answers_itself(
    tmp_path: Path, store_url: str
) -> None:
    impostor = HTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    try:
        taken = impostor.server_address[1]
        server = ServerProcess(tmp_path / "home", store_url)
        # As if free_port() had chosen it and another server had taken it since.
        server.port, server.url = taken, f"http://127.0.0.1:{taken}"
        server.log = tmp_path / f"server-{taken}.log"
        server.start()
        try:
            assert server.proc is not None
            assert server.port != taken
            assert httpx.get(f"{server.url}/v1/health").json()["pid"] == server.proc.pid
            assert "already in use" in (tmp_path / f"server-{taken}.log").read_text()
        finally:
            server.kill()
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_free_port_never_hands_out_a_port_twice() -> None:
    # The kernel gives a port just closed to a later bind(0) now and then (500 plain
    # choices here repeat one almost always): a server's HTTP and gRPC ports, chosen one after
    # the other, once came out the same in CI.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_server_whose_grpc_port_was_taken_moves_it_to_another(
    tmp_path: Path, store_url: str
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = ServerProcess(tmp_path / "home", store_url, grpc=True)
        server.grpc_port = taken  # as if another test's server had taken it since
        server.start()
        try:
            assert server.grpc_port not in (None, taken)
            assert f"cannot listen for gRPC on 127.0.0.1:{taken}" in server.output()
            with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10):
                pass  # the server listens there
        finally:
            server.kill()
