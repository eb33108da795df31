"""Routing: which loaded version answers a request.

The :class:`Router` keeps an in-memory snapshot of models and aliases, refreshed whenever the
registry generation in the store moves (a push or alias move made by this process or another),
and the loaded versions themselves. The unversioned route always goes through an alias
(``production`` unless the caller names another), never "the latest version".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelNotFound, NotEnoughObservations, NoVersionBehindAlias
from ..flavors import LoadedModel
from ..flavors.load_cache import LoadCache
from ..inputs.adapters import Adapter
from ..inputs.schema import Schema, parse_schema
from ..once import Once
from ..registry import models as registry
from ..releases import bandits
from ..releases.bandits import ArmStats
from ..releases.consumers import Release, release_of
from ..releases.traffic import Target, pick_weighted, unit_position
from ..store import Store
from ..store.artifacts import ArtifactStore
from .prediction_cache import is_deterministic
from .segments import LiveSegments, segment_alias

EMPTY = ArmStats(0, 0.0, 0.0)

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


def _behind(name: str, model: dict[str, Any], alias: str) -> int:
    target = model["aliases"].get(alias)
    spec = model.get("spec") or {}
    if target is None and alias == registry.DEFAULT_ALIAS and spec.get("online"):
        needed = (spec.get("learning") or {}).get("min_observations", 10)
        raise NotEnoughObservations(
            f"model {name!r} learns online and answers once it has learned from {needed:g} "
            f"observations (POST /v1/models/{name}/observations); it has not yet"
        )
    if target is None:
        raise NoVersionBehindAlias(
            f"model {name!r} has no version behind the alias {alias!r}; promote one with "
            f"'modelport promote {name} VERSION --alias {alias}' or "
            f'PUT /v1/models/{name}/aliases/{alias} with {{"version": N}}'
        )
    return int(target)


@dataclass(frozen=True)
class Served:
    """A version ready to answer: its schema (compiled) and its loaded model."""

    model: str
    version: int
    task: str
    schema: Schema
    loaded: LoadedModel
    timing: PredictTiming = field(default_factory=PredictTiming, compare=False)
    deterministic: bool = False  # the same row always gets the same answer (cacheable)
    segment: str | None = None  # the segment the version answers for


@dataclass(frozen=True)
class Route:
    """The decision for one request: who answers, chosen how, and what else happens."""

    served: Served
    alias: str | None
    policy: str  # "explicit", "pinned", or the traffic policy's kind
    arm: str | None = None
    traffic_rev: int | None = None
    adapter: Adapter | None = None  # the consumer's, else the model's (see adapter_for)
    shadow: Served | None = None  # also score here, off the response path
    fallback: Served | None = None  # a canary candidate's champion, should the candidate fail
    fallback_arm: str | None = None

    def adapter_for(self, served: Served) -> Adapter | None:
        """The adapter, if it applies to the version that is about to score."""
        adapter = self.adapter
        return adapter if adapter is not None and adapter.applies_to(served.version) else None


class Router:
    """Resolves (model, version or alias) to a :class:`Served` version."""

    def __init__(self, store: Store, artifacts: ArtifactStore, cache: LoadCache) -> None:
        self.store = store
        self.artifacts = artifacts
        self.cache = cache
        self.generation = -1
        self.models: dict[str, dict[str, Any]] = {}
        self.releases: dict[str, Release] = {}
        # Bandit statistics per (model, traffic revision), read from the store by the watcher.
        self.bandit_stats: dict[tuple[str, int], dict[str, ArmStats]] = {}
        self._choosers: dict[tuple[str, int], bandits.BanditPolicy] = {}
        self._rng = np.random.default_rng()
        self._served: dict[tuple[str, int], Served] = {}
        self._loading: Once[tuple[str, int], Served] = Once()
        # Segmented models: model -> segment key, and the segment instances loaded.
        self.segment_keys: dict[str, str] = {}
        self.live: dict[str, LiveSegments] = {}
        # Told when a version is unloaded (its batcher and cache go with it).
        self.on_unload: Callable[[str, int], None] | None = None
        # Told when a model's live segments change: (model, live count, evicted now).
        self.segments_observer: Callable[[str, int, int], None] | None = None

    # -- snapshot ---------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the snapshot if the registry changed; return whether it did."""
        with self.store.read() as conn:
            gen = registry.generation(conn)
            if gen == self.generation:
                return False
            models = registry.routing_state(conn)
        releases = {}
        for name, model in models.items():
            try:
                releases[name] = release_of(model)
            except Exception as exc:  # never let one bad document stop routing for all
                log.error("cannot read the release settings of %s: %s", name, exc)
        self.models = models
        self.releases = releases
        self.segment_keys = {
            name: str(m["segment_by"]) for name, m in models.items() if m.get("segment_by")
        }
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
            segmented = name in self.segment_keys
            # Segment pointers load on demand, within the model's live-segment limit.
            for version in {
                v for a, v in model["aliases"].items() if not segmented or "@" not in a
            }:
                try:
                    await self.get(name, version)
                except Exception as exc:
                    log.error("cannot load %s version %s: %s", name, version, exc)

    # -- resolving --------------------------------------------------------------------------------

    async def _model(self, name: str) -> dict[str, Any]:
        model = self.models.get(name)
        if model is None:
            await asyncio.to_thread(self.refresh)
            model = self.models.get(name)
            if model is None:
                raise ModelNotFound(f"no model named {name!r}")
        return model

    async def resolve(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> tuple[Served, str | None]:
        """The version that answers, and the alias that chose it (None when pinned by number)."""
        model = await self._model(name)
        if version is not None:
            return await self.get(name, version), None
        alias = alias or registry.DEFAULT_ALIAS
        return await self.get(name, _behind(name, model, alias)), alias

    async def route(
        self,
        name: str,
        *,
        consumer: str,
        version: int | None = None,
        alias: str | None = None,
        unit: Callable[[str | None], str | None] = lambda field: None,
    ) -> Route:
        """Who answers a request: an explicit version or alias, else the consumer's pin, else
        the model's traffic policy. ``unit(field)`` gives the request's unit key: the
        ``X-Unit-ID`` header for None, else the value of that input field."""
        model = await self._model(name)
        release = self.releases.get(name)
        people = release.consumers.get(consumer) if release else None
        adapter = people.adapter if people and people.adapter else None
        if adapter is None and release is not None:
            adapter = release.adapter

        async def at(target: Target) -> tuple[Served, str | None]:
            if target.version is not None:
                return await self.get(name, target.version), None
            assert target.alias is not None
            return await self.get(name, _behind(name, model, target.alias)), target.alias

        if version is not None or alias is not None:
            served, used = await self.resolve(name, version=version, alias=alias)
            return Route(served, used, "explicit", adapter=adapter)
        if people and (people.pin_version is not None or people.pin_alias is not None):
            served, used = await at(Target(people.pin_alias, people.pin_version))
            return Route(served, used, "pinned", adapter=adapter)
        if release is None:
            served, used = await self.resolve(name)
            return Route(served, used, "single", adapter=adapter)
        policy, rev = release.policy, release.traffic_rev
        kind = policy.kind
        if kind == "single":
            served, used = await at(policy.control.target)
            return Route(served, used, kind, traffic_rev=rev, adapter=adapter)
        key = unit(policy.unit_field)
        u = unit_position(name, key) if key is not None else float(self._rng.random())
        if kind == "split":
            arm = pick_weighted(policy.arms, u)
        elif kind == "bandit":
            stats = self.bandit_stats.get((name, rev), {})
            chooser = self._choosers.get((name, rev))
            if chooser is None:
                chooser = bandits.make_policy(policy.bandit["algorithm"], policy.bandit["params"])
                self._choosers[(name, rev)] = chooser
            arm_stats = {a.name: stats.get(a.name, EMPTY) for a in policy.arms}
            chosen = chooser.choose(arm_stats, self._rng)
            arm = next(a for a in policy.arms if a.name == chosen)
        elif kind == "canary":
            arm = policy.arms[1] if u < policy.share else policy.arms[0]
        else:  # shadow: the primary answers; a share is mirrored
            served, used = await at(policy.arms[0].target)
            mirrored = (
                unit_position(name, key, "shadow") if key is not None else float(self._rng.random())
            )
            mirror = (await at(policy.arms[1].target))[0] if mirrored < policy.share else None
            return Route(served, used, kind, "primary", rev, adapter, shadow=mirror)
        served, used = await at(arm.target)
        if kind == "canary" and arm is policy.arms[1]:
            champion, _ = await at(policy.arms[0].target)
            return Route(
                served,
                used,
                kind,
                arm.name,
                rev,
                adapter,
                fallback=champion,
                fallback_arm="champion",
            )
        return Route(served, used, kind, arm.name, rev, adapter)

    def serving(self, name: str) -> dict[str, Any]:
        """A model's serving settings: its overrides of the server's (empty: none)."""
        return self.models.get(name, {}).get("serving") or {}

    def segment_target(self, name: str, alias: str | None, consumer: str) -> str | None:
        """The alias a segmented model's request resolves per segment: the one asked for,
        else the consumer's pinned alias, else ``production``; None when the consumer is
        pinned to a version number (every row goes to that version)."""
        if alias is not None:
            return alias
        release = self.releases.get(name)
        people = release.consumers.get(consumer) if release else None
        if people is not None and people.pin_version is not None:
            return None
        if people is not None and people.pin_alias is not None:
            return people.pin_alias
        return registry.DEFAULT_ALIAS

    def adapter(self, name: str, consumer: str) -> Adapter | None:
        """The consumer's adapter, else the model's."""
        release = self.releases.get(name)
        if release is None:
            return None
        people = release.consumers.get(consumer)
        if people is not None and people.adapter:
            return people.adapter
        return release.adapter

    async def for_segment(
        self, name: str, alias: str, segment: str, limit: int
    ) -> tuple[Served, str]:
        """The version answering ``segment`` through ``alias`` (the segment's own
        ``alias@segment``, else ``alias`` itself), and the alias that chose it.

        A segment's own version counts as live; past ``limit`` live segments the least
        recently used one is unloaded (it loads again from the store when asked for)."""
        model = await self._model(name)
        own = segment_alias(alias, segment)
        target = model["aliases"].get(own)
        if target is None:
            spec = model.get("spec") or {}
            if alias not in model["aliases"] and spec.get("online"):
                needed = (spec.get("learning") or {}).get("min_observations", 10)
                raise NotEnoughObservations(
                    f"segment {segment!r} of model {name!r} answers once it has learned from "
                    f"{needed:g} of its own observations; it has not yet"
                )
            return await self.get(name, _behind(name, model, alias)), alias
        served = await self.get(name, int(target))
        live = self.live.get(name)
        if live is None:
            live = self.live[name] = LiveSegments()
        known = segment in live
        before = live.get(segment)
        evicted = live.touch(segment, served.version, limit)
        if before is not None and before != served.version:
            self.unload(name, before)  # the segment's alias moved on (a new snapshot)
        for _, version in evicted:
            self.unload(name, version)
        if (evicted or not known) and self.segments_observer is not None:
            self.segments_observer(name, len(live), len(evicted))
        return served, own

    def unload(self, name: str, version: int) -> None:
        """Drop a loaded version, unless an alias of the whole model or a live segment still
        uses it."""
        model = self.models.get(name) or {}
        if any("@" not in a and v == version for a, v in model.get("aliases", {}).items()):
            return
        live = self.live.get(name)
        if live is not None and version in live.versions():
            return
        if self._served.pop((name, version), None) is not None and self.on_unload is not None:
            self.on_unload(name, version)

    async def get(self, name: str, version: int) -> Served:
        """A loaded version, loading it (once, however many callers wait) when needed; the
        load is registered (``add``) before any of them resumes."""
        key = (name, version)
        served = self._served.get(key)
        if served is not None:
            return served
        return await self._loading.run(key, functools.partial(self._load, name, version), self.add)

    def _load(self, name: str, version: int) -> Served:
        with self.store.read() as conn:
            row = registry.version_row(conn, name, version)
            task = registry.get_model(conn, name)["task"]
        path = self.artifacts.local_path(row.sha256)
        loaded = self.cache.load(row.flavor, row.sha256, path)
        return Served(
            name,
            version,
            task,
            parse_schema(row.input_schema),
            loaded,
            deterministic=is_deterministic(row.lineage, loaded.custom_code),
            segment=row.segment,
        )

    def add(self, served: Served) -> None:
        """Register a version loaded elsewhere (by a push), so it is not loaded twice."""
        self._served[(served.model, served.version)] = served
