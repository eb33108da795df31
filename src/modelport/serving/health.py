"""Version health: a model that raises, hangs or leaks fails its own requests, not the server.

Every model call of a version goes through its :class:`Health`, in the serving process:

- **Hangs.** A call is given ``predict_timeout_seconds`` (per model: the serving setting of the
  same name) from when it gets a predict thread. Past it the caller gets 504 and the version is
  marked unhealthy at once. Python cannot stop a thread, so the call runs on; while it does,
  the version gets no new call, so a hanging version holds at most its
  ``max_concurrent_batches`` predict threads, and the pool starts spares in their place (see
  :mod:`modelport.serving.pool`). A call that never got a thread is not judged.
- **Raises.** ``unhealthy_after_failures`` failed calls in a row mark it unhealthy (a success in
  between starts the count again, so a few bad inputs do not take a version down).
- **Leaks.** For custom code (scikit-learn estimators are exempt), the process's resident
  memory is read before and after each call; when the growth summed over the version's calls
  passes ``model_memory_growth_mb``, the version is marked unhealthy, so it stops growing.

An unhealthy version answers 503 ``version_unhealthy`` at once, without running. After
``unhealthy_cooldown_seconds`` (and once no call of it is still running) one request is let
through as a probe: success makes it healthy again, failure starts another cooldown. Each
change is recorded as a model event (``version_unhealthy``, ``version_recovered``). Health is
kept per process: every replica judges the versions it serves.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import VersionUnhealthy

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident memory (0 where /proc is missing: the watch is off)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Health:
    """What one version's calls did lately, in this process."""

    failures: int = 0  # failed calls in a row
    stuck: int = 0  # calls still running past their timeout
    grown: int = 0  # net resident-memory growth over its calls, in bytes
    unhealthy: str | None = None  # why, while unhealthy
    since: float = 0.0
    probing: bool = False
    calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.unhealthy is None,
            "reason": self.unhealthy,
            "since": self.since or None,
            "failures_in_a_row": self.failures,
            "calls_running_past_timeout": self.stuck,
            "memory_growth_mb": round(self.grown / 2**20, 1),
            "calls": self.calls,
        }


class HealthBook:
    """Health per (model, version); the service asks it before and tells it after each call.

    Methods that change state return the event to record (``"version_unhealthy"``,
    ``"version_recovered"``) or None.
    """

    def __init__(self, *, failures: int, cooldown: float, memory_mb: float) -> None:
        self.max_failures = failures
        self.cooldown = cooldown
        self.memory_limit = int(memory_mb * 2**20)
        self.versions: dict[tuple[str, int], Health] = {}

    def of(self, key: tuple[str, int]) -> Health:
        health = self.versions.get(key)
        if health is None:
            health = self.versions[key] = Health()
        return health

    def check(self, health: Health) -> None:
        """Raise VersionUnhealthy if a call would be refused now (before a request queues)."""
        if health.unhealthy is not None and not self._probe_due(health):
            raise self._refusal(health)

    def admit(self, health: Health) -> bool:
        """Raise VersionUnhealthy unless a call may run now: a healthy version's, or the probe
        of an unhealthy one (then True is returned)."""
        if health.unhealthy is None:
            return False
        if self._probe_due(health):
            health.probing = True
            return True
        raise self._refusal(health)

    def withdrawn(self, health: Health) -> None:
        """The probe never ran (no thread came free in time): it proved nothing either way."""
        health.probing = False

    def _probe_due(self, health: Health) -> bool:
        due = time.time() - health.since >= self.cooldown
        return due and not health.probing and health.stuck == 0

    def _refusal(self, health: Health) -> VersionUnhealthy:
        wait = max(0.0, self.cooldown - (time.time() - health.since))
        detail = "; a probe is running" if health.probing else ""
        if health.stuck:
            detail = f"; {health.stuck} call(s) still running past the timeout"
        return VersionUnhealthy(
            f"this version is unhealthy ({health.unhealthy}); it is tried again in "
            f"{wait:.0f} s{detail}"
        )

    def succeeded(self, health: Health, grown: int) -> str | None:
        health.calls += 1
        health.failures = 0
        health.grown = max(0, health.grown + grown)
        if self.memory_limit and health.grown > self.memory_limit:
            health.probing = False
            return self._mark(
                health,
                f"resident memory grew by {health.grown / 2**20:.0f} MB over its calls "
                f"(limit {self.memory_limit / 2**20:.0f} MB)",
            )
        if health.unhealthy is not None and health.probing:
            health.unhealthy, health.probing, health.since = None, False, 0.0
            return "version_recovered"
        return None

    def failed(self, health: Health, reason: str) -> str | None:
        health.calls += 1
        health.failures += 1
        if health.probing:  # the probe failed: another cooldown
            health.probing = False
            health.since = time.time()
            health.unhealthy = reason
            return None
        if health.failures >= self.max_failures:
            return self._mark(health, f"{health.failures} failed calls in a row; last: {reason}")
        return None

    def timed_out(self, health: Health, seconds: float) -> str | None:
        health.calls += 1
        health.stuck += 1
        health.probing = False
        return self._mark(health, f"a call ran past its timeout of {seconds:g} s")

    def finished_late(self, health: Health) -> None:
        health.stuck -= 1

    def _mark(self, health: Health, reason: str) -> str | None:
        was = health.unhealthy
        health.unhealthy, health.since = reason, time.time()
        return "version_unhealthy" if was is None else None
