"""One blocking call per key at a time, however many coroutines await it.

A version's load (:meth:`modelport.serving.routing.Router.get`) and a key's store lookup
(:meth:`modelport.service.core.Service.authenticate`) are asked for by every request in flight
at once. :class:`Once` runs the call once, in a thread, and every caller that comes while it runs
awaits the same result or error. Each caller waits shielded, so one that goes away (its client
left) ends neither the call nor the others' wait; an error nobody waited for is not logged as
never retrieved.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Once(Generic[K, T]):
    """The calls running now, by key."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[T]] = {}

    async def run(
        self, key: K, fn: Callable[[], T], on_result: Callable[[T], None] | None = None
    ) -> T:
        """``fn()``'s result, from the call running for ``key`` or a new one (in a thread).
        ``on_result`` is called once, on the event loop, with a call's result before any of
        its callers resumes."""
        running = self._running.get(key)
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = asyncio.ensure_future(asyncio.to_thread(fn))
            self._running[key] = running
            running.add_done_callback(functools.partial(self._ended, key, on_result))
        return await asyncio.shield(running)

    def _ended(
        self, key: K, on_result: Callable[[T], None] | None, running: asyncio.Future[T]
    ) -> None:
        if self._running.get(key) is running:
            del self._running[key]
        if running.cancelled() or running.exception() is not None:
            return  # retrieved: each caller re-raises it
        if on_result is not None:
            on_result(running.result())
