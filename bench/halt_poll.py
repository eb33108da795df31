"""One connection, the floor and modelport, with a virtual machine's idle CPU halting at once or
polling first, in turn.

At one connection every answer of modelport waits for its ledger commit's flush, and the
server's CPU has nothing else to do meanwhile: it goes idle. On a KVM guest whose cpuidle
driver is ``haltpoll`` (``/sys/devices/system/cpu/cpuidle/current_driver``), an idle CPU first
polls for up to ``guest_halt_poll_ns`` nanoseconds (the kernel's default: 200,000), then halts,
which exits to the host, and waking it costs the host's scheduling of the vCPU. A guest set
to 0 halts at once, so every wait for the disk (a flush of ext4 without a journal is three:
the data, the inode, the device's cache) ends with a wake-up. The floor waits for nothing but
the next request.

This sets ``guest_halt_poll_ns`` to each of ``--values`` in turn, round after round (the order
reversed every other round), and loads the floor (bench/peers/floor.py) and ``modelport serve``
(ledger and keys on; LR, 1-row ``/v1`` records, the model of bench/compare.py) with one
connection under each, both pinned to CPU 0 and wrk to CPU 1. Reported: each server's
requests/s and p99 per setting, modelport's ratio to the floor per round, and what each
setting did to each server. The machine's own value is put back at the end, also on errors
and on SIGTERM.

    sudo python bench/halt_poll.py                       # 0 and 200000, 6 rounds of 5 s
    python bench/halt_poll.py --values 0,50000,200000 --record

It needs root (the parameter is written through /sys) and a guest with the haltpoll driver.
Everything listens on 127.0.0.1, every run is bounded in time, and each server's process group
is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import load, procs
from peers.report import HALT_POLL_NS, installed, machine, versions_text
from tail import VERSIONS, floor_and_modelport, one_row_bodies

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--values", default="0,200000", help="guest_halt_poll_ns values to take in turn."
    )
    parser.add_argument("--rounds", type=int, default=6, help="Rounds over every value.")
    parser.add_argument("--seconds", type=int, default=5, help="Length of each run.")
    parser.add_argument("--json", type=Path, help="Write the runs to this file.")
    parser.add_argument("--record", action="store_true", help="Append to bench/RESULTS.md.")
    args = parser.parse_args()
    try:
        values = [int(v) for v in args.values.split(",")]
    except ValueError:
        parser.error("--values takes comma-separated whole numbers of nanoseconds")
    if len(values) < 2 or min(values) < 0:
        parser.error("--values takes two or more numbers of nanoseconds, 0 or more")
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds take 1 or more")
    if not HALT_POLL_NS.exists():
        raise SystemExit(f"{HALT_POLL_NS} is not here: this machine is no haltpoll guest")
    if not os.access(HALT_POLL_NS, os.W_OK):
        raise SystemExit(f"{HALT_POLL_NS} cannot be written: run as root")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    procs.interrupt_on_sigterm()
    own = HALT_POLL_NS.read_text().strip()
    work = Path(tempfile.mkdtemp(prefix="modelport-halt-poll-"))
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    try:
        runs = measure(work, values, args)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        HALT_POLL_NS.write_text(own)
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, values, own, runs)
    print(text)
    if args.json:
        rows = [{"value": v, "server": s, "runs": r} for (v, s), r in runs.items()]
        args.json.write_text(json.dumps({"args": sys.argv, "runs": rows}, indent=1))
    if args.record:
        with (HERE / "RESULTS.md").open("a") as fh:
            fh.write("\n" + text + "\n")


def measure(
    work: Path, values: list[int], args: Any
) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """Every round: each value in turn, and under it the floor and modelport in turn."""
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with floor_and_modelport(work, []) as (model, (floor_url, _), server):
        bodies = one_row_bodies(model)
        targets = [
            ("floor", floor_url + "/predict", load.script(work, "floor", bodies["floor"], {})),
            (
                "modelport",
                f"{server.url}/v1/models/{model.name}/predict",
                load.script(work, "v1", bodies["v1"], server.headers),
            ),
        ]
        for _, url, lua in targets:  # warm-up, and a check that both answer
            warm = load.run(url, lua, 1, 2)
            if warm["errors"] or not warm["requests"]:
                raise SystemExit(f"{url} did not answer its warm-up: {warm}")
        for rnd in range(args.rounds):
            order = values if rnd % 2 == 0 else values[::-1]
            for value in order:
                HALT_POLL_NS.write_text(str(value))
                for name, url, lua in targets if rnd % 2 == 0 else targets[::-1]:
                    runs.setdefault((value, name), []).append(load.run(url, lua, 1, args.seconds))
            last = ", ".join(
                f"{name} at {value}: {runs[(value, name)][-1]['rps']:,.0f}"
                for value in values
                for name in ("floor", "modelport")
            )
            print(f"round {rnd + 1}: {last} requests/s", file=sys.stderr, flush=True)
    return runs


def report(
    args: Any, values: list[int], own: str, runs: dict[tuple[int, str], list[dict[str, Any]]]
) -> str:
    med = statistics.median
    lines = [
        f"### {dt.date.today().isoformat()} — one connection as the idle CPU halts or polls "
        "(`bench/halt_poll.py`)",
        "",
        f"{machine()} Command: `python bench/halt_poll.py {' '.join(sys.argv[1:])}`; LR, 1 row "
        f"per request (/v1 records), one connection, {args.rounds} rounds of {args.seconds} s per "
        f"server and value. The machine's own guest_halt_poll_ns: {own} (put back after). "
        f"Versions: {versions_text(installed(VERSIONS))}.",
        "",
        "| guest_halt_poll_ns | floor requests/s | floor p99 ms | modelport requests/s | "
        "modelport p99 ms | modelport x floor (median) | per round |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for value in values:
        fl, mp = runs[(value, "floor")], runs[(value, "modelport")]
        ratios = [m["rps"] / f["rps"] for f, m in zip(fl, mp, strict=True)]
        lines.append(
            f"| {value:,} | {med(r['rps'] for r in fl):,.0f} | "
            f"{med(r['p99_us'] for r in fl) / 1000:.2f} | {med(r['rps'] for r in mp):,.0f} | "
            f"{med(r['p99_us'] for r in mp) / 1000:.2f} | {med(ratios):.2f} | "
            f"{', '.join(f'{x:.2f}' for x in ratios)} |"
        )
    base = values[0]
    lines += ["", f"Against guest_halt_poll_ns {base:,} (median of the rounds' ratios):", ""]
    for value in values[1:]:
        moved = []
        for name in ("floor", "modelport"):
            pairs = zip(runs[(base, name)], runs[(value, name)], strict=True)
            moved.append(f"{name} {med(b['rps'] / a['rps'] for a, b in pairs):.2f}x")
        lines.append(f"- {value:,}: requests/s " + ", ".join(moved))
    errors = sum(r["errors"] for rs in runs.values() for r in rs)
    lines += ["", f"Errors in all runs: {errors}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
