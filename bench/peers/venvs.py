"""One virtual environment per server under ``bench/.venvs/<name>``, installed from PyPI.

The peers get their packages from PyPI; ``modelport`` gets this repository, installed editable
with its core dependencies only (no extras), so the server runs with what a plain
``pip install modelport`` brings and nothing the benchmark's own Python happens to hold.
Every environment pins scikit-learn, numpy and joblib to the versions of the Python running the
benchmark, so one joblib file of a model loads the same everywhere. An environment is built when
it is missing, when its requirements changed (for ``modelport``: also when pyproject.toml did),
or when asked to (``force``); a marker file inside it holds what it was built from. Installs run
in the background, side by side, each bounded in time, and a failed one is reported by name
rather than raised.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .procs import stop

ROOT = Path(__file__).resolve().parent.parent / ".venvs"
REPO = Path(__file__).resolve().parents[2]  # the modelport checkout (pyproject.toml)
MARKER = "bench-requirements.json"
INSTALL_TIMEOUT = 1800.0  # seconds for one environment


def pinned() -> list[str]:
    """The libraries that must match the benchmark's own Python (model files, array types)."""
    return [f"{n}=={md.version(n)}" for n in ("scikit-learn", "numpy", "joblib")]


def commit_of(checkout: Path) -> str:
    """The commit a checkout is at (short form), or "unknown"."""
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def env_dir(name: str, repo: Path = REPO) -> Path:
    """Where an environment lives: modelport from another checkout gets a folder of its own, so
    comparing two commits does not rebuild one environment back and forth."""
    if not name.startswith("modelport") or repo == REPO:
        return ROOT / name
    return ROOT / f"{name}-{hashlib.sha256(str(repo).encode()).hexdigest()[:10]}"


def requirements(repo: Path = REPO) -> dict[str, list[str]]:
    """The ``pip install`` arguments of each environment, by environment name."""
    same = pinned()
    return {
        # The checkout, editable, core dependencies only: what `pip install modelport` brings.
        "modelport": ["-e", str(repo), *same],
        # The same with the grpc extra, for `serve --grpc-port`.
        "modelport-grpc": ["-e", f"{repo}[grpc]", *same],
        # The floor uses the same Starlette and uvicorn as modelport runs on.
        "floor": [
            f"starlette=={md.version('starlette')}",
            f"uvicorn[standard]=={md.version('uvicorn')}",
            *same,
        ],
        # MLServer 1.7.1's inference workers fail to start with uvloop 0.22 and later
        # (SeldonIO/MLServer#2286): keep the uvloop it was released against.
        "mlserver": ["mlserver", "mlserver-sklearn", "uvloop<0.22", *same],
        "mlflow": ["mlflow", *same],
        "bentoml": ["bentoml", *same],
    }


def marker(name: str, reqs: list[str], repo: Path = REPO) -> list[str]:
    """What an environment's marker file holds: its requirements, and for ``modelport`` the hash
    of pyproject.toml, whose dependencies an editable install does not follow on its own."""
    if not name.startswith("modelport"):
        return reqs
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()
    return [*reqs, f"pyproject.toml sha256:{digest}"]


@dataclass
class Env:
    name: str
    path: Path
    error: str | None = None

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def versions(self, names: list[str]) -> dict[str, str]:
        """Installed versions of ``names`` in this environment (missing ones left out)."""
        code = (
            "import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))\n"
        )
        try:
            done = subprocess.run(
                [str(self.python), "-c", code, *names],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return dict(json.loads(done.stdout))
        except (OSError, subprocess.SubprocessError, ValueError):
            return {}


def _ready(path: Path, stamp: list[str]) -> bool:
    try:
        built = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(built == stamp and (path / "bin" / "python").exists())


def _install_script(path: Path, reqs: list[str], stamp: list[str]) -> list[str]:
    """One shell command: a fresh venv, its pip upgraded, the requirements, then the marker."""
    q = shlex.quote
    py = q(str(path / "bin" / "python"))
    pip = f"{py} -m pip install --disable-pip-version-check"
    return [
        "bash",
        "-c",
        f"set -e; {q(sys.executable)} -m venv {q(str(path))}; {pip} -q -U pip; "
        f"{pip} {' '.join(q(r) for r in reqs)}; "
        f"echo {q(json.dumps(stamp))} > {q(str(path / MARKER))}",
    ]


def ensure(
    names: list[str],
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    repo: Path = REPO,
) -> dict[str, Env]:
    """Build the environments of ``names`` that are missing (all of them with ``force``);
    modelport's from the checkout ``repo``.

    Installs run side by side in the background; this polls them until each ends or runs out of
    time. Each result carries ``error`` (the reason, with the tail of its log) when it failed.
    """
    reqs = requirements(repo)
    ROOT.mkdir(parents=True, exist_ok=True)
    envs = {n: Env(n, env_dir(n, repo)) for n in names}
    running: dict[str, tuple[subprocess.Popen[bytes], Path, float]] = {}
    for name, env in envs.items():
        stamp = marker(name, reqs[name], repo)
        if not force and _ready(env.path, stamp):
            continue
        shutil.rmtree(env.path, ignore_errors=True)
        logfile = ROOT / f"{env.path.name}-install.log"
        log(f"installing {name} into {env.path} ({', '.join(reqs[name])}); log: {logfile}")
        with logfile.open("wb") as fh:
            proc = subprocess.Popen(
                _install_script(env.path, reqs[name], stamp),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running[name] = (proc, logfile, time.monotonic())
    try:
        while running:
            time.sleep(2)
            for name, (proc, logfile, started) in list(running.items()):
                code = proc.poll()
                elapsed = time.monotonic() - started
                if code is None and elapsed < INSTALL_TIMEOUT:
                    continue
                if code is None:
                    stop(proc, timeout=5)
                    envs[name].error = f"install timed out after {INSTALL_TIMEOUT:.0f} s"
                elif code != 0:
                    tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
                    envs[name].error = f"install failed (pip exit {code}): {' / '.join(tail)}"[:400]
                else:
                    log(f"installed {name} in {elapsed:.0f} s")
                del running[name]
    finally:
        for proc, _, _ in running.values():  # interrupted: stop the installs still going
            stop(proc, timeout=5)
    return envs
