"""Throughput and latency of POST /v1/models/{name}/predict, ledger on.

The server runs as a real ``modelport serve`` process pinned to CPU 0; the load generator
(``wrk``, from Debian's package of that name) runs pinned to CPU 1, so the two do not share a
core. The server runs with this Python (the one that measures the raw rate below); see
``bench/compare.py`` for modelport in a virtual environment of its own. Every run is bounded in
time and targets 127.0.0.1 only, and the server's process group is stopped at the end. Beside
the server figures, the same model's raw in-process ``predict`` rate shows what the serving
stack costs.

    python bench/serve_bench.py                 # print the table
    python bench/serve_bench.py --record        # and append it to bench/RESULTS.md
    python bench/serve_bench.py --serve-arg=--batch-max-wait-ms=0   # extra serve flags
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import load, procs
from peers.modelport_server import IRIS_ROW, push_demo, serving
from peers.report import installed, machine, versions_text

VERSIONS = [
    "modelport",
    "scikit-learn",
    "uvicorn",
    "fastapi",
    "starlette",
    "SQLAlchemy",
    "numpy",
    "pandas",
]


def _raw_rate(model: Any, rows: int, seconds: float = 3.0) -> float:
    import pandas as pd

    X = pd.DataFrame([IRIS_ROW] * rows)
    model.predict(X)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(X)
        n += 1
    return n / (time.perf_counter() - start)


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

    procs.interrupt_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    home = work / "home"
    results = []
    try:
        with serving(home, args.serve_arg) as server:
            model = push_demo(server)
            url = f"{server.url}/v1/models/iris/predict"
            for rows in (1, 100):
                body = json.dumps({"inputs": [IRIS_ROW] * rows}).encode()
                lua = load.script(work, f"predict-{rows}", body, server.headers)
                load.run(url, lua, 16, 3)  # warm-up
                for connections in (16, 64):
                    result = load.run(url, lua, connections, args.seconds)
                    results.append({"rows": rows, "connections": connections, **result})
                    print(json.dumps(results[-1]), file=sys.stderr)
        # The server is stopped (SIGTERM): everything it acknowledged is committed.
        with sqlite3.connect(home / "modelport.db") as db:
            ledger_rows = db.execute("select coalesce(sum(rows), 0) from predictions").fetchone()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = {rows: _raw_rate(model, rows) for rows in (1, 100)}

    lines = [
        f"### {dt.date.today().isoformat()} — predict, ledger on (SQLite, synchronous=FULL)",
        "",
        f"{machine()} Versions: {versions_text(installed(VERSIONS))}.",
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
            f"{r['p50_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} | {r['errors']} |"
        )
    lines += [
        "",
        f"Raw in-process `pipeline.predict` on a DataFrame (no server): 1 row {raw[1]:.0f} calls/s; "
        f"100 rows {raw[100]:.0f} calls/s ({raw[100] * 100:.0f} rows/s).",
        f"Ledger rows after the runs: {ledger_rows} (every acknowledged row, warm-ups included).",
        "requests/s counts 2xx answers only; errors are wrk's socket errors plus HTTP ≥ 400 answers.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        path = Path(__file__).with_name("RESULTS.md")
        with path.open("a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
