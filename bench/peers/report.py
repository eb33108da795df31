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
SYSTEM_PACKAGES = [
    "modelport",
    "scikit-learn",
    "numpy",
    "joblib",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "fastapi",
    "SQLAlchemy",
    "pandas",
]
ENV_PACKAGES = {
    "floor": ["starlette", "uvicorn", "uvloop", "httptools", "scikit-learn", "numpy", "joblib"],
    "mlserver": [
        "mlserver",
        "mlserver-sklearn",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "scikit-learn",
        "numpy",
        "pandas",
        "joblib",
    ],
    "mlflow": [
        "mlflow",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "scikit-learn",
        "numpy",
        "pandas",
        "joblib",
    ],
    "bentoml": ["bentoml", "starlette", "uvicorn", "uvloop", "scikit-learn", "numpy", "joblib"],
}


def _floor_rps(cells: list[dict[str, Any]]) -> dict[tuple[str, int, int], float]:
    return {
        (c["model"], c["rows"], c["connections"]): c["rps"]
        for c in cells
        if c["peer"] == "floor" and "rps" in c
    }


def tables(servers: list[dict[str, Any]], cells: list[dict[str, Any]]) -> str:
    floor = _floor_rps(cells)
    out = [
        "| server | model | start-up s | RSS MiB after load | processes |",
        "|---|---|---:|---:|---:|",
    ]
    for s in servers:
        if "error" in s and "startup_s" not in s:
            out.append(f"| {s['server']} | {s['model']} | failed: {_short(s['error'])} | | |")
            continue
        rss = f"{s['rss_bytes'] / 2**20:.0f}" if "rss_bytes" in s else "-"
        out.append(
            f"| {s['server']} | {s['model']} | {s['startup_s']:.1f} | {rss} | "
            f"{s.get('processes', '-')} |"
        )
    out += [
        "",
        "requests/s (x the floor's requests/s in the same cell):",
        "",
        "| server | model | 1 row, 16 | 1 row, 64 | 100 rows, 16 | 100 rows, 64 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    keyed = {(c["server"], c["model"], c["rows"], c["connections"]): c for c in cells}
    order = list(dict.fromkeys((c["server"], c["model"]) for c in cells))
    for server, model in order:
        parts = []
        for rows in ROWS:
            for conns in CONNECTIONS:
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


def versions(envs: dict[str, venvs.Env]) -> dict[str, dict[str, str]]:
    system = {}
    for name in SYSTEM_PACKAGES:
        with contextlib.suppress(md.PackageNotFoundError):
            system[name] = md.version(name)
    out = {"modelport (this Python)": system}
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
    pinned = "server pinned to CPU 0, wrk (1 thread) to CPU 1" if procs.can_pin() else "no pinning"
    lines = [
        f"### {dt.date.today().isoformat()} — side by side with peer servers (`bench/compare.py`)",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu_model()}); {pinned}. "
        f"Python {platform.python_version()}. Command: `{command.strip()}` "
        f"({args.seconds} s per cell after a {args.warmup} s warm-up).",
        "",
        "Versions: "
        + "; ".join(
            f"{env}: " + ", ".join(f"{k} {v}" for k, v in pkgs.items())
            for env, pkgs in vers.items()
        )
        + ".",
        "",
        "Servers: " + "; ".join(f"{p.name}: {p.description}" for p in peers) + ".",
        "Models: " + "; ".join(f"{k}: {MODELS[k]}" for k in args.models) + " (20 features, "
        "make_classification(n_samples=5000, random_state=0), fitted on numpy arrays).",
        "",
        tables(servers, cells),
        "",
        "requests/s counts 2xx answers only; errors are wrk's socket errors plus HTTP ≥ 400 "
        "answers; the floor ratio is the same for rows/s (same rows per request). modelport also "
        "computes `predict_proba` and writes every row to its ledger; the peers call `predict` "
        "only. Start-up runs from the launch to the first 200 to a 1-row predict (modelport's "
        "includes pushing the model). RSS sums VmRSS over the server's process tree.",
        "",
    ]
    return "\n".join(lines)
