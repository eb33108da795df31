"""Calling a loaded version: its batcher, its prediction cache, the predict threads, its health.

:class:`ModelCalls` owns every version's :class:`~modelport.serving.batching.Batcher` (made on
first use and again when the model's serving settings change), the
:class:`~modelport.serving.pool.PredictPool` of threads and the
:class:`~modelport.serving.health.HealthBook`. :meth:`ModelCalls.run` answers validated rows:
from the version's prediction cache where it holds them, the rest through the batcher, which
makes one model call for the requests that arrive together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Connection

from ..errors import ModelFailed, ModelTimeout, ServerSaturated
from ..inputs.table import Table
from ..registry import models as registry
from ..releases import consumers as releases
from .batching import Batcher
from .health import HealthBook, rss_bytes
from .pool import NoThread, Overdue, PredictPool
from .prediction_cache import PredictionCache, merge

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .routing import Served

log = logging.getLogger("modelport.service")


class ModelCalls:
    """How this process calls its loaded versions."""

    def __init__(self, runtime: Runtime, spawn: Callable[[Coroutine[Any, Any, None]], None]):
        """``spawn`` runs a coroutine off the request's path (the engine keeps the task)."""
        settings = runtime.settings
        self.runtime = runtime
        self.spawn = spawn
        self.health = HealthBook(
            failures=settings.unhealthy_after_failures,
            cooldown=settings.unhealthy_cooldown_seconds,
            memory_mb=settings.model_memory_growth_mb,
        )
        self.pool = PredictPool(settings.predict_threads, settings.hung_threads_max)
        self.batchers: dict[tuple[str, int], Batcher] = {}
        runtime.router.on_unload = self.unloaded

    def close(self) -> None:
        self.pool.close()

    def unloaded(self, name: str, version: int) -> None:
        """A version left memory: its batcher (and prediction cache) go too."""
        self.batchers.pop((name, version), None)

    async def run(
        self, served: Served, rows: Table, *, alone: bool = False
    ) -> tuple[Any, np.ndarray | None, str | None]:
        """Predictions, probabilities and the cache's per-row flags (None: no cache).
        ``alone``: nothing else can join the rows' batch (:meth:`Batcher.submit`)."""
        batcher = self.batcher(served)
        if batcher.cache is None:
            preds, probas = await batcher.submit(rows, alone=alone)
            return preds, probas, None
        return await self._cached(served, batcher, rows, alone)

    async def _cached(
        self, served: Served, batcher: Batcher, rows: Table, alone: bool
    ) -> tuple[list[Any], np.ndarray | None, str]:
        """Answer the rows the version's cache holds from it and score the rest."""
        cache: PredictionCache = batcher.cache
        keys = rows.row_keys()
        found = cache.lookup(keys)
        missed = [i for i, entry in enumerate(found) if entry is None]
        scored = None
        if missed:
            part = rows if len(missed) == len(rows) else rows.take(missed, raw=False)
            scored = await batcher.submit(part, alone=alone)
            preds = scored[0]
            cache.store(
                [keys[i] for i in missed],
                preds.tolist() if isinstance(preds, np.ndarray) else list(preds),
                scored[1],
            )
        self.runtime.metrics.cached(
            served.model, served.version, len(rows) - len(missed), len(missed)
        )
        return merge(rows, found, missed, scored)

    def batcher(self, served: Served) -> Batcher:
        """The version's batcher, made on first use and again when its settings change."""
        settings = self.runtime.settings
        serving = self.runtime.router.serving(served.model)
        limits = (
            serving.get("max_batch_rows", settings.batch_max_rows),
            serving.get("max_wait_ms", settings.batch_max_wait_ms),
            serving.get("max_concurrent_batches", settings.batch_max_concurrent),
            serving.get(
                "cache_max_entries",
                self._default_cache(served.model) if settings.cache_max_entries else 0,
            ),
        )
        key = (served.model, served.version)
        batcher = self.batchers.get(key)
        if batcher is None or batcher.served is not served or batcher.limits != limits:
            batcher = Batcher(
                functools.partial(self.call, served),
                max_rows=limits[0],
                max_wait_ms=limits[1],
                max_concurrent=limits[2],
                concat=Table.concat,
            )
            batcher.served = served
            batcher.limits = limits
            # Kept across a change of batching limits, not of the version's object or size.
            old = self.batchers.get(key)
            same = old is not None and old.served is served and old.limits[3] == limits[3]
            batcher.cache = (
                (old.cache if same and old is not None else PredictionCache(limits[3]))
                if limits[3] > 0 and served.deterministic
                else None
            )
            batcher.observer = functools.partial(
                self.runtime.metrics.batch, served.model, served.version
            )
            health = self.health.of(key)
            batcher.admit = functools.partial(self.health.check, health)
            self.batchers[key] = batcher
        return batcher

    def _default_cache(self, name: str) -> int:
        """The server's cache size for a model: none for models that learn online."""
        spec = self.runtime.router.models.get(name, {}).get("spec") or {}
        return 0 if spec.get("online") else self.runtime.settings.cache_max_entries

    async def call(self, served: Served, rows: Table) -> tuple[Any, np.ndarray | None]:
        """Run the model. Fast models run on the event loop; slow ones in the predict threads.

        A thread hand-off costs more than a fast scikit-learn call and makes the loop fight
        the worker threads for the GIL; a slow call on the loop would stall every other
        request. The version's measured CPU time per call decides, against inline_predict_ms
        (see :class:`~modelport.serving.routing.PredictTiming`).
        """
        timing = served.timing
        loaded = served.loaded
        health = self.health.of((served.model, served.version))
        probe = self.health.admit(health)
        inline = not loaded.custom_code and timing.inline(self.runtime.settings.inline_predict_ms)
        watch = loaded.custom_code and self.health.memory_limit > 0
        grown = 0

        def call() -> tuple[Any, np.ndarray | None]:
            nonlocal grown
            wall, cpu = time.perf_counter(), time.thread_time()
            before = rss_bytes() if watch else 0
            result = loaded.predict_with_proba(rows)
            if watch:
                grown = rss_bytes() - before
            wall_ms = (time.perf_counter() - wall) * 1000 if inline else None
            timing.add((time.thread_time() - cpu) * 1000, wall_ms)
            return result

        timeout = float(
            self.runtime.router.serving(served.model).get(
                "predict_timeout_seconds", self.runtime.settings.predict_timeout_seconds
            )
        )
        try:
            result = call() if inline else await self.pool.run(call, timeout)
        except NoThread as exc:
            # The server was saturated; the version did nothing wrong and is not judged.
            if probe:
                self.health.withdrawn(health)
            log.warning("model %s version %s did not run: %s", served.model, served.version, exc)
            raise ServerSaturated(
                f"the server is saturated: {exc}; model {served.model!r} version "
                f"{served.version} did not run"
            ) from None
        except Overdue as late:
            late.finished.add_done_callback(lambda _: self.health.finished_late(health))
            self._health_changed(served, self.health.timed_out(health, timeout))
            log.error(
                "model %s version %s: a call ran past %g s", served.model, served.version, timeout
            )
            raise ModelTimeout(
                f"model {served.model!r} version {served.version} did not answer within "
                f"{timeout:g} s of starting to run"
            ) from None
        except asyncio.CancelledError:
            if probe:  # its outcome will not be heard: the next request may probe
                self.health.withdrawn(health)
            raise
        except Exception as exc:
            log.exception("model %s version %s failed", served.model, served.version)
            reason = f"{type(exc).__name__}: {exc}"
            self._health_changed(served, self.health.failed(health, reason[:500]))
            raise ModelFailed(
                f"model {served.model!r} version {served.version} failed: {reason}"
            ) from exc
        self._health_changed(served, self.health.succeeded(health, grown))
        return result

    def _health_changed(self, served: Served, event: str | None) -> None:
        """Record a version turning unhealthy or recovering (off the request's path)."""
        if event is None:
            return
        health = self.health.of((served.model, served.version)).as_dict()
        log.warning("model %s version %s: %s (%s)", served.model, served.version, event, health)
        detail = {"version": served.version, **health}

        async def record() -> None:
            def write(conn: Connection) -> None:
                model = registry.model_row(conn, served.model)
                releases.record_event(conn, model.id, event, "modelport", detail)

            with contextlib.suppress(Exception):  # the store may be away; the log has it
                await self.runtime.writer.run(write)

        self.spawn(record())

    def health_of(self, name: str) -> list[dict[str, Any]]:
        """How this process's calls of each of the model's versions went."""
        return [
            {"version": version, **health.as_dict()}
            for (model, version), health in sorted(self.health.versions.items())
            if model == name
        ]

    def batch_stats(self, served: Served) -> dict[str, Any]:
        """What batching (and the prediction cache) did for a version since this process
        started."""
        batcher = self.batcher(served)
        cache = batcher.cache.stats() if batcher.cache is not None else None
        return {**batcher.stats.as_dict(), "cache": cache}
