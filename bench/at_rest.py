"""Memory of a ``modelport serve`` process at rest, and which optional packages it loaded.

Starts ``modelport serve`` (the interpreter running this script, so the venv under test) on a
free loopback port with a fresh home folder, waits until it is healthy and has answered a
prediction of the quickstart model, then reads its resident memory from /proc and asks it,
through ``/proc/PID/maps``, whether pyarrow's shared libraries were loaded. Used to decide
what the core install may carry (issue 16: pyarrow for the learning loop).

    python bench/at_rest.py
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def loaded(pid: int, needle: str) -> bool:
    return needle in Path(f"/proc/{pid}/maps").read_text()


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelport.cli", "quickstart", "--port", str(port)],
            env={**os.environ, "MODELPORT_HOME": home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            key = (Path(home) / "quickstart-admin-key").read_text().strip()
            row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
            r = httpx.post(
                f"{url}/v1/models/iris/predict",
                json={"inputs": [row]},
                headers={"Authorization": f"Bearer {key}"},
            )
            r.raise_for_status()
            time.sleep(1)
            print(
                f"{time.strftime('%Y-%m-%d')} python {platform.python_version()} "
                f"pyarrow {version('pyarrow')} pandas {version('pandas')}: "
                f"serve at rest after one prediction: RSS {rss_mb(proc.pid):.0f} MB, "
                f"pyarrow loaded: {loaded(proc.pid, 'libarrow')}"
            )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
