"""Processes from /proc: a server's process tree, its resident memory, CPU pinning, stopping."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SERVER_CPU = 0
LOAD_CPU = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pin(cpu: int) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``cpu`` (nothing on a one-core machine)."""
    return ["taskset", "-c", str(cpu)] if can_pin() else []


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


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


def rss_bytes(pid: int) -> int:
    """Sum of VmRSS over ``pid`` and its descendants (pages shared between them count twice)."""
    total = 0
    for p in tree(pid):
        value = _status(p, "VmRSS")  # "123456 kB"; absent for zombies and kernel threads
        if value:
            total += int(value.split()[0]) * 1024
    return total


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


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a server started with ``start_new_session=True``: its whole group and any stragglers.

    SIGTERM to the process group first, then SIGKILL to whatever of the tree (or the group) is
    still alive after ``timeout`` seconds.
    """
    if proc.poll() is not None and not tree(proc.pid):
        return
    members = tree(proc.pid)
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


def _alive(pid: int) -> bool:
    state = _status(pid, "State")
    return state is not None and not state.startswith("Z")
