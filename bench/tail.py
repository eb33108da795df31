"""Latency at low load: one connection, 1-row requests, modelport against the floor.

At one connection every request waits for the one before it, so nothing hides a stall: a
background loop's query, a thread holding the GIL, a garbage collection or a slow commit shows
as a slow request. This runs the floor (bench/peers/floor.py) and ``modelport serve`` (ledger
and keys on) with this Python, each pinned to CPU 0 with ``wrk`` on CPU 1, and loads each with
one connection: requests/s, p50, p99, p99.9 and the slowest request, the median of ``--repeat``
runs. Both servers run side by side (one idles while the other is loaded) and the routes are
loaded in turn, run after run, so a drift of the machine falls on all of them alike. The model
is the LR pipeline of bench/compare.py.

Every answer of modelport waits for its ledger commit's fsync, and at one connection nothing
overlaps that wait. So the runs also read, from the server's ``/metrics``, how long its writer's
commits took (``modelport_ledger_commit_seconds``), and a probe times the disk's flush alone in
the store's folder (bench/flush_gap.py: six 4 KiB write-ahead-log frames and an ``fdatasync``,
as a 1-row commit writes), back to back and after the floor's time per request with the CPU
busy: at one connection a commit never follows the one before it at once, and on some disks a
flush after an idle gap costs several times one right after another. The report gives what
one commit per answer leaves at best: the floor's time per request plus the mean commit, as
requests/s and as a fraction of the floor's; a route that reaches it spends no more than the
floor on everything else. Beside it, the floor's request plus the probe's flush, back to back
and after that gap: where a server as cheap as the floor would land if it flushed before each
answer, as far as a synthetic flush can say (how much an idle gap costs moves with what the
CPU did in it, so the server's own commit stays the measure).

On a SQLite store the runs also count the requests the store's block device completed
(writes and cache flushes, from ``/sys/dev/block``), per commit: how many times each commit
waited for the disk.

To say where a stall comes from, the measured runs also record, from outside the server,
how much CPU each of its threads used (``/proc/PID/task/*/stat``, grouped by thread name: the
event loop's thread is ``main``), and the server runs under bench/peers/gc_probe.py, which
times every garbage collection. Switching a suspect off (``--serve-arg``) and comparing in the
same run's ratios is the other half.

    python bench/tail.py                                   # 3 runs of 10 s per cell
    python bench/tail.py --serve-arg=--registry-poll-seconds=60
    python bench/tail.py --versus=--no-inline-when-alone   # a setting off, in the same rounds
    python bench/tail.py --seconds 5 --repeat 5 --record   # append the table to RESULTS.md
    MODELPORT_STORE='postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dtail' \
        python bench/tail.py       # on an empty PostgreSQL schema (tail) instead of SQLite

Everything listens on 127.0.0.1, every run is bounded in time, and each server's process group
is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
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
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import build_models
from flush_gap import flush_after
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


@contextmanager
def floor_and_modelport(
    work: Path, serve_args: list[str], *, wrap: list[str] | None = None
) -> Iterator[tuple[Any, tuple[str, subprocess.Popen[bytes]], Any]]:
    """The LR model of bench/compare.py, pushed to a fresh store at ``work / "home"``; then
    the floor and ``modelport serve`` on it (``wrap``: a command the server runs under), both
    up: ``(model, (floor URL, floor process), server)``, stopped when the block ends."""
    (model,) = build_models(work, ["lr"])
    home = work / "home"
    with serving(home, serve_args, log=work / "push.log") as first:
        from modelport import Client

        with Client(first.url, first.key) as mp:
            mp.push(model.name, model.estimator, alias="production")
    with (
        floor(model, work, 120) as floor_up,
        serving(home, serve_args, log=work / "server.log", wrap=wrap or ()) as server,
    ):
        yield model, floor_up, server


def route_targets(
    work: Path, model: Any, server: Any, flags: str, disk: Path | None
) -> list[Target]:
    """A modelport server's /v1 records and /v2 infer routes as targets (``flags``: the
    server's extra flags, named in its rows), each checked to answer first."""
    bodies = one_row_bodies(model)
    name = f"modelport {flags}".strip()
    targets: list[Target] = []
    for route, path, body in (
        ("/v1 records", f"/v1/models/{model.name}/predict", bodies["v1"]),
        ("/v2 infer", f"/v2/models/{model.name}/infer", bodies["v2"]),
    ):
        url = server.url + path
        headers = {**server.headers, "Content-Type": "application/json"}
        answer = httpx.post(url, content=body, headers=headers, timeout=30)
        if answer.status_code != 200:
            raise SystemExit(f"{url}: HTTP {answer.status_code}: {answer.text[:300]}")
        tag = f"{'versus' if flags else 'modelport'}-{len(targets)}"
        targets.append(
            Target(
                "modelport",
                f"{name} {route}",
                server.proc.pid,
                url,
                load.script(work, tag, body, server.headers),
                metrics=(server.url + "/metrics", server.headers),
                disk=disk,
            )
        )
    return targets


def one_row_bodies(model: Any) -> dict[str, bytes]:
    """The model's first row as the floor's body, a ``/v1`` records body and a ``/v2`` body."""
    row = list(model.rows[0])
    names = [f"x{i}" for i in range(model.n_features)]
    tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}
    return {
        "floor": json.dumps({"inputs": [row]}).encode(),
        "v1": json.dumps({"inputs": [dict(zip(names, row, strict=True))]}).encode(),
        "v2": json.dumps({"inputs": [tensor]}).encode(),
    }


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
    metrics: tuple[str, dict[str, str]] | None = None  # the server's /metrics URL and headers
    commits: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # s, count, inline
    disk: Path | None = None  # the store's folder: its device's requests are counted
    disk_io: list[int] | None = None  # the device's write and flush requests during the runs

    def run(self, seconds: int) -> None:
        before = thread_cpu(self.pid)
        committed = commit_totals(*self.metrics) if self.metrics else [0.0, 0.0, 0.0]
        io_before = procs.disk_requests(self.disk) if self.disk else None
        started = time.monotonic()
        self.runs.append(load.run(self.url, self.lua, 1, seconds))
        self.wall += time.monotonic() - started
        io_after = procs.disk_requests(self.disk) if self.disk else None
        if io_before and io_after:
            done = [a - b for a, b in zip(io_after, io_before, strict=True)]
            self.disk_io = [a + b for a, b in zip(self.disk_io or [0, 0], done, strict=True)]
        after = thread_cpu(self.pid)
        if self.metrics:
            now = commit_totals(*self.metrics)
            for i, (a, b) in enumerate(zip(now, committed, strict=True)):
                self.commits[i] += a - b
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
        if self.commits[1]:
            out["commit_ms"] = self.commits[0] * 1000 / self.commits[1]
            out["commits_per_request"] = self.commits[1] / requests
            out["inline_share"] = self.commits[2] / self.commits[1]
            if self.disk_io:
                out["device_writes_per_commit"] = self.disk_io[0] / self.commits[1]
                out["device_flushes_per_commit"] = self.disk_io[1] / self.commits[1]
        return out


#: From ``/metrics``: the commits' seconds in all, how many, and how many were made inline.
COMMIT_SAMPLES = (
    "modelport_ledger_commit_seconds_sum",
    "modelport_ledger_commit_seconds_count",
    "modelport_ledger_inline_commits_total",
)


def commit_totals(url: str, headers: dict[str, str]) -> list[float]:
    """The writer's group commits so far, from ``/metrics``: seconds in all, how many, and
    how many on the event loop's thread (``inline_when_alone``)."""
    text = httpx.get(url, headers=headers, timeout=30).raise_for_status().text
    totals = dict.fromkeys(COMMIT_SAMPLES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return [totals[name] for name in COMMIT_SAMPLES]


#: The store the server runs on when not its home's SQLite file (see the module's examples).
STORE = os.environ.get("MODELPORT_STORE", "")
PROBED = (
    "A minimal commit on the server's PostgreSQL store (`modelport ledger commit-time`'s)"
    if STORE.startswith("postgresql")
    else "The disk's flush alone in the store's folder (`bench/flush_gap.py`: six log frames "
    "and an fdatasync)"
)


def probe_commits(home: Path, gaps_s: list[float]) -> dict[float, dict[str, float]]:
    """The probe after each gap: on the SQLite store's disk, ``flush_gap.flush_after``; on a
    PostgreSQL store, minimal commits on it (``modelport.store.commit_probe``)."""
    if not STORE.startswith("postgresql"):
        return flush_after(home, gaps_s)
    from modelport.store import Store, commit_probe

    store = Store(STORE, migrate=False)
    try:
        with commit_probe.minimal_commits(store) as commit:
            return commit_probe.timed(commit, gaps_s, commits=1000, rounds=3)
    finally:
        store.close()


def flush_lines(flush: dict[str, dict[str, float]], floor_ms: float, floor_rps: float) -> list[str]:
    """The probe (``PROBED``, on the server's CPU), back to back and after the floor's time
    per request with the CPU busy, each with the floor's request added: where a server as
    cheap as the floor that committed before each answer would land, as far as a synthetic
    commit can say."""
    rows = [
        ("back to back", flush["back_to_back"]),
        (
            f"after {floor_ms * 1000:.0f} us busy (the floor's request)",
            flush["after_floor_request"],
        ),
    ]
    lines = [
        f"{PROBED}, on the server's CPU, measured after the runs, and the floor's request "
        "plus its mean:",
        "",
        "| flush | mean ms | p50 ms | p90 ms | p99 ms | floor + flush, requests/s | x floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in rows:
        rate = 1000 / (floor_ms + s["mean_ms"])
        lines.append(
            f"| {name} | {s['mean_ms']:.3f} | {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | "
            f"{s['p99_ms']:.3f} | {rate:,.0f} | {rate / floor_rps:.2f} |"
        )
    return [
        *lines,
        "",
        "At one connection a commit never follows the one before it at once, so the second "
        "line is the closer to a server's case; where the two differ, the disk makes a flush "
        "after an idle gap wait longer, and by how much moves with what the CPU did in the gap: "
        "the server's own mean commit (above) is the measure of what its flushes cost.",
    ]


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
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="FLAG",
        help="Also run a second modelport server with this extra serve flag (repeatable), "
        "its routes loaded in the same rounds, e.g. --versus=--no-inline-when-alone.",
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
    flush: dict[str, dict[str, float]] = {}
    try:
        probe_out = work / "gc.json"
        wrap = [str(PROBE), str(probe_out)]
        with floor_and_modelport(work, args.serve_arg, wrap=wrap) as (
            model,
            (floor_url, floor_proc),
            server,
        ):
            bodies = one_row_bodies(model)
            # The device of a SQLite store's folder; a PostgreSQL server's disk is its own.
            store_folder = None if STORE.startswith("postgresql") else work / "home"
            floor_target = Target(
                "floor",
                "floor",
                floor_proc.pid,
                floor_url + "/predict",
                load.script(work, "floor", bodies["floor"], {}),
            )
            targets = [floor_target, *route_targets(work, model, server, "", store_folder)]
            with contextlib.ExitStack() as versus:
                if args.versus:
                    other = versus.enter_context(
                        serving(
                            work / "home",
                            [*args.serve_arg, *args.versus],
                            log=work / "versus.log",
                            wrap=[str(PROBE), str(work / "gc-versus.json")],
                        )
                    )
                    named = " ".join(args.versus)
                    targets += route_targets(work, model, other, named, store_folder)
                cells = measure(targets, args)
            floor_cell = next(c for c in cells if c["server"] == "floor")
            with procs.on_cpu(procs.SERVER_CPU):  # where the server waits for its flushes
                spent = probe_commits(work / "home", [0.0, 1 / floor_cell["rps"]])
            flush = dict(zip(("back_to_back", "after_floor_request"), spent.values(), strict=True))
            log(f"{PROBED}: {json.dumps(flush)}")
        if probe_out.exists():
            gc_pauses = json.loads(probe_out.read_text())
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, cells, gc_pauses, flush)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": sys.argv, "cells": cells, "gc": gc_pauses, "flush": flush}, indent=1
            )
        )
    if args.record:
        with (HERE / "RESULTS.md").open("a") as fh:
            fh.write("\n" + text)


def report(
    args: Any,
    cells: list[dict[str, Any]],
    gc_pauses: dict[str, Any],
    flush: dict[str, dict[str, float]],
) -> str:
    floor_cell = next((c for c in cells if c["server"] == "floor"), None)
    flags = " ".join(args.serve_arg)
    versus = (
        f"; beside it a second modelport server with `{' '.join(args.versus)}` as well, "
        "loaded in the same rounds"
        if args.versus
        else ""
    )
    lines = [
        f"### {dt.date.today().isoformat()} — latency at one connection (`bench/tail.py`)",
        "",
        f"{machine()} Command: `python bench/tail.py {' '.join(sys.argv[1:])}`; LR, 1 row per "
        f"request, one connection, median of {args.repeat} runs of {args.seconds} s (the routes "
        f"in turn) after a {args.warmup} s warm-up. Extra serve flags: {flags or 'none'}"
        f"{versus}. Versions: "
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
    committing = [c for c in cells if "commit_ms" in c]
    if floor_cell and committing:
        floor_ms = 1000 / floor_cell["rps"]
        lines += [
            "",
            "One commit per answer: at one connection each answer waits for its commit, so "
            "modelport at the floor's cost for everything else would take the floor's time per "
            "request plus the server's mean commit "
            f"(the floor: {floor_ms:.3f} ms per request):",
            "",
            "| route | commit ms (mean) | commits per request | made inline | "
            "device writes per commit | device flushes per commit | floor + commit, requests/s "
            "| x floor | reached of floor + commit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in committing:
            ceiling = 1000 / (floor_ms + c["commit_ms"])
            io = [
                f"{c[k]:.2f}" if k in c else "-"
                for k in ("device_writes_per_commit", "device_flushes_per_commit")
            ]
            lines.append(
                f"| {c['route']} | {c['commit_ms']:.3f} | {c['commits_per_request']:.2f} | "
                f"{c.get('inline_share', 0):.0%} | {io[0]} | {io[1]} | {ceiling:,.0f} | {ceiling / floor_cell['rps']:.2f} | "
                f"{c['rps'] / ceiling:.2f} |"
            )
        if any("device_writes_per_commit" in c for c in committing):
            lines += [
                "",
                "Device writes and flushes: the requests the store's block device completed "
                "during the route's runs (`/sys/dev/block/*/stat`, everything on that device), "
                "per commit. A flush of the log waits for the device at least twice, the data "
                "and the cache's flush (the kernel counts that one as a write and a flush); on a "
                "file system without a journal, once more when the write moved the file's time "
                "stamps (at least once per clock tick).",
            ]
        if flush:
            lines += ["", *flush_lines(flush, floor_ms, floor_cell["rps"])]
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
