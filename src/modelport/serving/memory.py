"""Memory handed back after a burst: the C allocator's free pages returned to the system.

Under concurrent load the event loop, the predict threads and the writer all allocate (request
bodies, tables, answers, ledger rows). glibc's ``malloc`` gives each thread an arena and keeps
what is freed there for reuse, so after a burst the process stays at the burst's resident size
although the memory is free. ``malloc_trim(0)`` returns every arena's free pages.

The server calls it when traffic has gone quiet (:class:`QuietTrim`): every
``memory_trim_seconds`` it looks at the writer's count of ledger rows (every scored request
writes one; background work writes none); once that count has moved and then stood still for a
whole interval, it trims, in a thread, once. A busy server is never trimmed (the pages would be
taken again at once) and an idle one only once per burst. Elsewhere than glibc (musl, macOS)
:func:`trim` does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Any

from .health import rss_bytes

log = logging.getLogger("modelport.memory")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        fn: Any = libc.malloc_trim  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def supported() -> bool:
    """Whether this C library can return free heap to the system (glibc's ``malloc_trim``)."""
    return _TRIM is not None


def trim() -> int | None:
    """Return free heap pages to the system; the resident bytes it gave back (None where the
    C library cannot)."""
    if _TRIM is None:
        return None
    before = rss_bytes()
    _TRIM(0)  # ctypes lets go of the GIL for the call
    return max(0, before - rss_bytes())


class QuietTrim:
    """Trims once per burst, after an interval in which ``activity()`` did not move."""

    def __init__(
        self, activity: Callable[[], int], on_trim: Callable[[int], None] | None = None
    ) -> None:
        """``on_trim`` is told the bytes each trim gave back."""
        self.activity = activity
        self.on_trim = on_trim
        self._seen = activity()
        self._moved = False

    async def tick(self) -> None:
        """One look, every interval."""
        seen = self.activity()
        if seen != self._seen:
            self._seen, self._moved = seen, True
            return
        if not self._moved:
            return
        self._moved = False
        released = await asyncio.to_thread(trim)
        if released is not None:
            if self.on_trim is not None:
                self.on_trim(released)
            log.debug("traffic went quiet: %.1f MiB returned to the system", released / 2**20)
