"""Processes from /proc: a server's process tree, its resident memory, CPU pinning, stopping."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

SERVER_CPU = 0
LOAD_CPU = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Run this process's block on ``cpu`` (as ``pin`` runs a server there), then put its
    CPUs back; nothing on a one-core machine. A probe of the disk run beside a pinned server
    thus waits for the disk as the server does: on a virtual machine the disk's interrupt
    lands on one CPU, and a wait that ends on another costs a wake-up across them."""
    if not can_pin():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def settle_disk() -> None:
    """Write the machine's dirty pages to disk now (``sync``), before a measured run.

    A benchmark writes a lot before it loads a server (environments installed, models saved,
    stores seeded), and the kernel writes such data back up to 30 s later, all at once. A
    server that flushes every commit, as modelport does before each answer, then waits behind
    it, and the floor, which never flushes, does not: measured at one connection, another
    process's 1.5 GB going to disk put modelport's p99 at 257 ms for one 5 s run, and nothing
    of the kind came when that data had been flushed first (bench/RESULTS.md, 2026-12-07,
    "what stalled the first cells"). Flushing first measures the server, not the harness."""
    os.sync()


def disk_requests(path: Path) -> tuple[int, int] | None:
    """Write and flush requests completed so far by the block device that holds ``path``
    (``/sys/dev/block/MAJOR:MINOR/stat``, fields 5 and 16), or None where the kernel does not
    say (no such file, or a kernel older than 5.5 without the flush fields). A difference of
    two readings over a run, divided by its commits, says how many times each commit waited
    for the device: a flush writes the data, the file's inode when it changed, and then asks
    the device to flush its cache."""
    dev = path.stat().st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    try:
        fields = stat.read_text().split()
    except OSError:
        return None
    return (int(fields[4]), int(fields[15])) if len(fields) >= 17 else None


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pin(cpu: int) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``cpu`` (nothing on a one-core machine)."""
    return ["taskset", "-c", str(cpu)] if can_pin() else []


def _stats() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, process group)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return out


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in _stats().items():
        kids.setdefault(ppid, []).append(pid)
    return kids


def group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    return [p for p, (_, g) in _stats().items() if g == pgid and _alive(p)]


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it."""
    kids = _children()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
        stack.extend(kids.get(p, []))
    return out


def _status(pid: int, key: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _kib(text: str | None) -> int | None:
    return int(text.split()[0]) * 1024 if text else None  # "123456 kB"


def _pss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return _kib(line.split(":", 1)[1])
    except OSError:
        return None
    return None


def _role(pid: int, root: int) -> str:
    """What a process of a server's tree is, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    line = " ".join(argv)
    if "resource_tracker" in line:
        return "resource tracker"
    if "spawn_main" in line or "forkserver" in line:
        return "worker"
    if pid == root:
        return "main"
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    names = [Path(a).name for a in argv if a and not a.startswith("-")] or ["?"]
    return (names[1] if len(names) > 1 and names[0].startswith("python") else names[0])[:40]


def memory(pid: int) -> list[dict[str, Any]]:
    """Each live process of ``pid``'s tree: pid, role, own VmRSS and PSS (bytes; PSS splits
    shared pages among the processes that map them, so it adds up without counting twice)."""
    out = []
    for p in sorted(tree(pid)):
        rss = _kib(_status(p, "VmRSS"))  # absent for zombies and kernel threads
        if rss is not None:
            out.append({"pid": p, "role": _role(p, pid), "rss_bytes": rss, "pss_bytes": _pss(p)})
    if any(m["role"] == "worker" for m in out):
        for m in out:
            if m["pid"] == pid:
                m["role"] = "supervisor"
    return out


def rss_bytes(pid: int) -> int:
    """Sum of VmRSS over ``pid`` and its descendants (pages shared between them count twice)."""
    return sum(m["rss_bytes"] for m in memory(pid))


def pin_tree(pid: int, cpu: int) -> list[int]:
    """Pin every process of the tree to ``cpu``; the pids that were not pinned there before."""
    moved = []
    if not can_pin():
        return moved
    for p in tree(pid):
        with contextlib.suppress(OSError):
            if os.sched_getaffinity(p) != {cpu}:
                os.sched_setaffinity(p, {cpu})
                moved.append(p)
    return moved


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> list[int]:
    """Stop a server started with ``start_new_session=True``: its whole group and any stragglers.

    SIGTERM to the process group first, then SIGKILL to whatever of the tree (or the group) is
    still alive after ``timeout`` seconds. Returns the pids still alive after that (none, unless
    a process escaped the group and could not be killed).
    """
    if proc.poll() is not None and not tree(proc.pid) and not group(proc.pid):
        return []
    members = sorted(set(tree(proc.pid)) | set(group(proc.pid)))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in members):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in members:
        if _alive(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in members):
        time.sleep(0.05)
    return [p for p in members if _alive(p)]


def wait_for_200(
    proc: subprocess.Popen[bytes], request: Callable[[], httpx.Response], deadline: float
) -> None:
    """Send ``request`` every 50 ms until it answers 200; raise RuntimeError when the server
    process exits first or the deadline passes (naming the last answer or transport error)."""
    last = "no answer"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"exited during start-up (code {code})")
        try:
            answer = request()
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}: {answer.text[:150]}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise RuntimeError(f"not ready in time (last: {last})")


def interrupt_on_sigterm() -> None:
    """Raise KeyboardInterrupt on SIGTERM too, so the ``finally`` blocks stop the servers."""

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def _alive(pid: int) -> bool:
    state = _status(pid, "State")
    return state is not None and not state.startswith("Z")


def loopback_flags(port: int) -> list[str]:
    """Host, port and log level flags every server of the benchmark is started with."""
    return ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
