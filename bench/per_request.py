"""CPU per request of the server's own code, in one process, without a network or a load tool.

Throughput under ``wrk`` moves by 10-20 % from run to run on a shared 2-core machine, which
hides a change of a few percent in the code a request runs. This drives the ASGI app in
process, one request after another, exactly as uvicorn would call it (the same ``create_app``
as ``modelport serve``, the service started through the app's lifespan, the writer thread
committing every request to a SQLite ledger), and reports the CPU time per request of the
whole process (``time.process_time``: every thread) and the wall time, for 1-row and 100-row
requests on the native route (records and columns) and on the Open Inference Protocol route.
Background loops are slowed to once an hour so that only requests are measured.

CPU time itself moves by 10-20 % between runs on a shared virtual machine. For a figure that
does not, count instructions: run one cell under ``valgrind --tool=callgrind`` twice, with two
request counts, and divide the difference of the totals by the difference of the counts
(``--only``; PYTHONHASHSEED fixed so both runs hash alike).

Run it with a checkout's sources first on the path to compare two commits in turn:

    PYTHONPATH=../old/src python bench/per_request.py --json old.json
    python bench/per_request.py --json new.json
    python bench/per_request.py --compare old.json new.json

Everything stays in the process: nothing listens on a port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROUTES = ("v1 records", "v1 columns", "v2 infer")
QUIET = {  # background loops: once an hour, so only requests are measured
    "registry_poll_seconds": 3600.0,
    "learn_poll_seconds": 3600.0,
    "job_poll_seconds": 3600.0,
    "release_check_seconds": 3600.0,
    "drift_check_seconds": 0.0,
    "ledger_archive_seconds": 0.0,
}


def _settings(home: Path) -> Any:
    from modelport.settings import Settings

    known = {k: v for k, v in QUIET.items() if k in Settings.model_fields}
    return Settings(home=str(home), no_auth=True, dangerously_allow_code_without_auth=True, **known)


async def _push(home: Path, model_path: Path, width: int) -> None:
    from modelport.registry.keys import ANONYMOUS
    from modelport.service.core import Service

    svc = Service(_settings(home))
    await svc.start()
    meta = {
        "schema": {"fields": [{"name": f"x{i}", "type": "number"} for i in range(width)]},
        "alias": "production",
        "flavor": "pickle",
    }
    await svc.push(ANONYMOUS, "lr", model_path, meta)
    await svc.stop()


def _body(route: str, rows: list[list[float]]) -> tuple[str, bytes]:
    names = [f"x{i}" for i in range(len(rows[0]))]
    if route == "v1 records":
        doc: Any = {"inputs": [dict(zip(names, r, strict=True)) for r in rows]}
    elif route == "v1 columns":
        doc = {"columns": names, "data": rows}
    else:
        flat = [v for r in rows for v in r]
        tensor = {"name": "input-0", "shape": [len(rows), len(names)], "datatype": "FP64"}
        doc = {"inputs": [{**tensor, "data": flat}]}
    path = "/v2/models/lr/infer" if route == "v2 infer" else "/v1/models/lr/predict"
    return path, json.dumps(doc).encode()


async def _call(app: Any, path: str, body: bytes) -> int:
    """One POST through the ASGI app, as uvicorn makes it; the answer's status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect never comes while the answer is made
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[Any], asyncio.Queue[Any]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app did not start: {started}")
    return task, inbox, outbox


async def measure(requests: int, warmup: int, only: str | None = None) -> dict[str, Any]:
    import joblib
    import numpy as np

    from modelport.api.app import create_app

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare import build_models

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (model,) = build_models(work, ["lr"])
        # The same estimator, saved for a flavor every version understands.
        pickled = work / "lr.pkl"
        joblib.dump(model.estimator, pickled)
        await _push(work / "home", pickled, model.n_features)
        app = create_app(_settings(work / "home"), freeze_after_start=True)
        task, inbox, outbox = await _lifespan(app)
        try:
            for route in ROUTES:
                for n in (1, 100):
                    cell = f"{route}, {n} row{'s' if n > 1 else ''}"
                    if only is not None and cell != only:
                        continue
                    path, body = _body(route, np.asarray(model.rows[:n]).tolist())
                    status = await _call(app, path, body)
                    if status != 200:
                        raise SystemExit(f"{route}, {n} rows: HTTP {status}")
                    for _ in range(warmup):
                        await _call(app, path, body)
                    cpu, wall = time.process_time(), time.perf_counter()
                    for _ in range(requests):
                        await _call(app, path, body)
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    out[cell] = {
                        "cpu_us": cpu / requests * 1e6,
                        "wall_us": wall / requests * 1e6,
                    }
        finally:
            await inbox.put({"type": "lifespan.shutdown"})
            await outbox.get()
            await task
    return out


def compare(files: list[Path]) -> str:
    """A table of CPU µs per request: each file's runs (median), the change from the first."""
    runs = [json.loads(f.read_text()) for f in files]
    names = [r["label"] for r in runs]
    lines = [
        "| request | " + " | ".join(f"{n} CPU µs" for n in names) + " | change |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for cell in runs[0]["cells"]:
        medians = [statistics.median(r["cells"][cell]["cpu_us"]) for r in runs]
        ranges = [
            f"{m:,.0f} ({min(r['cells'][cell]['cpu_us']):,.0f}-"
            f"{max(r['cells'][cell]['cpu_us']):,.0f})"
            for m, r in zip(medians, runs, strict=True)
        ]
        change = medians[-1] / medians[0] - 1
        lines.append(f"| {cell} | " + " | ".join(ranges) + f" | {change:+.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="Measured requests per cell.")
    parser.add_argument("--warmup", type=int, default=300, help="Unmeasured requests first.")
    parser.add_argument("--repeat", type=int, default=3, help="Whole measurements, in turn.")
    parser.add_argument(
        "--only", metavar="CELL", help='One cell only, e.g. "v1 columns, 1 row" (for callgrind).'
    )
    parser.add_argument("--label", default=None, help="Name of this run (default: the commit).")
    parser.add_argument("--json", type=Path, help="Write the runs to this file.")
    parser.add_argument(
        "--compare", nargs="+", type=Path, metavar="JSON", help="Tabulate earlier --json files."
    )
    args = parser.parse_args()
    if args.compare:
        print(compare(args.compare))
        return
    import modelport

    label = args.label or Path(modelport.__file__).resolve().parents[2].name
    cells: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.repeat):
        for cell, value in asyncio.run(measure(args.requests, args.warmup, args.only)).items():
            got = cells.setdefault(cell, {"cpu_us": [], "wall_us": []})
            got["cpu_us"].append(value["cpu_us"])
            got["wall_us"].append(value["wall_us"])
    for cell, got in cells.items():
        print(
            f"{cell:24s} CPU {statistics.median(got['cpu_us']):8.0f} µs  "
            f"wall {statistics.median(got['wall_us']):8.0f} µs  (runs: "
            + ", ".join(f"{v:.0f}" for v in got["cpu_us"])
            + ")"
        )
    if args.json:
        args.json.write_text(json.dumps({"label": label, "cells": cells}, indent=1))


if __name__ == "__main__":
    main()
