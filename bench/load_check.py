"""Load correctness: 64 connections for 60 s, zero errors, one ledger row per acknowledged row.

A real ``modelport serve`` (pinned to CPU 0) takes predict requests from an asyncio client
(pinned to CPU 1) that records every acknowledged prediction id. The client stops sending at
the deadline and waits for every request in flight, so each request ends acknowledged or failed;
the server is then stopped with SIGTERM and the SQLite ledger must hold exactly the acknowledged
rows, each once. Loopback only, bounded in time.

    python bench/load_check.py                    # 64 connections, 60 s
    python bench/load_check.py --seconds 10 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modelport.ledger import prediction_ids
from modelport.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import procs
from peers.modelport_server import IRIS_ROW, push_demo, serving


async def load(url: str, key: str, connections: int, seconds: float) -> tuple[set[str], int, int]:
    acked: set[str] = set()
    errors = requests = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=30
    ) as http:

        async def worker(n: int) -> None:
            nonlocal errors, requests
            i = 0
            while time.monotonic() < deadline:
                rows = 1 if (n + i) % 4 else 10
                i += 1
                requests += 1
                try:
                    r = await http.post(
                        "/v1/models/iris/predict", json={"inputs": [IRIS_ROW] * rows}
                    )
                except httpx.HTTPError:
                    errors += 1
                    continue
                if r.status_code != 200:
                    errors += 1
                    continue
                ids = r.json()["prediction_ids"]
                if len(ids) != rows:
                    errors += 1
                acked.update(ids)

        await asyncio.gather(*(worker(n) for n in range(connections)))
    return acked, errors, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    procs.interrupt_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="modelport-load-"))
    home = work / "home"
    try:
        # Stopped with SIGTERM at the end of the block; a graceful stop commits the ledger.
        with serving(home, stop_timeout=120) as server:
            push_demo(server)
            if procs.can_pin():
                os.sched_setaffinity(0, {procs.LOAD_CPU})
            started = time.monotonic()
            acked, errors, requests = asyncio.run(
                load(server.url, server.key, args.connections, args.seconds)
            )
            elapsed = time.monotonic() - started
        status = server.proc.returncode
        st = Store(f"sqlite:///{home / 'modelport.db'}")
        try:
            with st.read() as conn:
                stored = list(prediction_ids(conn))
        finally:
            st.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    missing = acked - set(stored)
    extra = len(stored) - len(acked)
    print(
        f"{args.connections} connections for {elapsed:.0f} s: {requests} requests, {errors} errors, "
        f"{len(acked)} rows acknowledged; ledger {len(stored)} rows, {len(set(stored))} distinct; "
        f"acknowledged but missing: {len(missing)}; rows not acknowledged: {extra}; "
        f"server exit status {status}"
    )
    ok = (
        errors == 0
        and not missing
        and len(stored) == len(set(stored)) == len(acked)
        and status == 0
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
