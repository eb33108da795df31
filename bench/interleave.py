"""modelport (two checkouts, or one), the floor and optionally MLServer, up at once, loaded in
alternating short runs.

``bench/compare.py`` runs one server after another. On a shared virtual machine whose speed
drifts by a factor of two within minutes, a ratio between two of its runs (before and after a
change, or modelport and the floor) can move more with the machine than with the code. Here
the servers (modelport from ``--checkout`` when given, modelport from this repository, the
floor, and with ``--mlserver`` MLServer with adaptive batching) are started first, each pinned
to the server CPU and idle while another is loaded; then ``--rounds`` rounds load each in turn
for ``--seconds`` (the order reversed every other round), so each round's figures come from the
same few seconds of the machine. Reported: each server's requests/s and p99 per round and the
per-round ratios (after / before, each / floor, after / MLServer), with their medians.

    git worktree add /tmp/before <commit>
    python bench/interleave.py --checkout /tmp/before --rows 100 --connections 64
    python bench/interleave.py --mlserver --rows 100 --connections 64   # this checkout only

The servers, the model and the load are those of ``bench/compare.py`` (the LR pipeline, wrk
with one thread on the load CPU, a fresh SQLite store per modelport with the ledger on, every
server's environment from ``bench/.venvs``; MLServer answers the Open Inference Protocol, so
its rows go as one FP64 tensor, where modelport gets ``--route``). Everything listens on
127.0.0.1 and stops at the end, also on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from compare import _payload, build_models, seed, verify, wait_ready
from peers import load, procs, venvs
from peers.servers import Context, Floor, MLServer, Modelport, Peer, Running


def steal_ticks() -> int:
    """The machine's CPU time stolen by the hypervisor so far (``/proc/stat``), in ticks."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def _start(peer: Peer, ctx: Context, model: Any, stack: contextlib.ExitStack) -> Running:
    """``peer`` started as compare.py starts it (modelport: seeded, then restarted), checked
    to answer the model's own predictions, and stopped when ``stack`` closes."""
    if peer.seeded:
        seed(peer, ctx, model, 120.0, {})
    running = peer.launch(ctx, model)
    stack.callback(procs.stop, running.proc)
    wait_ready(peer, running, model, time.monotonic() + 120.0)
    return running


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = ["floor", "modelport", *(["mlserver"] if args.mlserver else [])]
    envs = venvs.ensure(names, log=print)
    servers: list[tuple[str, Peer, venvs.Env]] = []
    if args.checkout is not None:
        before = venvs.ensure(["modelport"], log=print, repo=args.checkout)["modelport"]
        servers.append(("before", Modelport(), before))
    servers += [("after", Modelport(), envs["modelport"]), ("floor", Floor(), envs["floor"])]
    if args.mlserver:
        servers.append(("mlserver-batch", MLServer(batching=True), envs["mlserver"]))
    failed = [f"{label}: {env.error}" for label, _, env in servers if env.error]
    if failed:
        raise SystemExit("; ".join(failed))
    work = Path(tempfile.mkdtemp(prefix="modelport-interleave-"))
    try:
        (model,) = build_models(work, ["lr"])
        rows = model.rows[: args.rows]
        targets: dict[str, tuple[str, Path]] = {}
        with contextlib.ExitStack() as stack:
            for label, peer, env in servers:
                assert peer.env is not None
                ctx = Context(work / label, {peer.env: env})
                running = _start(peer, ctx, model, stack)
                variants = peer.variants(model)
                variant = next(
                    (v for v in variants if v.name.endswith(f"/v1 {args.route}")), variants[0]
                )
                verify(running, variant, model)
                lua = load.script(work, label, _payload(variant, rows), running.headers)
                targets[label] = (running.url + variant.path, lua)
            for url, lua in targets.values():  # warm-up
                load.run(url, lua, args.connections, args.warmup)
            rps: dict[str, list[float]] = {name: [] for name in targets}
            p99: dict[str, list[float]] = {name: [] for name in targets}  # ms
            stolen: list[float] = []  # per round: the share of the machine's CPU time stolen
            order = list(targets)
            tick = os.sysconf("SC_CLK_TCK")
            for r in range(args.rounds):
                ticks, began = steal_ticks(), time.monotonic()
                for name in order if r % 2 == 0 else order[::-1]:
                    url, lua = targets[name]
                    got = load.run(url, lua, args.connections, args.seconds)
                    if got["errors"]:
                        raise SystemExit(f"{name}: {got['errors']} errors in round {r + 1}")
                    rps[name].append(got["rps"])
                    p99[name].append(got["p99_us"] / 1000)
                cpus = os.cpu_count() or 1
                wall = time.monotonic() - began
                stolen.append((steal_ticks() - ticks) / tick / (wall * cpus))
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in rps.items())
                    + f"; stolen {stolen[-1]:.1%}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "before": None if args.checkout is None else venvs.commit_of(args.checkout),
        "after": venvs.commit_of(venvs.REPO),
        "route": args.route,
        "rows": args.rows,
        "connections": args.connections,
        "seconds": args.seconds,
        "rps": rps,
        "p99_ms": p99,
        "stolen": stolen,
    }


def report(result: dict[str, Any]) -> str:
    """A table: each server's runs and median (requests/s, then p99), then the per-round
    ratios and their medians."""
    rps, p99 = result["rps"], result["p99_ms"]

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rps[a], rps[b], strict=True)]

    before = "" if result["before"] is None else f"before {result['before']}, "
    lines = [
        f"/v1 {result['route']}, {result['rows']} rows, {result['connections']} connections, "
        f"{len(rps['floor'])} rounds of {result['seconds']} s; {before}after {result['after']}",
        "",
        "| | median | per round |",
        "|---|---:|---|",
    ]
    for name in rps:
        runs = ", ".join(f"{v:,.0f}" for v in rps[name])
        lines.append(f"| {name} requests/s | {statistics.median(rps[name]):,.0f} | {runs} |")
    for name in p99:
        runs = ", ".join(f"{v:,.1f}" for v in p99[name])
        lines.append(f"| {name} p99 ms | {statistics.median(p99[name]):,.1f} | {runs} |")
    pairs = (
        ("after", "before"),
        ("before", "floor"),
        ("after", "floor"),
        ("after", "mlserver-batch"),
    )
    for a, b in pairs:
        if a in rps and b in rps:
            got = ratios(a, b)
            each = ", ".join(f"{v:.2f}" for v in got)
            lines.append(f"| {a} / {b} | {statistics.median(got):.2f}x | {each} |")
    stolen = result["stolen"]
    each = ", ".join(f"{v:.0%}" for v in stolen)
    lines.append(f"| CPU time stolen by the host | {statistics.median(stolen):.0%} | {each} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkout",
        type=Path,
        help="The 'before' checkout (a git worktree); without it, this checkout and the floor.",
    )
    parser.add_argument(
        "--mlserver",
        action="store_true",
        help="Also load MLServer with adaptive batching (V2 infer) in every round.",
    )
    parser.add_argument("--route", choices=("records", "columns"), default="records")
    parser.add_argument("--rows", type=int, default=100, help="Rows per request.")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5, help="Length of each run.")
    parser.add_argument("--warmup", type=int, default=2, help="Each server's warm-up, once.")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json", type=Path, help="Write the runs to this file.")
    args = parser.parse_args()
    if args.checkout is not None:
        args.checkout = args.checkout.resolve()
        if not (args.checkout / "pyproject.toml").exists():
            parser.error(f"--checkout {args.checkout}: no pyproject.toml there")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    started = time.time()
    result = run(args)
    print(report(result))
    print(f"({time.time() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
