"""Run a Python module with its garbage collections timed: ``python gc_probe.py OUT -m MOD ARGS``.

Each collection's duration is recorded by generation (a ``gc.callbacks`` hook: two clock reads
per collection, nothing else), and a JSON summary is written to ``OUT`` when the process exits
(``modelport serve`` exits normally on SIGTERM): per generation the count, total, largest and a
histogram of pauses. Used by ``bench/tail.py`` to tell collector pauses from other stalls.
"""

from __future__ import annotations

import atexit
import gc
import json
import runpy
import sys
import time
from typing import Any

BOUNDS_MS = (0.1, 0.5, 1, 2, 5, 10, 20, 50)


def install(out: str) -> None:
    started: list[float] = [0.0]
    by_gen: dict[int, dict[str, Any]] = {
        g: {"count": 0, "total_ms": 0.0, "max_ms": 0.0, "over_ms": {str(b): 0 for b in BOUNDS_MS}}
        for g in range(3)
    }

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        gen = by_gen[info["generation"]]
        gen["count"] += 1
        gen["total_ms"] += ms
        gen["max_ms"] = max(gen["max_ms"], ms)
        for b in BOUNDS_MS:
            if ms >= b:
                gen["over_ms"][str(b)] += 1

    def write() -> None:
        with open(out, "w") as fh:
            json.dump({str(g): v for g, v in by_gen.items()}, fh)

    gc.callbacks.append(hook)
    atexit.register(write)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python gc_probe.py OUT -m MODULE [ARGS...]")
    install(sys.argv[1])
    module = sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
