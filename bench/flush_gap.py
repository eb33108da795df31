"""What a disk's flush costs after the disk has had nothing to do for a while.

A 1-row ledger commit at one connection flushes once per request, and between two flushes the
server spends its request's CPU time: the flush never follows the one before it at once. On
some disks, virtual ones above all, a flush right after another answers in tens of
microseconds while one that comes after an idle gap waits for something on the far side to
wake up, and costs ten times as much. A probe that flushes back to back then says nothing about
the server's commits.

This times, in a folder on the disk in question, the disk part of a 1-row commit: six
write-ahead-log frames (a 24-byte header and a 4 KiB page each, written as SQLite writes them)
and an ``fdatasync``, each after a gap of ``g`` microseconds with the CPU busy (spinning, as a
server working on its request is) or, with ``--sleep``, idle. Every gap is measured in turn,
round after round, so that a drift of the machine falls on all of them alike; the report gives
the mean (what throughput pays), p50, p90 and p99 of each.

    python bench/flush_gap.py                              # in a temporary folder under /tmp
    python bench/flush_gap.py --dir /var/lib/modelport     # the store's own volume
    python bench/flush_gap.py --gaps 0,50,400 --rounds 5 --record
    python bench/flush_gap.py --cpu 0                      # on the CPU a benchmark pins servers to

bench/tail.py calls ``flush_after`` with the floor's time per request as the gap: the flush a
server as cheap as the floor would wait for before each answer. The gaps' loop and the
summary (and ``--gaps``' parsing) are ``modelport.store.commit_probe``'s, which times a real
minimal commit on a store instead (``modelport ledger commit-time``): this probe is the disk
alone, without SQLite. Bounded: ``--commits`` per gap and round, one file of 8 MiB, removed at
the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelport.store.commit_probe import parse_gaps, spin, timed
from peers.procs import on_cpu
from peers.report import machine

HERE = Path(__file__).resolve().parent
FRAME_HEADER, PAGE, FRAMES = 24, 4096, 6
FILE_BYTES = 8 << 20


class FlushFile:
    """A preallocated, flushed file that commits are written into, frame by frame, in a
    cycle over its length (as a write-ahead log is reused after a checkpoint)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"flush-probe-{os.getpid()}.bin"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(self.fd, bytes(FILE_BYTES), 0)
        os.fsync(self.fd)
        self.offset = 0
        self.header, self.page = b"h" * FRAME_HEADER, os.urandom(PAGE)

    def commit(self) -> None:
        """Write one commit's frames and flush them."""
        for _ in range(FRAMES):
            os.pwrite(self.fd, self.header, self.offset)
            os.pwrite(self.fd, self.page, self.offset + FRAME_HEADER)
            self.offset += FRAME_HEADER + PAGE
        os.fdatasync(self.fd)
        if self.offset + FRAMES * (FRAME_HEADER + PAGE) > FILE_BYTES:
            self.offset = 0

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def flush_after(
    directory: Path, gaps_s: list[float], *, commits: int = 1000, rounds: int = 3, busy: bool = True
) -> dict[float, dict[str, float]]:
    """The commits of a ``FlushFile`` in ``directory`` timed after each gap (seconds; the CPU
    busy or, with ``busy`` false, asleep), ``commits`` per gap and round, the gaps in turn for
    ``rounds`` rounds (``modelport.store.commit_probe.timed``): its summary per gap."""
    probe = FlushFile(directory)
    try:
        return timed(
            probe.commit, gaps_s, commits=commits, rounds=rounds, wait=spin if busy else time.sleep
        )
    finally:
        probe.close()


def report(
    args: argparse.Namespace, directory: Path, results: dict[float, dict[str, float]]
) -> str:
    waiting = "idle (sleeping)" if args.sleep else "busy (spinning)"
    lines = [
        f"### {dt.date.today().isoformat()} — a flush after an idle disk (`bench/flush_gap.py`)",
        "",
        f"{machine(loaded=False)} Command: `python bench/flush_gap.py {' '.join(sys.argv[1:])}`; in "
        f"{directory}: {FRAMES} frames of {FRAME_HEADER} + {PAGE} bytes and an fdatasync per "
        f"commit, {args.commits} commits per gap and round, {args.rounds} rounds (the gaps in "
        f"turn); the CPU {waiting} during each gap; "
        f"{'on CPU ' + str(args.cpu) if args.cpu is not None else 'on any CPU'}.",
        "",
        "| gap before the flush, us | mean ms | p50 ms | p90 ms | p99 ms | x the back-to-back mean |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    first = results[min(results)]["mean_ms"]
    for gap, s in sorted(results.items()):
        lines.append(
            f"| {gap * 1e6:g} | {s['mean_ms']:.3f} | {s['p50_ms']:.3f} | "
            f"{s['p90_ms']:.3f} | {s['p99_ms']:.3f} | {s['mean_ms'] / first:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, help="a folder on the disk to measure (default: a temporary one)"
    )
    parser.add_argument(
        "--gaps", default="0,10,20,50,100,200,400,1000", help="gaps in microseconds"
    )
    parser.add_argument("--commits", type=int, default=1000, help="commits per gap and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sleep", action="store_true", help="sleep through each gap instead of spinning"
    )
    parser.add_argument(
        "--cpu", type=int, help="run on this CPU (as a pinned server would; default: any)"
    )
    parser.add_argument(
        "--record", action="store_true", help="append the table to bench/RESULTS.md"
    )
    args = parser.parse_args()
    try:
        gaps = parse_gaps(args.gaps)
    except ValueError as exc:
        parser.error(f"--gaps: {exc}")
    if args.commits < 1 or args.rounds < 1:
        parser.error("--commits and --rounds take 1 or more")
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {args.cpu}: this process may run on {sorted(os.sched_getaffinity(0))}")
    with (
        tempfile.TemporaryDirectory(prefix="flush-gap-", dir=args.dir) as folder,
        on_cpu(args.cpu) if args.cpu is not None else contextlib.nullcontext(),
    ):
        results = flush_after(
            Path(folder), gaps, commits=args.commits, rounds=args.rounds, busy=not args.sleep
        )
    text = report(args, args.dir or Path(tempfile.gettempdir()), results)
    print(text)
    if args.record:
        with (HERE / "RESULTS.md").open("a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
