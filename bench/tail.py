"""Latency at low load: one connection, 1-row requests, modelport against the floor.

At one connection every request waits for the one before it, so nothing hides a stall: a
background loop's query, a thread holding the GIL, a garbage collection or a slow commit shows
as a slow request. This runs the floor (bench/peers/floor.py) and ``modelport serve`` (ledger
and keys on) with this Python, each pinned to CPU 0 with ``wrk`` on CPU 1, and loads each with
one connection: requests/s, p50, p99, p99.9 and the slowest request, the median of ``--repeat``
runs. Both servers run side by side (one idles while the other is loaded) and the routes are
loaded in turn, run after run, so a drift of the machine falls on all of them alike. The model
is the LR pipeline of bench/compare.py.

To say where a stall comes from, the measured runs also record, from outside the server,
how much CPU each of its threads used (``/proc/PID/task/*/stat``, grouped by thread name: the
event loop's thread is ``main``), and the server runs under bench/peers/gc_probe.py, which
times every garbage collection. Switching a suspect off (``--serve-arg``) and comparing in the
same run's ratios is the other half.

    python bench/tail.py                                   # 3 runs of 10 s per cell
    python bench/tail.py --serve-arg=--registry-poll-seconds=60
    python bench/tail.py --seconds 5 --repeat 5 --record   # append the table to RESULTS.md

Everything listens on 127.0.0.1, every run is bounded in time, and each server's process group
is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import build_models
from peers import load, procs
from peers.modelport_server import serving
from peers.report import installed, machine, versions_text

HERE = Path(__file__).resolve().parent
PROBE = HERE / "peers" / "gc_probe.py"
VERSIONS = ["modelport", "scikit-learn", "numpy", "starlette", "uvicorn", "uvloop", "SQLAlchemy"]
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """CPU seconds (user, system) used so far by each thread of ``pid``, summed by thread name
    (the process's first thread is ``main``; threads Python started are named ``python``)."""
    out: dict[str, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        fields = stat.rsplit(")", 1)[1].split()
        user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
        group = "main" if task.name == str(pid) else re.sub(r"[_-]?\d+$", "", name) or name
        was = out.get(group, (0.0, 0.0))
        out[group] = (was[0] + user, was[1] + system)
    return out


@contextmanager
def floor(model: Any, work: Path, timeout: float) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = procs.free_port()
    command = [sys.executable, "-m", "uvicorn", "floor:app", "--app-dir", str(HERE / "peers")]
    proc = subprocess.Popen(
        [*procs.pin(procs.SERVER_CPU), *command, *procs.loopback_flags(port), "--no-access-log"],
        env={**os.environ, "FLOOR_MODEL": str(model.joblib_path)},
        stdout=(work / "floor.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        body = {"inputs": [list(model.rows[0])]}
        procs.wait_for_200(
            proc,
            lambda: httpx.post(url + "/predict", json=body, timeout=5),
            time.monotonic() + timeout,
        )
        yield url, proc
    finally:
        procs.stop(proc)


@dataclass
class Target:
    """One route loaded at one connection, and what its runs measured."""

    server: str
    route: str
    pid: int
    url: str
    lua: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # thread -> [user, system] s
    wall: float = 0.0

    def run(self, seconds: int) -> None:
        before = thread_cpu(self.pid)
        started = time.monotonic()
        self.runs.append(load.run(self.url, self.lua, 1, seconds))
        self.wall += time.monotonic() - started
        after = thread_cpu(self.pid)
        for name, (user, system) in after.items():
            was = before.get(name, (0.0, 0.0))
            used = self.cpu.setdefault(name, [0.0, 0.0])
            used[0] += user - was[0]
            used[1] += system - was[1]

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server": self.server, "route": self.route, "runs": self.runs}
        for key in ("rps", "p50_us", "p99_us", "p999_us", "max_us"):
            out[key] = statistics.median(r[key] for r in self.runs)
        out["errors"] = sum(r["errors"] for r in self.runs)
        out["thread_cpu_ms_per_s"] = {
            k: [round(v * 1000 / self.wall, 1) for v in used]
            for k, used in sorted(self.cpu.items())
            if sum(used) > 0
        }
        requests = sum(r["requests"] for r in self.runs)
        out["cpu_ms_per_request"] = sum(sum(v) for v in self.cpu.values()) * 1000 / requests
        return out


def measure(targets: list[Target], args: Any) -> list[dict[str, Any]]:
    """Warm every target up, then run them in turn ``repeat`` times: a drift of the machine
    (another tenant, the clock) falls on every server alike instead of on one of them."""
    for t in targets:
        if args.warmup:
            load.run(t.url, t.lua, 1, args.warmup)
    for _ in range(args.repeat):
        for t in targets:
            t.run(args.seconds)
    cells = [t.result() for t in targets]
    for c in cells:
        log(json.dumps({k: v for k, v in c.items() if k != "runs"}))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="Length of each measured run.")
    parser.add_argument("--repeat", type=int, default=3, help="Measured runs per route.")
    parser.add_argument("--warmup", type=int, default=2, help="Warm-up seconds per route.")
    parser.add_argument(
        "--serve-arg", action="append", default=[], metavar="FLAG", help="Extra serve flag."
    )
    parser.add_argument("--json", type=Path, help="Write the raw results to this file.")
    parser.add_argument("--record", action="store_true", help="Append to bench/RESULTS.md.")
    args = parser.parse_args()
    if args.repeat < 1 or args.seconds < 1:
        parser.error("--repeat and --seconds take 1 or more")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    procs.interrupt_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="modelport-tail-"))
    cells: list[dict[str, Any]] = []
    gc_pauses: dict[str, Any] = {}
    try:
        (model,) = build_models(work, ["lr"])
        row = list(model.rows[0])
        home = work / "home"
        with serving(home, args.serve_arg, log=work / "push.log") as first:
            from modelport import Client

            with Client(first.url, first.key) as mp:
                mp.push(model.name, model.estimator, alias="production")
        probe_out = work / "gc.json"
        wrap = [str(PROBE), str(probe_out)]
        with (
            floor(model, work, 120) as (floor_url, floor_proc),
            serving(home, args.serve_arg, log=work / "server.log", wrap=wrap) as server,
        ):
            names = [f"x{i}" for i in range(model.n_features)]
            bodies = {
                "floor": json.dumps({"inputs": [row]}).encode(),
                "v1": json.dumps({"inputs": [dict(zip(names, row, strict=True))]}).encode(),
                "v2": json.dumps(
                    {
                        "inputs": [
                            {
                                "name": "input-0",
                                "shape": [1, len(row)],
                                "datatype": "FP64",
                                "data": row,
                            }
                        ]
                    }
                ).encode(),
            }
            v1 = f"{server.url}/v1/models/{model.name}/predict"
            v2 = f"{server.url}/v2/models/{model.name}/infer"
            for url, body in ((v1, bodies["v1"]), (v2, bodies["v2"])):
                answer = httpx.post(
                    url,
                    content=body,
                    headers={**server.headers, "Content-Type": "application/json"},
                    timeout=30,
                )
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {answer.status_code}: {answer.text[:300]}")
            pid = server.proc.pid
            targets = [
                Target(
                    "floor",
                    "floor",
                    floor_proc.pid,
                    floor_url + "/predict",
                    load.script(work, "floor", bodies["floor"], {}),
                ),
                Target(
                    "modelport",
                    "modelport /v1 records",
                    pid,
                    v1,
                    load.script(work, "v1", bodies["v1"], server.headers),
                ),
                Target(
                    "modelport",
                    "modelport /v2 infer",
                    pid,
                    v2,
                    load.script(work, "v2", bodies["v2"], server.headers),
                ),
            ]
            cells = measure(targets, args)
        if probe_out.exists():
            gc_pauses = json.loads(probe_out.read_text())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, cells, gc_pauses)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps({"args": sys.argv, "cells": cells, "gc": gc_pauses}, indent=1)
        )
    if args.record:
        with (HERE / "RESULTS.md").open("a") as fh:
            fh.write("\n" + text)


def report(args: Any, cells: list[dict[str, Any]], gc_pauses: dict[str, Any]) -> str:
    floor_cell = next((c for c in cells if c["server"] == "floor"), None)
    flags = " ".join(args.serve_arg)
    lines = [
        f"### {dt.date.today().isoformat()} — latency at one connection (`bench/tail.py`)",
        "",
        f"{machine()} Command: `python bench/tail.py {' '.join(sys.argv[1:])}`; LR, 1 row per "
        f"request, one connection, median of {args.repeat} runs of {args.seconds} s (the routes "
        f"in turn) after a {args.warmup} s warm-up. Extra serve flags: {flags or 'none'}. Versions: "
        f"{versions_text(installed(VERSIONS))}.",
        "",
        "| route | requests/s | x floor | p50 ms | p99 ms | p99 - floor p99 | p99.9 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        ratio = f"{c['rps'] / floor_cell['rps']:.2f}" if floor_cell else "-"
        gap = f"{(c['p99_us'] - floor_cell['p99_us']) / 1000:+.2f}" if floor_cell else "-"
        lines.append(
            f"| {c['route']} | {c['rps']:,.0f} | {ratio} | {c['p50_us'] / 1000:.2f} | "
            f"{c['p99_us'] / 1000:.2f} | {gap} | {c['p999_us'] / 1000:.2f} | "
            f"{c['max_us'] / 1000:.1f} | {c['errors']} |"
        )
    lines += [
        "",
        "CPU by thread while loaded, ms per second (user + system), and CPU per request:",
        "",
    ]
    for c in cells:
        use = ", ".join(f"{k} {u:g} + {s:g}" for k, (u, s) in c["thread_cpu_ms_per_s"].items())
        lines.append(f"- {c['route']}: {use}; {c['cpu_ms_per_request']:.2f} ms per request")
    if gc_pauses:
        lines += ["", "modelport's garbage collections over its whole run (start-up included):", ""]
        for gen, g in gc_pauses.items():
            lines.append(
                f"- generation {gen}: {g['count']} collections, {g['total_ms']:.1f} ms in all, "
                f"largest {g['max_ms']:.2f} ms, {g['over_ms']['1']} of 1 ms or more, "
                f"{g['over_ms']['5']} of 5 ms or more"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
