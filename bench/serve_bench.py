"""Throughput and latency of POST /v1/models/{name}/predict, ledger on.

The server runs as a real ``modelport serve`` process pinned to CPU 0; the load generator
(``wrk``, from Debian's package of that name) runs pinned to CPU 1, so the two do not share a
core. Every run is bounded in time and targets 127.0.0.1 only. Beside the server figures, the
same model's raw in-process ``predict`` rate shows what the serving stack costs.

    python bench/serve_bench.py                 # print the table
    python bench/serve_bench.py --record        # and append it to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from modelport import Client
from modelport.keys import create_key
from modelport.quickstart import train_demo
from modelport.store import Store

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return (
        ["taskset", "-c", str(cpu)]
        if (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        else []
    )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def _wrk(
    url: str, key: str, rows: int, connections: int, seconds: int, workdir: Path
) -> dict[str, Any]:
    script = workdir / f"predict-{rows}.lua"
    script.write_text(LUA.format(key=key, body=json.dumps({"inputs": [ROW] * rows})))
    cmd = [
        *_pin(1),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"{url}/v1/models/iris/predict",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    secs = result["duration_us"] / 1e6
    result.update(rows=rows, connections=connections, rps=result["requests"] / secs)
    return result


def start_server(home: Path, extra: list[str]) -> tuple[str, str, subprocess.Popen[bytes]]:
    """An admin key in a fresh SQLite store, and ``modelport serve`` on it pinned to CPU 0."""
    st = Store(f"sqlite:///{home / 'modelport.db'}")
    with st.transaction() as conn:
        key, _ = create_key(conn, "bench", ["admin"])
    st.close()
    port = _free_port()
    command = ["serve", "--home", str(home), "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        [*_pin(0), sys.executable, "-m", "modelport.cli", *command, *extra],
        stdout=subprocess.DEVNULL,
    )
    return f"http://127.0.0.1:{port}", key, server


def _raw_rate(model: Any, rows: int, seconds: float = 3.0) -> float:
    import pandas as pd

    X = pd.DataFrame([ROW] * rows)
    model.predict(X)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(X)
        n += 1
    return n / (time.perf_counter() - start)


def _versions() -> str:
    names = [
        "modelport",
        "scikit-learn",
        "uvicorn",
        "fastapi",
        "starlette",
        "SQLAlchemy",
        "numpy",
        "pandas",
    ]
    return ", ".join(f"{n} {md.version(n)}" for n in names)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="Length of each measured run.")
    parser.add_argument(
        "--record", action="store_true", help="Append the results to bench/RESULTS.md."
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="Extra flag for modelport serve, e.g. --serve-arg=--batch-max-wait-ms=0 (repeatable).",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    home = work / "home"
    url, key, server = start_server(home, args.serve_arg)
    results = []
    try:
        _wait_healthy(url, server)
        model, data = train_demo()
        with Client(url, key) as mp:
            mp.push("iris", model, train_data=data, target="species", alias="production")
        for rows in (1, 100):
            _wrk(url, key, rows, 16, 3, work)  # warm-up
            for connections in (16, 64):
                results.append(_wrk(url, key, rows, connections, args.seconds, work))
                print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    with sqlite3.connect(home / "modelport.db") as db:
        ledger_rows = db.execute("select coalesce(sum(rows), 0) from predictions").fetchone()[0]
    raw = {rows: _raw_rate(model, rows) for rows in (1, 100)}

    lines = [
        f"### {dt.date.today().isoformat()} — predict, ledger on (SQLite, synchronous=FULL)",
        "",
        f"Machine: {os.cpu_count()} cores ({_cpu()}); server pinned to CPU 0, wrk (1 thread) to CPU 1. "
        f"Python {platform.python_version()}; {_versions()}.",
        f"Command: `python bench/serve_bench.py --seconds {args.seconds}"
        + "".join(f" --serve-arg={a}" for a in args.serve_arg)
        + "`. Model: the quickstart iris "
        "pipeline (StandardScaler + LogisticRegression), predictions with probabilities.",
        "",
        "| rows/request | connections | requests/s | rows/s | p50 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']} | {r['connections']} | {r['rps']:.0f} | {r['rps'] * r['rows']:.0f} | "
            f"{r['p50_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} | {r['errors'] + r['non2xx']} |"
        )
    lines += [
        "",
        f"Raw in-process `pipeline.predict` on a DataFrame (no server): 1 row {raw[1]:.0f} calls/s; "
        f"100 rows {raw[100]:.0f} calls/s ({raw[100] * 100:.0f} rows/s).",
        f"Ledger rows after the runs: {ledger_rows} (every acknowledged row, warm-ups included).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        path = Path(__file__).with_name("RESULTS.md")
        with path.open("a") as fh:
            fh.write("\n" + text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
