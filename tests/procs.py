"""Real ``modelport`` processes for tests: start on a free loopback port, wait, always stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.conftest import free_port


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess, without settings leaking in from the outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``modelport ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        timeout=timeout,
    )


class ServerProcess:
    """``modelport serve`` in a subprocess."""

    def __init__(
        self,
        home: Path,
        store: str,
        port: int | None = None,
        args: Sequence[str] = (),
        *,
        grpc: bool = False,
    ) -> None:
        self.home = home
        self.store = store
        self.args = list(args)  # more settings flags, e.g. ["--artifacts", "s3://..."]
        self._chosen = port is None  # a port of our choosing may be moved if taken meanwhile
        self.port = port or free_port()
        # With ``grpc``, a gRPC port of our choosing too, moved likewise if taken meanwhile.
        self.grpc_port = free_port() if grpc else None
        self.env: dict[str, str] = {}  # more environment variables for the process
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.home.parent / f"server-{self.port}.log"  # every start appends

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text() if self.log.exists() else ""

    def start(self, timeout: float = 60, attempt: int = 1) -> ServerProcess:
        log = self.log.open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelport.cli",
                "serve",
                "--port",
                str(self.port),
                "--home",
                str(self.home),
                "--store",
                self.store,
                "--log-level",
                "warning",
                *self.args,
                *(["--grpc-port", str(self.grpc_port)] if self.grpc_port is not None else []),
            ],
            env=cli_env(**self.env),
            # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()  # the server has its own copy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.output()
                if self._chosen and attempt < 3 and "already in use" in output[-2000:]:
                    # Another test's server took the port after free_port() chose it.
                    self.port = free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
                    self.log = self.home.parent / f"server-{self.port}.log"
                    return self.start(timeout, attempt + 1)
                if (
                    self.grpc_port is not None
                    and attempt < 3
                    and "listen for gRPC" in output[-2000:]
                ):
                    self.grpc_port = free_port()  # another test's server took it meanwhile
                    return self.start(timeout, attempt + 1)
                raise RuntimeError(f"server exited: {output[-5000:]}")
            try:
                health = httpx.get(f"{self.url}/v1/health", timeout=1)
                if health.status_code == 200 and self._ours(health.json().get("pid")):
                    return self
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("server did not become healthy in time")

    def _ours(self, pid: object) -> bool:
        """Whether the process that answered is this server (or one of its workers): another
        test's server may have taken the port between ``free_port`` and this one's bind, and
        would answer the health check for it."""
        assert self.proc is not None
        if pid == self.proc.pid:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, TypeError):
            return False
        return int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid  # its parent

    def signal(self, sig: int) -> int:
        """Send a signal and wait for the exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
