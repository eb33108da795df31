"""Soak: a steady request rate for minutes on end; throughput, p99 and memory must stay flat.

A real ``modelport serve`` (pinned to CPU 0, SQLite ledger, synchronous=FULL) takes 1-row
predicts of the quickstart iris pipeline from ``wrk`` (pinned to CPU 1) at a steady rate: each
connection waits ``--delay-ms`` before every request. The run is cut into segments; after each,
the server's resident memory is read and one feedback call and one ``/metrics`` scrape are
made. At the end, the first and last segments are compared and the ledger is counted.
Loopback only, bounded in time (``--minutes``), and the server is stopped at the end.

    python bench/soak.py                       # 10 minutes, ~1,800 requests/s
    python bench/soak.py --minutes 1 --record  # and append the table to bench/RESULTS.md
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import load, procs
from peers.modelport_server import IRIS_ROW, push_demo, serving
from peers.report import installed, machine, versions_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="Length of the soak.")
    parser.add_argument("--segment", type=int, default=60, help="Seconds per measured segment.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=8.0, help="Pause before each request.")
    parser.add_argument("--record", action="store_true", help="Append to bench/RESULTS.md.")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    procs.interrupt_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="modelport-soak-"))
    home = work / "home"
    rows: list[dict[str, float]] = []
    segments = max(1, round(args.minutes * 60 / args.segment))
    try:
        with serving(home) as server:
            push_demo(server)
            url = f"{server.url}/v1/models/iris/predict"
            body = json.dumps({"inputs": [IRIS_ROW]}).encode()
            lua = load.script(work, "soak", body, server.headers, delay_ms=args.delay_ms)
            load.run(url, lua, args.connections, 5)  # warm-up
            started = time.monotonic()
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as http:
                for n in range(segments):
                    r = load.run(url, lua, args.connections, args.segment)
                    answer = http.post(url, json={"inputs": [IRIS_ROW]}).json()
                    feedback = {"prediction_id": answer["prediction_ids"][0], "label": "setosa"}
                    http.post("/v1/feedback", json={"feedback": [feedback]}).raise_for_status()
                    scrape = http.get("/metrics")
                    scrape.raise_for_status()
                    rows.append(
                        {
                            "minute": (time.monotonic() - started) / 60,
                            "rps": r["rps"],
                            "p50_ms": r["p50_us"] / 1000,
                            "p99_ms": r["p99_us"] / 1000,
                            "errors": r["errors"],
                            "rss_mib": procs.rss_bytes(server.proc.pid) / 2**20,
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr)
                    print(f"segment {n + 1}/{segments}", file=sys.stderr)
        with sqlite3.connect(home / "modelport.db") as db:
            ledger_rows = db.execute("select coalesce(sum(rows), 0) from predictions").fetchone()[0]
            db_mib = (home / "modelport.db").stat().st_size / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first, last = rows[0], rows[-1]
    minutes = args.segment * segments / 60
    lines = [
        f"### {dt.date.today().isoformat()} — soak, {minutes:g} minutes at a steady rate "
        "(`bench/soak.py`)",
        "",
        f"{machine()} Versions: "
        f"{versions_text(installed(['modelport', 'uvicorn', 'SQLAlchemy', 'scikit-learn']))}.",
        f"Command: `python bench/soak.py --minutes {args.minutes:g} --segment {args.segment} "
        f"--connections {args.connections} --delay-ms {args.delay_ms:g}`. 1-row predicts of the "
        "quickstart iris pipeline, SQLite ledger (synchronous=FULL); after each segment one "
        "feedback call and one /metrics scrape.",
        "",
        "| minute | requests/s | p50 ms | p99 ms | errors | server RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['minute']:.1f} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['errors']:.0f} | {r['rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"Last segment against the first: throughput {last['rps'] / first['rps']:.2f}x, "
        f"p99 {last['p99_ms'] / first['p99_ms']:.2f}x, RSS {last['rss_mib'] / first['rss_mib']:.2f}x "
        f"(+{last['rss_mib'] - first['rss_mib']:.0f} MiB). Ledger after the run: {ledger_rows:,} "
        f"rows, database file {db_mib:,.0f} MiB.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        with Path(__file__).with_name("RESULTS.md").open("a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
