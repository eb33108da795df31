"""Serving while a retrain job runs: what the job costs the predict route's latency.

A real ``modelport serve`` (server pinned to CPU 0, its job workers inherit that pinning, so
the retrain competes with serving for the same core: the worst case), the quickstart iris model
in production, and a model made from ``random_forest_classifier`` with many observations. wrk
(CPU 1) sends 1-row predicts at 16 connections for ``--seconds``: once with nothing else
running, once while a retrain of the forest runs (started just before, and still running at the
end, which the script checks). Everything on 127.0.0.1, bounded in time.

    python bench/retrain_while_serving.py               # print the comparison
    python bench/retrain_while_serving.py --record      # and append it to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from peers import load, modelport_server, report

OBSERVATIONS = 60_000
TREES = 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="Length of each measured run.")
    parser.add_argument("--record", action="store_true", help="Append to bench/RESULTS.md.")
    args = parser.parse_args()
    from modelport import Client

    work = Path(tempfile.mkdtemp(prefix="modelport-retrain-bench-"))
    with modelport_server.serving(work / "home") as server:
        modelport_server.push_demo(server)
        mp = Client(server.url, server.key)
        fields = [{"name": f"f{i}", "type": "number"} for i in range(10)]
        mp.create_from_algorithm(
            "forest",
            "random_forest_classifier",
            schema={"fields": fields},
            target="y",
            params={"n_estimators": TREES},
        )
        rng = np.random.default_rng(0)
        for _ in range(OBSERVATIONS // 5000):
            X = rng.normal(size=(5000, 10))
            y = (X[:, 0] + X[:, 1] > 0).astype(int)
            rows = [
                {**{f"f{i}": float(v) for i, v in enumerate(x)}, "y": int(label)}
                for x, label in zip(X, y, strict=True)
            ]
            mp.observe("forest", rows)
        body = json.dumps({"inputs": [modelport_server.IRIS_ROW]}).encode()
        lua = load.script(work, "iris", body, server.headers)
        url = f"{server.url}/v1/models/iris/predict"
        load.run(url, lua, 16, 3)  # warm-up
        alone = load.run(url, lua, 16, args.seconds)
        job = mp.retrain("forest", holdout=0.2)
        deadline = time.monotonic() + 60
        while mp.job(job["id"])["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        during = load.run(url, lua, 16, args.seconds)
        state = mp.job(job["id"])
        still_running = state["status"] == "running"
        finished = mp.wait_job(job["id"], timeout=900)
        mp.close()
    lines = [
        f"### {dt.date.today().isoformat()} — serving while a retrain runs "
        "(`bench/retrain_while_serving.py`)",
        "",
        f"{report.machine()} Command: `python bench/retrain_while_serving.py "
        f"--seconds {args.seconds}`. 1-row predicts of the quickstart iris pipeline at 16 "
        f"connections; the retrain: `random_forest_classifier` with {TREES} trees on "
        f"{OBSERVATIONS:,} observations of 10 fields, in a job worker process on the server's "
        "own core (nice 10).",
        "",
        "| | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in (("alone", alone), ("during the retrain", during)):
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} "
            f"| {r['errors']} |"
        )
    lines += [
        "",
        f"The retrain was still running at the end of the loaded run: {still_running}; it "
        f"ended {finished['status']} in {_seconds(finished):.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        with Path(__file__).with_name("RESULTS.md").open("a") as fh:
            fh.write("\n" + text)


def _seconds(job: dict[str, object]) -> float:
    started, finished = job.get("started"), job.get("finished")
    if not isinstance(started, str) or not isinstance(finished, str):
        return float("nan")
    parse = dt.datetime.fromisoformat
    return (
        parse(finished.replace("Z", "+00:00")) - parse(started.replace("Z", "+00:00"))
    ).total_seconds()


if __name__ == "__main__":
    main()
