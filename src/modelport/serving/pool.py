"""The predict threads: model calls beside the event loop, each bounded in time.

A call waits for a free thread, then has ``timeout`` seconds to run, counted from when it starts
running: waiting for a thread is the server's delay, not the model's. A call that waits longer
than its timeout is withdrawn without running (:class:`NoThread`), so nobody waits forever on a
saturated pool.

Python cannot stop a thread, so a call past its timeout (:class:`Overdue`) runs on and holds its
thread until the model returns. The pool then starts a spare thread in its place, so the calls
in time keep their ``threads`` threads: a hung model does not slow the others. At most
``spares`` spare threads run at once; past that many hung calls, further ones take threads from
the calls in time. A spare thread retires when a hung call ends. The threads are daemons: a
call that never returns does not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class NoThread(Exception):
    """No thread came free within the call's timeout; the call never ran."""


class Overdue(Exception):
    """The call ran past its timeout. It runs on; ``finished`` is done when it ends."""

    def __init__(self, finished: asyncio.Future[Any]) -> None:
        super().__init__("the call ran past its timeout")
        self.finished = finished


@dataclass(eq=False)
class _Call:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    timeout: float
    started: asyncio.Future[None]
    result: asyncio.Future[Any]
    deadline: float  # by when the pool is done with it: queue wait plus run, then run alone
    running: bool = False
    overdue: bool = False


class PredictPool:
    """``threads`` threads for calls in time, plus up to ``spares`` in place of hung ones."""

    def __init__(self, threads: int, spares: int, *, name: str = "modelport-predict") -> None:
        self.threads = threads
        self.spares = spares
        self._name = name
        self._serial = itertools.count(1)
        self._lock = threading.Condition()
        self._queue: deque[_Call] = deque()
        self._running: set[_Call] = set()
        self._alive = 0  # threads, including those held by hung calls
        self._idle = 0
        self._overdue = 0  # calls running past their timeout
        self._closed = False

    def state(self) -> dict[str, int]:
        """Threads alive, calls running (and past their timeout), calls waiting for a thread."""
        with self._lock:
            return {
                "threads": self._alive,
                "running": len(self._running),
                "overdue": self._overdue,
                "waiting": len(self._queue),
            }

    async def run(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()`` in a thread. Raises :class:`NoThread` if no thread came free within
        ``timeout`` seconds, :class:`Overdue` if it ran longer than that."""
        loop = asyncio.get_running_loop()
        call = _Call(
            fn,
            loop,
            timeout,
            loop.create_future(),
            loop.create_future(),
            time.monotonic() + 2 * timeout,
        )
        call.result.add_done_callback(_retrieve)
        with self._lock:
            if self._closed:
                raise RuntimeError("the predict threads are closed")
            self._queue.append(call)
            self._grow()
            self._lock.notify()
        try:
            started, _ = await asyncio.wait({call.started}, timeout=timeout)
            if not started and self._withdraw(call):
                raise NoThread(self._saturated(timeout))
            done, _ = await asyncio.wait({call.result}, timeout=timeout)
        except asyncio.CancelledError:
            self._withdraw(call)  # it runs on if it started; if not, it never will
            raise
        if not done and self._mark_overdue(call):
            raise Overdue(call.result)
        return await call.result  # type: ignore[no-any-return]

    def close(self) -> None:
        """Take no more calls; wait for those queued and running, but not past their time (a
        hung call is left to its thread)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            while True:
                now = time.monotonic()
                pending = [
                    c.deadline - now
                    for c in (*self._queue, *self._running)
                    if c.deadline > now and not c.overdue
                ]
                if not pending:
                    return
                self._lock.wait(min(pending))

    # -- inside the lock or in the threads -------------------------------------------------------

    def _target(self) -> int:
        return self.threads + min(self._overdue, self.spares)

    def _grow(self) -> None:
        """Start threads while calls wait that the idle threads cannot take (lock held)."""
        while self._alive < self._target() and len(self._queue) > self._idle:
            self._alive += 1
            name = f"{self._name}-{next(self._serial)}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def _withdraw(self, call: _Call) -> bool:
        """Take a call out of the queue; False if a thread has taken it already."""
        with self._lock:
            if call.running or call not in self._queue:
                return False
            self._queue.remove(call)
            self._lock.notify_all()
            return True

    def _mark_overdue(self, call: _Call) -> bool:
        """A call ran past its timeout: a spare thread takes its place. False if it has just
        ended (its result is on its way to the loop)."""
        with self._lock:
            if call not in self._running:
                return False
            call.overdue = True
            self._overdue += 1
            self._grow()
            self._lock.notify_all()
            return True

    def _saturated(self, timeout: float) -> str:
        state = self.state()
        return (
            f"no predict thread came free within {timeout:g} s ({state['running']} calls "
            f"running on {state['threads']} threads, {state['overdue']} of them past their "
            f"timeout; {state['waiting']} more waiting)"
        )

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed and self._alive <= self._target():
                    self._idle += 1
                    self._lock.wait()
                    self._idle -= 1
                if self._alive > self._target() or not self._queue:  # a spare, or closing
                    self._alive -= 1
                    self._lock.notify_all()
                    return
                call = self._queue.popleft()
                call.running = True
                call.deadline = time.monotonic() + call.timeout
                self._running.add(call)
            _settle(call.loop, call.started, None)
            failure: BaseException | None = None
            value: Any = None
            try:
                value = call.fn()
            except BaseException as exc:  # handed to the caller, as concurrent.futures does
                failure = exc
            with self._lock:
                self._running.discard(call)
                if call.overdue:
                    self._overdue -= 1
                self._lock.notify_all()
            _settle(call.loop, call.result, value, failure)
            del call, value, failure  # an idle thread keeps no result alive


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    value: Any,
    failure: BaseException | None = None,
) -> None:
    """Resolve ``future`` on its loop (from a thread); a loop closed meanwhile has no one
    waiting."""

    def resolve() -> None:
        if future.done():
            return
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(value)

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(resolve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a result's error as seen: a hung call's caller has gone by the time it ends."""
    if not future.cancelled():
        future.exception()
