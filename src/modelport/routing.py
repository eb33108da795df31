"""Routing: which loaded version answers a request.

The :class:`Router` keeps an in-memory snapshot of models and aliases, refreshed whenever the
registry generation in the store moves (a push or alias move made by this process or another),
and the loaded versions themselves. The unversioned route always goes through an alias
(``production`` unless the caller names another), never "the latest version".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from . import registry
from .artifacts import ArtifactStore
from .errors import ModelNotFound, NoVersionBehindAlias
from .flavors import LoadedModel
from .flavors._cache import LoadCache
from .schema import Schema, parse_schema
from .store import Store

log = logging.getLogger("modelport.routing")


@dataclass
class PredictTiming:
    """How long predict calls of a version take: CPU time, and waiting time when run inline.

    CPU time is measured in the calling thread, so waiting for the GIL under load does not make
    a fast model look slow. On the event loop, wall time minus CPU time is time the call spent
    not computing: a model that sleeps or does I/O shows it on every call and is moved off the
    loop; a one-off hiccup (another thread holding the GIL) moves an average only a little. A
    model moved off the loop for waiting is tried on it again now and then (after 256 calls,
    then twice as long each time it still waits), so a false alarm does not last.
    """

    cpu_ms: float = 0.0
    wait_ms: float = 0.0  # moving average of (wall - CPU) over calls made on the loop
    calls: int = 0
    _off_since: int = -1  # the call count when waiting moved the model off the loop
    _probe_after: int = 256

    def add(self, cpu_ms: float, wall_ms: float | None) -> None:
        self.calls += 1
        weight = max(0.05, 1.0 / self.calls)  # a plain mean at first, then an EMA
        self.cpu_ms += (cpu_ms - self.cpu_ms) * weight
        if wall_ms is None:
            return
        waited = max(0.0, wall_ms - cpu_ms)
        if self._off_since >= 0:  # a probe: its one measurement decides
            self.wait_ms = waited
        else:
            self.wait_ms += (waited - self.wait_ms) * 0.2

    def inline(self, threshold_ms: float) -> bool:
        if self.calls == 0 or self.cpu_ms > threshold_ms:
            return False
        if self.wait_ms <= 4 * threshold_ms:
            if self._off_since >= 0:  # a probe came back clean
                self._off_since, self._probe_after = -1, 256
            return True
        if self._off_since < 0:
            self._off_since = self.calls
            return False
        if self.calls - self._off_since >= self._probe_after:
            self._off_since = self.calls
            self._probe_after = min(self._probe_after * 2, 1 << 16)
            return True  # probe once
        return False


@dataclass(frozen=True)
class Served:
    """A version ready to answer: its schema (compiled) and its loaded model."""

    model: str
    version: int
    task: str
    schema: Schema
    loaded: LoadedModel
    timing: PredictTiming = field(default_factory=PredictTiming, compare=False)


class Router:
    """Resolves (model, version or alias) to a :class:`Served` version."""

    def __init__(self, store: Store, artifacts: ArtifactStore, cache: LoadCache) -> None:
        self.store = store
        self.artifacts = artifacts
        self.cache = cache
        self.generation = -1
        self.models: dict[str, dict[str, Any]] = {}
        self._served: dict[tuple[str, int], Served] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[Served]] = {}

    # -- snapshot ---------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the snapshot if the registry changed; return whether it did."""
        with self.store.read() as conn:
            gen = registry.generation(conn)
            if gen == self.generation:
                return False
            models = registry.snapshot(conn)
        self.models = models
        self.generation = gen
        return True

    async def watch(self, interval: float, stop: asyncio.Event) -> None:
        """Poll the registry generation until ``stop`` is set.

        Stopping by an event rather than by cancelling lets a refresh that is running in a
        thread finish (and give its connection back) before the store closes.
        """
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
                return
            try:
                if await asyncio.to_thread(self.refresh):
                    await self.warm()
            except Exception as exc:  # the store may be briefly away; keep serving
                log.warning("registry refresh failed: %s", exc)

    async def warm(self) -> None:
        """Load every version an alias points at, so first requests do not pay for loading."""
        for name, model in list(self.models.items()):
            for version in set(model["aliases"].values()):
                try:
                    await self.get(name, version)
                except Exception as exc:
                    log.error("cannot load %s version %s: %s", name, version, exc)

    # -- resolving --------------------------------------------------------------------------------

    async def resolve(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> tuple[Served, str | None]:
        """The version that answers, and the alias that chose it (None when pinned by number)."""
        model = self.models.get(name)
        if model is None:
            await asyncio.to_thread(self.refresh)
            model = self.models.get(name)
            if model is None:
                raise ModelNotFound(f"no model named {name!r}")
        if version is not None:
            return await self.get(name, version), None
        alias = alias or registry.DEFAULT_ALIAS
        target = model["aliases"].get(alias)
        if target is None:
            raise NoVersionBehindAlias(
                f"model {name!r} has no version behind the alias {alias!r}; promote one with "
                f"'modelport promote {name} VERSION --alias {alias}' or "
                f'PUT /v1/models/{name}/aliases/{alias} with {{"version": N}}'
            )
        return await self.get(name, target), alias

    async def get(self, name: str, version: int) -> Served:
        """A loaded version, loading it (once, however many callers wait) when needed."""
        key = (name, version)
        served = self._served.get(key)
        if served is not None:
            return served
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                served = await asyncio.to_thread(self._load, name, version)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: the waiters (if any) re-raise it
                raise
            finally:
                del self._loading[key]
            self._served[key] = served
            pending.set_result(served)
            return served
        return await asyncio.shield(pending)

    def _load(self, name: str, version: int) -> Served:
        with self.store.read() as conn:
            row = registry.version_row(conn, name, version)
            task = registry.get_model(conn, name)["task"]
        path = self.artifacts.local_path(row.sha256)
        loaded = self.cache.load(row.flavor, row.sha256, path)
        return Served(name, version, task, parse_schema(row.input_schema), loaded)

    def add(self, served: Served) -> None:
        """Register a version loaded elsewhere (by a push), so it is not loaded twice."""
        self._served[(served.model, served.version)] = served
