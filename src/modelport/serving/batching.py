"""Adaptive batching: concurrent requests to one version share one model call.

Requests hand their validated rows to the version's :class:`Batcher` and await their share of
the results. Dispatch is deferred by one event-loop turn, so every request that became ready in
the same turn joins the batch; when the model is idle a lone request goes at once and waits for
nothing. While ``max_concurrent`` batches are running, new rows queue and go together as soon as
a batch finishes, so under load batches grow by themselves; ``max_wait_ms`` lets a batch wait
that long for more rows when another batch is still running.

Rows are counted, not requests: a batch takes at most ``max_rows`` rows, and a larger request is
split across batches. If a batch's model call fails, each request in it is retried alone, so a
failing request fails by itself and never takes its neighbours down (unless the error says
``retry_alone = False``: a timeout would only make each of them wait again, so each of them gets
that error).

A caller that knows no other request can join its batch (its request is all the process
serves: see :meth:`modelport.serving.engine.Engine.alone`) says so (``alone``); with no batch
running or queued, its call then runs at once on the caller's own task, without the loop turn,
the batch's task and the hand-over of the result (5-7 % of a 1-row request's CPU at one
connection).

Every request that enters the batcher leaves it with an answer, its predictions or an error:
a batch answers each of its requests in a ``finally``, even when it is cancelled or fails in a
way nobody planned for. Before a request queues, ``admit`` (set by the owner) may refuse it, so
a version that would refuse the call anyway (an unhealthy one) answers at once instead of after
the batch ahead of it.

The batcher does not look inside rows: a request's rows are anything with ``len`` and slicing
(a :class:`~modelport.inputs.table.Table` on the serving path, a list in tests), joined by ``concat``;
the model's outputs are sliced back per request.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelportError

Rows = Any  # len() and slicing: a Table, or a list of rows
Result = tuple[Any, Any]  # (predictions, probabilities or None), each sliceable by row
Predict = Callable[[Rows], Awaitable[Result]]

#: Histogram bucket upper bounds (rows per batch; milliseconds of queue wait).
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def as_dict(self) -> dict[str, Any]:
        labels = [str(b) for b in self.bounds] + ["+Inf"]
        return {
            "count": self.n,
            "mean": self.total / self.n if self.n else 0.0,
            "buckets": dict(zip(labels, self.counts, strict=True)),
        }


@dataclass
class BatchStats:
    """What the batcher did: batches, rows, and the distributions of size and queue wait."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    failed_batches: int = 0
    size: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    wait_ms: Histogram = field(default_factory=lambda: Histogram(WAIT_BUCKETS))

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "rows": self.rows,
            "failed_batches": self.failed_batches,
            "batch_rows": self.size.as_dict(),
            "queue_wait_ms": self.wait_ms.as_dict(),
        }


@dataclass
class _Item:
    rows: Rows
    future: asyncio.Future[Result]
    queued_at: float


class Batcher:
    """Gathers rows for one loaded version and runs them through ``predict`` in batches."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_rows: int,
        max_wait_ms: float,
        max_concurrent: int,
        concat: Callable[[list[Rows]], Rows] | None = None,
    ) -> None:
        self.predict = predict
        self.concat = concat or _join
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000
        self.max_concurrent = max_concurrent
        self.limits: tuple[Any, ...] = (max_rows, max_wait_ms, max_concurrent)
        self.stats = BatchStats()
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._running = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.served: Any = None  # the loaded version this batcher serves (set by its owner)
        self.cache: Any = None  # the version's prediction cache, if any (set by its owner)
        # Told of each model call: (rows, each request's queue wait in seconds, call seconds).
        self.observer: Callable[[int, list[float], float], None] | None = None
        # Called before a request queues; raises to refuse it (set by its owner).
        self.admit: Callable[[], None] | None = None

    async def submit(self, rows: Rows, *, alone: bool = False) -> Result:
        """Predict ``rows``; returns their predictions (and probabilities) in order.

        ``alone``: the caller knows no other request can join this one's batch (its request
        is all the process serves); with the model idle, its call runs at once on the
        caller's task, without a loop turn, a task or a hand-over of the result.
        """
        if self.admit is not None:
            self.admit()
        if alone and not self._queue and not self._running and len(rows) <= self.max_rows:
            return await self._at_once(rows)
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures = []
        for start in range(0, len(rows), self.max_rows):
            chunk = rows[start : start + self.max_rows]
            fut: asyncio.Future[Result] = loop.create_future()
            self._queue.append(_Item(chunk, fut, now))
            self._queued_rows += len(chunk)
            futures.append(fut)
        self.stats.requests += 1
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        if len(futures) == 1:
            return await futures[0]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:  # every part's error is retrieved; the first is raised
            if isinstance(outcome, BaseException):
                raise outcome
        parts: list[Result] = outcomes  # type: ignore[assignment]
        preds = _join([part[0] for part in parts])
        probas = None if parts[0][1] is None else _join([part[1] for part in parts])
        return preds, probas

    async def _at_once(self, rows: Rows) -> Result:
        """One request's batch, run on its own task: counted and answered as any batch."""
        item = _Item(rows, asyncio.get_running_loop().create_future(), time.perf_counter())
        self.stats.requests += 1
        self._running += 1
        try:
            await self._call([item])
        finally:
            self._finished()
        return item.future.result()

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.max_concurrent:
            if self._running and self._queued_rows < self.max_rows and self.max_wait > 0:
                waited = time.perf_counter() - self._queue[0].queued_at
                if waited < self.max_wait:
                    self._timer = loop.call_later(self.max_wait - waited, self._dispatch)
                    return
            items: list[_Item] = []
            count = 0
            while self._queue and count + len(self._queue[0].rows) <= self.max_rows:
                item = self._queue.popleft()
                items.append(item)
                count += len(item.rows)
            self._queued_rows -= count
            self._running += 1
            task = loop.create_task(self._run(items))
            self._tasks.add(task)  # a running task must be referenced, or it may be collected
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[_Item]) -> None:
        """Run one batch. Each of its requests is answered, whatever ends it."""
        try:
            await self._call(items)
        except Exception as exc:  # not the model's error (that is answered below): ours
            for item in items:
                _answer(item, exc)
        finally:
            # Cancelled, or left out by a fault: no request may wait forever.
            unanswered = [item for item in items if not item.future.done()]
            if unanswered:
                lost = ModelportError("the batch ended without an answer for this request")
                for item in unanswered:
                    _answer(item, lost)
            self._finished()

    def _finished(self) -> None:
        """A batch ended: rows that queued meanwhile go at the next loop turn."""
        self._running -= 1
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    async def _call(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        rows = items[0].rows if len(items) == 1 else self.concat([item.rows for item in items])
        stats = self.stats
        stats.batches += 1
        stats.rows += len(rows)
        stats.size.add(len(rows))
        for item in items:
            stats.wait_ms.add((started - item.queued_at) * 1000)
        try:
            preds, probas = await self.predict(rows)
        except Exception as exc:
            stats.failed_batches += 1
            if len(items) == 1 or not getattr(exc, "retry_alone", True):
                for item in items:
                    _answer(item, exc)
                return
            for item in items:  # retry alone: only the request at fault fails
                try:
                    _answer(item, await self.predict(item.rows))
                except Exception as alone:
                    _answer(item, alone)
            return
        if self.observer is not None:
            waits = [started - item.queued_at for item in items]
            self.observer(len(rows), waits, time.perf_counter() - started)
        start = 0
        for item in items:
            end = start + len(item.rows)
            _answer(item, (preds[start:end], None if probas is None else probas[start:end]))
            start = end


def _join(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [v for part in parts for v in part]


def _answer(item: _Item, outcome: Result | BaseException) -> None:
    if item.future.done():  # the caller went away
        return
    if isinstance(outcome, BaseException):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)
