"""The report of ``bench/compare.py``: markdown tables, versions of every environment."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path
from typing import Any

from . import procs, venvs
from .servers import Peer

ROWS = (1, 100)
CONNECTIONS = (16, 64)
MODELS = {
    "lr": "Pipeline(StandardScaler, LogisticRegression)",
    "rf": "RandomForestClassifier(n_estimators=100, max_depth=8)",
}
#: The benchmark's own Python: it trains the models, makes the keys and pushes to modelport.
SYSTEM_PACKAGES = ["modelport", "scikit-learn", "numpy", "joblib", "pandas", "pyarrow", "grpcio"]
_STACK = ["fastapi", "starlette", "uvicorn", "uvloop", "httptools"]
_SKLEARN = ["scikit-learn", "numpy", "pandas", "joblib"]
#: What the report names of each environment (packages an environment lacks are left out).
ENV_PACKAGES = {
    "modelport": ["modelport", *_STACK, "SQLAlchemy", "orjson", *_SKLEARN, "skops", "pyarrow"],
    "modelport-grpc": ["modelport", *_STACK, "grpcio", "protobuf", "SQLAlchemy", *_SKLEARN],
    "floor": [*_STACK, *_SKLEARN],
    "mlserver": ["mlserver", "mlserver-sklearn", *_STACK, "grpcio", "protobuf", *_SKLEARN],
    "mlflow": ["mlflow", *_STACK, *_SKLEARN],
    "bentoml": ["bentoml", *_STACK, *_SKLEARN],
}


def _floor_rps(cells: list[dict[str, Any]]) -> dict[tuple[str, int, int], float]:
    return {
        (c["model"], c["rows"], c["connections"]): c["rps"]
        for c in cells
        if c["peer"] == "floor" and "rps" in c
    }


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _secs(s: dict[str, Any], key: str) -> str:
    return f"{s[key]:.2f}" if key in s else "-"


def tables(
    servers: list[dict[str, Any]],
    cells: list[dict[str, Any]],
    rows_list: tuple[int, ...] = ROWS,
    connections: tuple[int, ...] = CONNECTIONS,
) -> str:
    floor = _floor_rps(cells)
    out = [
        "| server | model | start-up s | RSS MiB after load | RSS MiB at rest after | processes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in servers:
        if "error" in s and "startup_s" not in s:
            out.append(f"| {s['server']} | {s['model']} | failed: {_short(s['error'])} | | | |")
            continue
        out.append(
            f"| {s['server']} | {s['model']} | {s['startup_s']:.2f} | {_mib(s.get('rss_bytes'))} "
            f"| {_mib(s.get('rss_rest_bytes'))} | {s.get('processes', '-')} |"
        )
    seeded = [s for s in servers if "empty_health_s" in s]
    if seeded:
        out += [
            "",
            "modelport start-up: (a) launch to `GET /v1/health` 200 on an empty store; (b) the "
            "push (client side, informational); (c) the start-up above: the server stopped after "
            "the push and launched again on that store, to the first 200 of a 1-row predict.",
            "",
            "| server | model | (a) empty store to health s | (b) push s | (c) restart to predict s |",
            "|---|---|---:|---:|---:|",
        ]
        for s in seeded:
            out.append(
                f"| {s['server']} | {s['model']} | {_secs(s, 'empty_health_s')} | "
                f"{_secs(s, 'push_s')} | {_secs(s, 'startup_s')} |"
            )
    measured = [s for s in servers if s.get("memory")]
    if measured:
        out += [
            "",
            "Memory by process after the load: each process's own VmRSS (shared pages count in "
            "every process that maps them) and PSS (shared pages split among them: PSS adds up).",
            "",
            "| server | model | process | VmRSS MiB | PSS MiB |",
            "|---|---|---|---:|---:|",
        ]
        for s in measured:
            mem = s["memory"]
            for m in mem:
                out.append(
                    f"| {s['server']} | {s['model']} | {m['role']} ({m['pid']}) | "
                    f"{_mib(m['rss_bytes'])} | {_mib(m['pss_bytes'])} |"
                )
            if len(mem) > 1:
                pss = [m["pss_bytes"] for m in mem]
                total = None if None in pss else sum(pss)
                out.append(
                    f"| {s['server']} | {s['model']} | sum of {len(mem)} | "
                    f"{_mib(sum(m['rss_bytes'] for m in mem))} | {_mib(total)} |"
                )
    out += [
        "",
        "requests/s (x the floor's requests/s in the same cell):",
        "",
        "| server | model | "
        + " | ".join(f"{r} row{'s' if r > 1 else ''}, {c}" for r in rows_list for c in connections)
        + " |",
        "|---|---|" + "---:|" * (len(rows_list) * len(connections)),
    ]
    keyed = {(c["server"], c["model"], c["rows"], c["connections"]): c for c in cells}
    order = list(dict.fromkeys((c["server"], c["model"]) for c in cells))
    for server, model in order:
        parts = []
        for rows in rows_list:
            for conns in connections:
                c = keyed.get((server, model, rows, conns))
                if c is None or "rps" not in c:
                    parts.append("failed")
                    continue
                base = floor.get((model, rows, conns))
                ratio = f" ({c['rps'] / base:.2f}x)" if base else ""
                parts.append(f"{c['rps']:,.0f}{ratio}")
        out.append(f"| {server} | {model} | " + " | ".join(parts) + " |")
    out += [
        "",
        "| server | model | rows/request | connections | requests/s | rows/s | p50 ms | p99 ms "
        "| errors | x floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        head = f"| {c['server']} | {c['model']} | {c['rows']} | {c['connections']} |"
        if "rps" not in c:
            out.append(f"{head} failed: {_short(c.get('error', '?'))} | | | | | |")
            continue
        base = floor.get((c["model"], c["rows"], c["connections"]))
        ratio = f"{c['rps'] / base:.2f}" if base else "-"
        out.append(
            f"{head} {c['rps']:,.0f} | {c['rows_per_s']:,.0f} | {c['p50_us'] / 1000:.1f} | "
            f"{c['p99_us'] / 1000:.1f} | {c['errors']} | {ratio} |"
        )
    return "\n".join(out)


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: Where a virtual machine's guest says how its idle CPUs wait (Linux's cpuidle and the
#: haltpoll governor's polling before a halt).
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def idle_policy() -> str | None:
    """How the machine's idle CPUs wait, when it says: the cpuidle driver and, under the
    haltpoll driver, the guest's halt polling. An answer that waits for the disk waits with
    the CPU idle, so this moves low-load latency (see bench/halt_poll.py)."""
    with contextlib.suppress(OSError):
        driver = CPUIDLE_DRIVER.read_text().strip()
        if driver == "haltpoll" and HALT_POLL_NS.exists():
            return f"idle: haltpoll, guest_halt_poll_ns {HALT_POLL_NS.read_text().strip()}"
        return f"idle: {driver}"
    return None


def machine(*, loaded: bool = True) -> str:
    """The report line on the machine, the pinning (of a benchmark that loads a server:
    ``loaded``) and the Python running the benchmark."""
    pinned = "server pinned to CPU 0, wrk (1 thread) to CPU 1" if procs.can_pin() else "no pinning"
    idle = idle_policy()
    return (
        f"Machine: {os.cpu_count()} cores ({cpu_model()}{'; ' + idle if idle else ''})"
        f"{'; ' + pinned if loaded else ''}. Python {platform.python_version()}."
    )


def installed(names: list[str]) -> dict[str, str]:
    """Versions of ``names`` in this Python (missing ones left out)."""
    out = {}
    for name in names:
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def versions_text(vers: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in vers.items())


def versions(envs: dict[str, venvs.Env]) -> dict[str, dict[str, str]]:
    out = {"benchmark Python": installed(SYSTEM_PACKAGES)}
    for name, env in envs.items():
        if not env.error:
            out[name] = env.versions(ENV_PACKAGES[name])
    return out


def report(
    args: argparse.Namespace,
    peers: list[Peer],
    envs: dict[str, venvs.Env],
    servers: list[dict[str, Any]],
    cells: list[dict[str, Any]],
) -> str:
    vers = versions(envs)
    command = "python bench/compare.py " + " ".join(sys.argv[1:])
    flags = " ".join(args.serve_arg)
    lines = [
        f"### {dt.date.today().isoformat()} — side by side with peer servers (`bench/compare.py`)",
        "",
        f"{machine()} Command: `{command.strip()}` "
        f"({args.seconds} s per cell after a {args.warmup} s warm-up). "
        f"Extra `modelport serve` flags: {f'`{flags}`' if flags else 'none (defaults)'}.",
        "",
        "Versions: "
        + "; ".join(f"{env}: {versions_text(pkgs)}" for env, pkgs in vers.items())
        + ".",
        "",
        "Servers: " + "; ".join(f"{p.name}: {p.description}" for p in peers) + ".",
        "Models: " + "; ".join(f"{k}: {MODELS[k]}" for k in args.models) + " (20 features, "
        "make_classification(n_samples=5000, random_state=0), fitted on numpy arrays).",
        "",
        *(
            [
                f"modelport from the checkout {args.checkout} "
                f"(commit {args.checkout_commit}), not this one.",
                "",
            ]
            if args.checkout_commit
            else []
        ),
        *(
            [
                f"Each cell is the median of {args.repeat} runs (requests/s, p50 and p99 each "
                "the median of its own; the cell's `rps_runs` in --json holds every run).",
                "",
            ]
            if args.repeat > 1
            else []
        ),
        tables(servers, cells, tuple(args.rows), tuple(args.connections)),
        "",
        "requests/s counts 2xx answers only; errors are wrk's socket errors plus HTTP ≥ 400 "
        "answers. gRPC rows (`ModelInfer`) are loaded by bench/peers/grpc_load.py instead of wrk: "
        "one asyncio grpcio client process on CPU 1, one channel, the connections column being "
        "the calls in flight; it counts OK answers, its errors are UNAVAILABLE and "
        "DEADLINE_EXCEEDED plus any other status. The floor ratio is the same for rows/s (same rows per request). modelport also "
        "computes `predict_proba` and writes every row to its ledger; the peers call `predict` "
        "only. Start-up runs from the launch to the first 200 to a 1-row predict; for modelport, "
        "which loads the models of its store at start, it is a restart on the store the model "
        "was pushed to (c), beside the empty-store start (a) and the push (b). RSS sums VmRSS "
        "over the server's process tree.",
        "",
    ]
    return "\n".join(lines)
