"""Virtual environments of their own for peer clients that pin what modelport's core does not.

KServe's Python client pins ``pandas<3`` (and kubernetes, grpcio, ...), so installing it beside
modelport would change the core's versions. Its tests run the client in a venv built from
``requirements/interop-<name>.txt`` (locked by ``scripts/lock``) with the machine's own pip, once
per lock and Python, cached under ``~/.cache/modelport-tests`` (or ``$MODELPORT_TEST_CACHE``),
and talk to a server from the main environment over loopback.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _cache() -> Path:
    configured = os.environ.get("MODELPORT_TEST_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelport-tests"


def client_python(name: str) -> Path:
    """The interpreter of the venv for ``requirements/interop-<name>.txt``, built if needed."""
    lock = ROOT / "requirements" / f"interop-{name}.txt"
    digest = hashlib.sha256(lock.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = _cache() / f"{name}-{digest}"
    python = venv / "bin" / "python"
    done = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (pytest-xdist workers may ask together); the others wait, then reuse.
    with (venv.parent / f"{name}.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            install = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "-r", str(lock)],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            if install.returncode != 0:
                raise RuntimeError(
                    f"could not build the {name} client venv at {venv}:\n{install.stderr[-4000:]}"
                )
            done.write_text(lock.name + "\n")
    return python


def run_client(name: str, script: str, *args: str) -> Any:
    """Run ``script`` (Python source) in the ``name`` client's venv; it prints one JSON value
    on its last line, which is returned."""
    done = subprocess.run(
        [str(client_python(name)), "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, f"{name} client failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])
