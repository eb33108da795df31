"""The README's examples, run as written, in order, against a live quickstart server.

Every fenced shell and Python block of README.md runs in one fresh folder, the way a newcomer
copies them: the shell blocks with bash (exported variables carry over to the next block), the
Python blocks with this interpreter. The only change made to a block is the port: the
README's ``127.0.0.1:8000`` becomes the free port the quickstart server was started on. A block
that cannot run here says why in an HTML comment just above it (``<!-- not run by
tests/test_readme.py: REASON -->``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.procs import cli_env

ROOT = Path(__file__).resolve().parent.parent
NOT_RUN = "<!-- not run by tests/test_readme.py:"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def readme_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """``(language, code, reason it is not run or None)`` for each fenced block, in order."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        reason = before[len(NOT_RUN) : -len("-->")].strip() if before.startswith(NOT_RUN) else None
        blocks.append((match.group(1) or "shell", match.group(2), reason))
    return blocks


def test_every_block_is_run_or_says_why_not() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text())
    assert len(blocks) > 15
    for language, code, reason in blocks:
        assert language in ("shell", "bash", "python"), language
        assert reason is None or reason, code


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A fresh folder with ``modelport quickstart`` serving from it, and the port."""
    port = free_port()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # `modelport` and `python` on PATH are this interpreter, so the blocks run the code under test.
    for name, args in (("modelport", "-m modelport.cli "), ("python", "")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} {args}"$@"\n')
        shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    log = (tmp_path / "quickstart.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelport.cli", "quickstart", "--port", str(port)],
        cwd=work,
        env=_env(bin_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "quickstart.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield work, port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(bin_dir: Path) -> dict[str, str]:
    env = cli_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", COLUMNS="100")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.timeout(1500)  # retrains in worker processes: minutes on a busy machine
def test_readme_examples_run_as_written(folder: tuple[Path, int]) -> None:
    work, port = folder
    exports = work.parent / "exports.sh"
    exports.write_text("")
    ran = 0
    for n, (language, code, reason) in enumerate(readme_blocks((ROOT / "README.md").read_text())):
        if reason is not None:
            continue
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        script = work.parent / f"block{n}.{'py' if language == 'python' else 'sh'}"
        script.write_text(code)
        body = f"python {script}" if language == "python" else f"set -e -o pipefail\n. {script}"
        # Exported variables live on from block to block, as in one terminal.
        _bash(f". {exports}\n{body}\nexport -p > {exports}\n", work, f"README block {n}:\n{code}")
        ran += 1
    assert ran >= 12
    # What the blocks made is there: the files they wrote and the runs they recorded.
    for name in ("train.csv", "model.skops", "scored.parquet", "scored.csv", "wine-schema.json"):
        assert (work / name).exists(), name

    # Then every example of every command's --help, in the state the README left.
    skipped = set()
    for command, example in help_examples():
        reason = next((r for fragment, r in HELP_NOT_RUN.items() if fragment in example), None)
        if reason is not None:
            skipped.add(reason)
            continue
        example = example.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        _bash(f". {exports}\nset -e -o pipefail\n{example}", work, f"modelport {command} --help")
    assert skipped == set(HELP_NOT_RUN.values())  # every reason still has its example


def _bash(command: str, work: Path, what: str) -> None:
    """Run ``command`` with bash in ``work``, as a terminal there would; it must succeed."""
    out = subprocess.run(
        ["bash", "-c", command],
        cwd=work,
        env=_env(work.parent / "bin"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"{what} failed:\n{command}\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr


#: Help examples this test does not run, by a fragment of the example: why.
HELP_NOT_RUN = {
    "modelport quickstart": "starts a server (this test runs one)",
    "modelport serve": "starts a server, on PostgreSQL (tests/test_cli_newcomer.py serves)",
    "modelport stream": "needs a broker and runs until stopped (tests/test_streams.py)",
    "--engine spark": "Spark (tests/test_spark.py)",
    "01932c1e-...": "a prediction id printed by predict goes there",
}


def help_examples() -> list[tuple[str, str]]:
    """``(command, example)`` for every example line of every command's --help (a line ending
    in a backslash goes on), the root group's first."""
    from click.testing import CliRunner

    from modelport.cli.main import main

    def walk(group: Any, path: list[str]) -> Iterator[list[str]]:
        for name, cmd in sorted(group.commands.items()):
            yield [*path, name]
            if hasattr(cmd, "commands"):
                yield from walk(cmd, [*path, name])

    runner = CliRunner()
    found = []
    for cmd in [[], *walk(main, [])]:
        text = runner.invoke(main, [*cmd, "--help"], prog_name="modelport").output
        lines = iter(text.splitlines())
        for line in lines:
            if line.strip() not in ("Example:", "Examples:", "Start here:"):
                continue
            for example_line in lines:
                if not example_line.strip():
                    break
                example = example_line.strip()
                # A line ending in a backslash, or inside a quote, goes on.
                while example.endswith("\\") or example.count("'") % 2:
                    example = example.rstrip("\\") + " " + next(lines).strip()
                example = example.split("  #", 1)[0].strip()
                found.append((" ".join(cmd), example))
    return found
