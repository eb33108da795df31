"""A ``modelport serve`` process for the benchmarks: its store, admin key, command and health.

Shared by ``bench/compare.py`` (which runs the server from ``bench/.venvs/modelport``) and by
``bench/serve_bench.py`` and ``bench/load_check.py`` (which run it with their own Python). The
server listens on 127.0.0.1 only, runs pinned to the server CPU in its own session (so its whole
process group can be stopped) and is stopped when the block that started it ends.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import procs

HEALTH = "/v1/health"
#: One row of the quickstart iris model (``modelport.cli.quickstart.train_demo``).
IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


_ADMIN_KEY = """
import os
import sys
from pathlib import Path
from modelport.registry.keys import create_key
from modelport.store import Store

home = Path(sys.argv[1])
home.mkdir(parents=True, exist_ok=True)
st = Store(os.environ.get("MODELPORT_STORE") or f"sqlite:///{home / 'modelport.db'}")
try:
    with st.transaction() as conn:
        key, _ = create_key(conn, "bench", ["admin"])
finally:
    st.close()
print(key)
"""


def admin_key(home: Path, python: str = sys.executable) -> str:
    """A new admin key in the SQLite store of ``home`` (created, and migrated, when missing),
    or in the store MODELPORT_STORE names, which ``modelport serve`` then serves too (a
    PostgreSQL schema of its own per run, say); made by ``python``: the server's own
    environment, so the store is migrated by the version of modelport that will serve it."""
    done = subprocess.run(
        [python, "-c", _ADMIN_KEY, str(home)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"admin key: {done.stderr.strip()[-400:]}")
    return done.stdout.strip().splitlines()[-1]


def command(
    python: str, home: Path, port: int, extra: Sequence[str] = (), wrap: Sequence[str] = ()
) -> list[str]:
    """``modelport serve`` on ``home``, loopback only, warnings only, then ``extra`` flags;
    ``wrap`` goes between the Python and ``-m`` (a script that runs the module, e.g. a probe)."""
    return [
        python,
        *wrap,
        "-m",
        "modelport.cli",
        "serve",
        "--home",
        str(home),
        *procs.loopback_flags(port),
        *extra,
    ]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait for ``GET /v1/health`` 200; RuntimeError if the server exits or time runs out."""
    procs.wait_for_200(proc, lambda: httpx.get(url + HEALTH, timeout=1), deadline)


@dataclass
class Server:
    url: str
    key: str
    proc: subprocess.Popen[bytes]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.contextmanager
def serving(
    home: Path,
    extra: Sequence[str] = (),
    *,
    python: str = sys.executable,
    log: Path | None = None,
    wrap: Sequence[str] = (),
    startup_timeout: float = 60.0,
    stop_timeout: float = 60.0,
) -> Iterator[Server]:
    """An admin key in a fresh store at ``home`` and ``modelport serve`` on it, healthy.

    The server's process group is stopped (SIGTERM, then SIGKILL after ``stop_timeout``) when the
    block ends, also on errors; its exit status is ``server.proc.returncode`` afterwards.
    """
    key = admin_key(home, python)
    port = procs.free_port()
    out = log.open("wb") if log is not None else None
    try:
        proc = subprocess.Popen(
            [*procs.pin(procs.SERVER_CPU), *command(python, home, port, extra, wrap)],
            stdin=subprocess.DEVNULL,
            stdout=out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()
    try:
        server = Server(f"http://127.0.0.1:{port}", key, proc)
        wait_healthy(server.url, proc, time.monotonic() + startup_timeout)
        yield server
    finally:
        procs.stop(proc, timeout=stop_timeout)


def push_demo(server: Server) -> Any:
    """Push the quickstart iris pipeline as ``iris`` (alias production); the fitted model."""
    from modelport import Client
    from modelport.cli.quickstart import train_demo

    model, data = train_demo()
    with Client(server.url, server.key) as mp:
        mp.push("iris", model, train_data=data, target="species", alias="production")
    return model
