"""The README's quickstart command, run as written, stopped by SIGINT and SIGTERM."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx

from modelport.ledger import get_prediction
from modelport.store import Store
from tests.conftest import free_port
from tests.procs import cli_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
ROW = {"sepal_length": 6.3, "sepal_width": 2.9, "petal_length": 5.6, "petal_width": 1.8}


def readme_command(start: str) -> str:
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    found = [line for line in lines if line.startswith(start)]
    assert found, f"README.md has no line starting with {start!r}"
    return found[0]


#: The README's two set-up commands. .ci/run reads them from the README and runs them as written
#: in a fresh venv; this pins their text.
INSTALL_AND_RUN = "pip install -c constraints.txt -e . && modelport quickstart"
INSTALL_AND_TEST = "pip install -c constraints.txt -e '.[test]' && pytest"


def test_readme_has_exactly_the_two_commands() -> None:
    assert readme_command("pip install -c constraints.txt -e . &&") == INSTALL_AND_RUN
    assert readme_command("pip install -c constraints.txt -e '.[test]'") == INSTALL_AND_TEST
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -c constraints.txt -e . &&" in ci and "-e '.[test]'" in ci


def test_the_tests_run_on_the_locked_versions() -> None:
    from importlib.metadata import distributions

    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            pinned[_canonical(name)] = version.strip()
    installed = {_canonical(d.metadata["Name"]): d.version for d in distributions()}
    differ = {n: (v, pinned[n]) for n, v in installed.items() if n in pinned and v != pinned[n]}
    assert not differ, f"installed != constraints.txt (install with -c constraints.txt): {differ}"
    for name in ("pytest", "schemathesis", "ruff", "mypy", "aiokafka", "pandas", "numpy"):
        assert name in pinned and name in installed, name


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _start(home: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    # The README's command past its install step (CI runs the whole line in a fresh venv; here
    # the package is installed already, and pip must not rewrite it under other tests).
    command = readme_command("pip install -c constraints.txt -e . &&").split(" && ", 1)[1]
    proc = subprocess.Popen(
        ["bash", "-c", f"exec 2>&1; exec {command} --port {port}"],
        cwd=ROOT,
        env=cli_env(MODELPORT_HOME=str(home)),
        stdout=subprocess.PIPE,
        text=True,
    )
    out = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        out.append(line)
        if line.startswith("Press Ctrl-C"):
            return proc, "".join(out)
    proc.kill()
    raise AssertionError("quickstart did not come up:\n" + "".join(out))


def _stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def test_quickstart_serves_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "mp-home"
    port = free_port()
    proc, out = _start(home, port)
    try:
        key = re.search(r"^Admin key: (mp_\S+)$", out, re.M)
        assert key, out
        url = f"http://127.0.0.1:{port}"
        assert f"curl -s {url}/v1/models/iris/predict" in out
        assert f"Dashboard: {url}/" in out
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key.group(1)}"}
        ) as http:
            model = http.get("/v1/models/iris").json()
            assert model["aliases"] == {"production": 1} and model["task"] == "classification"
            res = http.post("/v1/models/iris/predict", json={"inputs": [ROW]}).json()
            assert res["predictions"] == ["virginica"] and res["version"] == 1
            assert set(res["probabilities"][0]) == {"setosa", "versicolor", "virginica"}
            assert "modelport" in http.get("/").text
        pid = res["prediction_ids"][0]
    finally:
        status = _stop(proc, signal.SIGINT)
    assert status == 0
    st = Store(f"sqlite:///{home / 'modelport.db'}")
    try:
        with st.read() as conn:
            assert get_prediction(conn, pid)["model"] == "iris"
    finally:
        st.close()

    # Again on the same home, on a port the system chooses, stopped by SIGTERM: the banner
    # names the port it serves on; same key, same single version.
    proc, out2 = _start(home, 0)
    try:
        served = re.search(r"^Dashboard: http://127\.0\.0\.1:(\d+)/ ", out2, re.M)
        assert served and served[1] != "0", out2
        health = httpx.get(f"http://127.0.0.1:{served[1]}/v1/health", timeout=10)
        assert health.json()["pid"] == proc.pid
    finally:
        status = _stop(proc, signal.SIGTERM)
    assert status == 0
    assert f"Admin key: {key.group(1)}" in out2
    with sqlite3.connect(home / "modelport.db") as db:
        assert db.execute("select count(*) from versions").fetchone() == (1,)


def test_quickstart_refuses_open_access_beyond_loopback(tmp_path: Path) -> None:
    out = run_cli(
        ["quickstart", "--no-auth", "--host", "0.0.0.0", "--home", str(tmp_path)], timeout=60
    )
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "not a loopback address" in out.stderr
