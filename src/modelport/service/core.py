"""The service layer: every operation modelport offers, as plain async Python.

REST (native and Open Inference Protocol), the CLI and the dashboard call these methods; no
business rule lives in a transport. A :class:`Service` owns the store, the writer thread, the
router and the prediction threads; :meth:`start` and :meth:`stop` bracket its life.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import flavors, ledger
from ..errors import (
    ArtifactRejected,
    Conflict,
    Incompatible,
    InvalidInput,
    InvalidRequest,
    ModelFailed,
    ModelNotFound,
    ModelportError,
    ModelTimeout,
    PredictionNotFound,
    ServerSaturated,
)
from ..flavors._base import example_table
from ..flavors._cache import LoadCache
from ..ids import MAX_ID, is_version_number, new_ids
from ..inputs.adapters import Adapter
from ..inputs.schema import Field, Schema, parse_schema, table_from_payload
from ..inputs.table import Table
from ..jobs import queue as jobs
from ..jobs.runner import JobRunner
from ..learning import observations as learning
from ..learning.learner import Learner, learning_status
from ..learning.retrain import check_gate, check_triggers, due_trigger, trigger_retrain
from ..monitoring import checks as monitoring
from ..monitoring import drift, fit, performance, timeline
from ..monitoring.metrics import Metrics
from ..registry import keys
from ..registry import models as registry
from ..registry.keys import ANONYMOUS, KeyCache, Principal
from ..releases import canary, compatibility, outcomes
from ..releases import consumers as releases
from ..releases.bandits import ArmStats
from ..releases.consumers import Release
from ..serving import segments
from ..serving.batching import Batcher
from ..serving.cache import PredictionCache, is_deterministic, merge
from ..serving.health import HealthBook, rss_bytes
from ..serving.pool import NoThread, Overdue, PredictPool
from ..serving.routing import Route, Router, Served
from ..settings import Settings
from ..store import Store
from ..store.archive import Archive
from ..store.artifacts import artifact_store, is_remote
from ..store.retention import Retention, start_check
from ..store.tables import failures, models
from ..store.writer import Writer, unstorable
from ..timefmt import parse_window

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("modelport.service")
#: The keys a native predict body may have.
_PREDICT_KEYS = frozenset({"inputs", "columns", "data", "version", "alias"})
#: How a server without keys refuses a push that runs code when loaded.
_NO_AUTH_REFUSAL = flavors.Refusal(
    "this server runs without keys (--no-auth), so anyone who can reach it could push one, a "
    "web page open in your browser included: serve with API keys, or restart with "
    "--dangerously-allow-code-without-auth if you accept that",
    "{flavor} artifacts are refused by a server without keys",
)
T = TypeVar("T")


@dataclass(frozen=True)
class Scored:
    """What one scored request produced."""

    served: Served
    predictions: list[Any]
    probabilities: np.ndarray | None  # n x classes, columns in the order of loaded.classes
    ids: list[str]
    # A segmented model's request: each row's version and segment.
    versions: list[int] | None = None
    segments: list[str] | None = None

    @property
    def version(self) -> int:
        return self.served.version


class Service:
    """One modelport process's state and operations."""

    def __init__(
        self, settings: Settings, *, webhook_transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``webhook_transport``: how monitoring webhooks are sent (tests give a fake)."""
        self.settings = settings
        self.webhook_transport = webhook_transport
        self.store = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
        self.artifacts = artifact_store(settings)
        self.archive = Archive(self.artifacts)  # the ledger rows retention moved out
        self.retention = Retention(self)
        self.metrics = Metrics(max_series=settings.metrics_max_series)
        self.writer = Writer(self.store, max_batch=settings.ledger_max_batch)
        self.writer.observer = self.metrics.committed
        cache = LoadCache(settings.home / "cache" if settings.model_cache else None)
        self.router = Router(self.store, self.artifacts, cache)
        self.router.on_unload = self._unloaded
        self.router.segments_observer = self.metrics.segments_changed
        self.keys = KeyCache(self.store, settings.key_cache_seconds)
        self.health = HealthBook(
            failures=settings.unhealthy_after_failures,
            cooldown=settings.unhealthy_cooldown_seconds,
            memory_mb=settings.model_memory_growth_mb,
        )
        self.predict_pool = PredictPool(settings.predict_threads, settings.hung_threads_max)
        self._watch: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._releases: asyncio.Task[None] | None = None
        self._jobs_wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._learner: asyncio.Task[None] | None = None
        self._drift: asyncio.Task[None] | None = None
        self._archiving: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batchers: dict[tuple[str, int], Batcher] = {}
        # Idempotent requests in flight, by (kind, consumer, model, key): a repeat waits for them.
        self._keyed: dict[tuple[str, str, str, str], asyncio.Event] = {}

    # -- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        start_check(self.settings)
        await asyncio.to_thread(self.artifacts.check)
        if self.store.dialect == "postgresql" or is_remote(self.settings.artifacts_location):
            # Replicas load versions pushed through other servers: importing skops (~0.7 s,
            # ~35 MB) then would delay them past a second. A lone server skips it.
            await asyncio.to_thread(flavors.import_libraries)
        self.writer.start()
        await asyncio.to_thread(self.router.refresh)
        await self.router.warm()
        self._stopping = asyncio.Event()
        self._watch = asyncio.create_task(
            self.router.watch(self.settings.registry_poll_seconds, self._stopping)
        )
        self._releases = asyncio.create_task(self._release_loop())
        self._runner = asyncio.create_task(JobRunner(self).run(self._stopping, self._jobs_wake))
        self._loop = asyncio.get_running_loop()
        self._learner = asyncio.create_task(
            Learner(self).run(self._stopping, self.settings.learn_poll_seconds)
        )
        if self.settings.drift_check_seconds > 0:
            self._drift = asyncio.create_task(
                self._repeat(self.settings.drift_check_seconds, self.check_drift, "drift check")
            )
        if self.settings.ledger_archive_seconds > 0:
            self._archiving = asyncio.create_task(
                self.retention.run(self._stopping, self.settings.ledger_archive_seconds)
            )

    async def stop(self) -> None:
        """Stop taking work, commit everything acknowledged-to-be, release resources."""
        if self._watch is not None:
            self._stopping.set()
            await self._watch
        if self._releases is not None:
            await self._releases
        if self._runner is not None:
            await self._runner
        if self._learner is not None:
            await self._learner
        if self._drift is not None:
            await self._drift
        if self._archiving is not None:
            self.retention.stop()
            await self._archiving
        if self._background:  # shadow copies: give them their time, then let them go
            _, pending = await asyncio.wait(
                self._background, timeout=self.settings.shadow_timeout_seconds
            )
            for task in pending:
                task.cancel()
        await asyncio.to_thread(self.writer.stop)
        await asyncio.to_thread(self.predict_pool.close)
        self.store.close()
        self.metrics.close()

    async def _release_loop(self) -> None:
        """Re-read bandit statistics and judge canaries, until the service stops."""
        await self._repeat(
            self.settings.release_check_seconds, self.check_releases, "release check"
        )

    async def _repeat(
        self, interval: float, check: Callable[[], Coroutine[Any, Any, None]], what: str
    ) -> None:
        """Run ``check`` every ``interval`` seconds until the service stops."""
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            try:
                await check()
            except Exception as exc:  # the store may be briefly away; keep serving
                log.warning("%s failed: %s", what, exc)

    async def check_releases(self) -> None:
        """One round: bandit statistics into the router; canary guards judged (and acted on);
        retraining triggers fired."""
        now = time.time()
        for name, model in list(self.router.models.items()):
            if model.get("spec") and model.get("triggers"):
                reason = await self._read(functools.partial(due_trigger, name=name, now=now))
                if reason is not None:
                    job = await self.writer.run(
                        functools.partial(trigger_retrain, name=name, reason=reason)
                    )
                    if job is not None:
                        log.info("retrain of %s triggered: %s (job %s)", name, reason, job["id"])
                        self._jobs_wake.set()
        for name, release in list(self.router.releases.items()):
            policy, rev = release.policy, release.traffic_rev
            if policy.kind == "bandit":
                kind = "correct" if policy.reward == "label" else "reward"
                stats = await self._read(
                    functools.partial(outcomes.feedback_stats, model=name, rev=rev, kind=kind)
                )
                self.router.bandit_stats[(name, rev)] = {
                    arm: ArmStats(s.n, s.total, s.total_sq) for arm, s in stats.items()
                }
            elif policy.kind == "canary":
                found = await self._read(
                    functools.partial(canary.breach, model=name, policy=policy, rev=rev, now=now)
                )
                if found is not None:
                    model_id = self.router.models[name]["id"]
                    acted = await self.writer.run(
                        functools.partial(
                            canary.roll_back, model_id=model_id, policy=policy, rev=rev, found=found
                        )
                    )
                    if acted:
                        log.warning("canary of %s rolled back: %s", name, found["reason"])
                    await self._after_registry_change()

    async def authenticate(self, secret: str | None) -> Principal:
        """The caller's principal; a key not in the cache is looked up off the event loop."""
        if self.settings.no_auth:
            return ANONYMOUS
        principal = self.keys.cached(secret) if secret else None
        if principal is not None:
            return principal
        return await asyncio.to_thread(self.keys.authenticate, secret)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.store.read() as conn:
                try:
                    return fn(conn)
                except sa.exc.DataError as exc:
                    raise unstorable(exc) from None

        return await asyncio.to_thread(run)

    # -- predictions ------------------------------------------------------------------------------

    def predict(
        self,
        principal: Principal,
        name: str,
        payload: Any,
        request_id: str,
        unit_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """Validate, score and log the rows of one native predict request.

        ``unit_id`` (the ``X-Unit-ID`` header) keeps a unit on one arm of a split policy.
        ``idempotency_key`` (the ``Idempotency-Key`` header): a repeat from the same consumer
        within ``idempotency_window_seconds`` gets the first answer, from the ledger.
        (A plain function returning the coroutine: a request without a key costs one test.)
        """
        if idempotency_key is None:
            return self._predict(principal, name, payload, request_id, unit_id)
        principal.require("predict")
        since = time.time() - self.settings.idempotency_window_seconds
        consumer, key = principal.consumer, _idempotency_key(idempotency_key)
        return self._once(
            ("predict", consumer, name, key),
            lambda: self._read(lambda c: ledger.answered(c, consumer, name, key, since)),
            lambda: self._predict(principal, name, payload, request_id, unit_id, key),
        )

    async def _once(
        self,
        scope: tuple[str, str, str, str],
        stored: Callable[[], Awaitable[dict[str, Any] | None]],
        run: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run a keyed request once: the stored answer when there is one, else ``run()``.

        A repeat that arrives while the first is still running waits for it, so both cannot
        score (within this process; replicas share the answer once it is committed).
        """
        while (pending := self._keyed.get(scope)) is not None:
            await pending.wait()
        done = self._keyed[scope] = asyncio.Event()
        try:
            found = await stored()
            return found if found is not None else await run()
        finally:
            del self._keyed[scope]
            done.set()

    async def _predict(
        self,
        principal: Principal,
        name: str,
        payload: Any,
        request_id: str,
        unit_id: str | None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        principal.require("predict")
        if not isinstance(payload, dict):
            raise InvalidRequest(
                "the body must be a JSON object",
                details=[{"field": "body", "reason": "not an object"}],
            )
        unexpected = sorted(set(payload) - _PREDICT_KEYS)
        if unexpected:
            # A misspelt "version" must not quietly score with the production alias.
            hint = ""
            if not set(payload) & {"inputs", "columns", "data"}:
                # Most often a row sent as the body itself.
                hint = (
                    '; rows go under "inputs" ({"inputs": [{...}, ...]}), or as "columns" '
                    'and "data"'
                )
            raise InvalidInput(
                f"unexpected field(s) in the body: {', '.join(unexpected)}{hint}",
                details=[{"field": k, "reason": "unexpected field"} for k in unexpected],
            )
        version = _optional_int(payload.get("version"), "version")
        alias = payload.get("alias")
        if alias is not None and not isinstance(alias, str):
            raise InvalidInput(
                "'alias' must be a string",
                details=[{"field": "alias", "reason": "expected a string"}],
            )
        if version is not None and alias is not None:
            raise InvalidInput(
                "give 'version' or 'alias', not both",
                details=[{"field": "version", "reason": "conflicts with alias"}],
            )
        max_rows = self.settings.max_rows_per_request
        scored = await self.score(
            principal,
            name,
            version=version,
            alias=alias,
            request_id=request_id,
            table=lambda served, adapter: table_from_payload(
                served.schema, payload, max_rows, adapter
            ),
            unit=lambda field: unit_id if field is None else _field_of(payload, field),
            idempotency_key=idempotency_key,
        )
        out: dict[str, Any] = {
            "model": name,
            "version": scored.version,
            "predictions": scored.predictions,
            "prediction_ids": scored.ids,
        }
        if scored.versions is not None:
            out["versions"] = scored.versions
            out["segments"] = scored.segments
        if scored.probabilities is not None:
            out["probabilities"] = scored.served.loaded.probability_records(scored.probabilities)
        return out

    async def score(
        self,
        principal: Principal,
        name: str,
        *,
        version: int | None,
        alias: str | None,
        request_id: str,
        table: Callable[[Served, Adapter | None], Table],
        unit: Callable[[str | None], str | None] = lambda field: None,
        idempotency_key: str | None = None,
    ) -> Scored:
        """The prediction path every protocol shares: route, adapt, validate, score, log.

        ``table(served, adapter)`` turns the request into validated rows once the version (and
        so its schema and the consumer's adapter) is known. The rows are committed to the
        ledger before this returns. A canary candidate that fails hands the request to the
        champion; a shadow copy is scored after the answer, off its path.
        """
        principal.require("predict")
        started = time.perf_counter()
        key = self.router.segment_keys.get(name)
        if key is not None and version is None:
            target = self.router.segment_target(name, alias, principal.consumer)
            if target is not None:
                return await self._score_segments(
                    principal,
                    name,
                    key,
                    target,
                    request_id,
                    table,
                    unit,
                    started,
                    idempotency_key,
                )
        route = await self.router.route(
            name, consumer=principal.consumer, version=version, alias=alias, unit=unit
        )
        served, arm = route.served, route.arm
        try:
            rows = table(served, route.adapter_for(served))
            cached = None
            try:
                batcher = self.batcher(served)
                if batcher.cache is None:
                    preds, probas = await batcher.submit(rows)
                else:
                    preds, probas, cached = await self._cached(served, batcher, rows)
            except ModelFailed as exc:
                await self._failed(route, served, arm, principal.consumer, request_id, exc)
                if route.fallback is None:
                    raise
                served, arm = route.fallback, route.fallback_arm
                rows = table(served, route.adapter_for(served))
                preds, probas, cached = await self._run_model(served, rows)
        except ModelportError as exc:
            exc.version = served.version
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        ids = new_ids(len(rows))
        predictions = preds.tolist() if isinstance(preds, np.ndarray) else list(preds)
        await self.writer.insert_rows(
            [
                ledger.ledger_row(
                    ids[0],
                    model=name,
                    version=served.version,
                    alias=route.alias if served is route.served else None,
                    consumer=principal.consumer,
                    request_id=request_id,
                    table=rows,
                    predictions=predictions,
                    classes=served.loaded.classes,
                    probabilities=probas,
                    latency_ms=latency_ms,
                    policy=route.policy,
                    arm=arm,
                    traffic_rev=route.traffic_rev,
                    cached=cached,
                    idempotency_key=idempotency_key,
                )
            ]
        )
        self.metrics.scored(
            name, served.version, arm, principal.consumer, len(rows), time.perf_counter() - started
        )
        if route.shadow is not None:
            self._spawn(self._shadow(route, principal.consumer, request_id, table))
        return Scored(served, predictions, probas, ids)

    async def _run_model(
        self, served: Served, rows: Table
    ) -> tuple[Any, np.ndarray | None, str | None]:
        """Predictions, probabilities and the cache's per-row flags (None: no cache)."""
        batcher = self.batcher(served)
        if batcher.cache is None:
            preds, probas = await batcher.submit(rows)
            return preds, probas, None
        return await self._cached(served, batcher, rows)

    async def _cached(
        self, served: Served, batcher: Batcher, rows: Table
    ) -> tuple[list[Any], np.ndarray | None, str]:
        """Answer the rows the version's cache holds from it and score the rest."""
        cache: PredictionCache = batcher.cache
        keys = rows.row_keys()
        found = cache.lookup(keys)
        missed = [i for i, entry in enumerate(found) if entry is None]
        scored = None
        if missed:
            part = rows if len(missed) == len(rows) else rows.take(missed, raw=False)
            scored = await batcher.submit(part)
            preds = scored[0]
            cache.store(
                [keys[i] for i in missed],
                preds.tolist() if isinstance(preds, np.ndarray) else list(preds),
                scored[1],
            )
        self.metrics.cached(served.model, served.version, len(rows) - len(missed), len(missed))
        return merge(rows, found, missed, scored)

    async def _score_segments(
        self,
        principal: Principal,
        name: str,
        key: str,
        alias: str,
        request_id: str,
        table: Callable[[Served, Adapter | None], Table],
        unit: Callable[[str | None], str | None],
        started: float,
        idempotency_key: str | None = None,
    ) -> Scored:
        """A segmented model's request: rows grouped by segment, each group answered by its
        segment's version (or the fallback), logged as one ledger row per segment, and
        re-joined in the request's order. A request with an idempotency key holds rows of
        one segment (its answer is kept as one ledger row)."""
        limit = int(self._serving(name).get("max_live_segments", self.settings.max_live_segments))
        adapter = self.router.adapter(name, principal.consumer)
        first = segments.segment_of(unit(key), key)
        served, used = await self.router.for_segment(name, alias, first, limit)
        applies = adapter if adapter is not None and adapter.applies_to(served.version) else None
        try:
            rows = table(served, applies)
        except ModelportError as exc:
            exc.version = served.version
            raise
        column = rows.columns()[served.schema.names.index(key)]
        values = [segments.segment_of(v, key) for v in column.tolist()]
        groups: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            groups.setdefault(value, []).append(i)
        if idempotency_key is not None and len(groups) > 1:
            raise InvalidInput(
                "a request with an Idempotency-Key to a segmented model must hold rows of one "
                f"segment; this one holds {len(groups)}: send them separately",
                details=[{"field": key, "reason": "more than one segment with Idempotency-Key"}],
            )
        n = len(rows)
        predictions: list[Any] = [None] * n
        probas_out: np.ndarray | None = None
        ids: list[str] = [""] * n
        row_versions = [0] * n
        ledger_rows = []
        for segment, idx in groups.items():
            if segment == first:
                mine, mine_alias = served, used
            else:
                mine, mine_alias = await self.router.for_segment(name, alias, segment, limit)
            if mine.schema is served.schema or mine.schema == served.schema:
                part = rows if len(idx) == n else rows.take(idx)
            else:  # a segment's version with a schema of its own: validate against it
                own = adapter if adapter is not None and adapter.applies_to(mine.version) else None
                part = table(mine, own).take(idx)
            try:
                preds, probas, cached = await self._run_model(mine, part)
            except ModelportError as exc:
                exc.version = mine.version
                if isinstance(exc, ModelFailed):
                    route = Route(mine, mine_alias, "segment")
                    await self._failed(route, mine, None, principal.consumer, request_id, exc)
                raise
            plain = preds.tolist() if isinstance(preds, np.ndarray) else list(preds)
            part_ids = new_ids(len(idx))
            if probas is not None:
                if probas_out is None:
                    probas_out = np.zeros((n, probas.shape[1]))
                if probas.shape[1] != probas_out.shape[1]:
                    raise Conflict(
                        f"the versions of model {name!r} answering segments of one request "
                        "have different classes; send the segments separately"
                    )
                probas_out[idx] = probas
            for j, i in enumerate(idx):
                predictions[i] = plain[j]
                ids[i] = part_ids[j]
                row_versions[i] = mine.version
            latency_ms = (time.perf_counter() - started) * 1000
            ledger_rows.append(
                ledger.ledger_row(
                    part_ids[0],
                    model=name,
                    version=mine.version,
                    alias=mine_alias,
                    consumer=principal.consumer,
                    request_id=request_id,
                    table=part,
                    predictions=plain,
                    classes=mine.loaded.classes,
                    probabilities=probas,
                    latency_ms=latency_ms,
                    policy="segment",
                    segment=segment,
                    cached=cached,
                    idempotency_key=idempotency_key,
                )
            )
        await self.writer.insert_rows(ledger_rows)
        elapsed = time.perf_counter() - started
        for idx in groups.values():
            self.metrics.scored(
                name, row_versions[idx[0]], None, principal.consumer, len(idx), elapsed
            )
        return Scored(served, predictions, probas_out, ids, row_versions, values)

    def _unloaded(self, name: str, version: int) -> None:
        """A version left memory: its batcher (and prediction cache) go too."""
        self._batchers.pop((name, version), None)

    async def _shadow(
        self,
        route: Route,
        consumer: str,
        request_id: str,
        table: Callable[[Served, Adapter | None], Table],
    ) -> None:
        """Score a shadow copy and log it; whatever goes wrong stays here (and in failures)."""
        shadow = route.shadow
        assert shadow is not None
        started = time.perf_counter()
        try:
            rows = table(shadow, route.adapter_for(shadow))
            preds, probas = await asyncio.wait_for(
                self.batcher(shadow).submit(rows), self.settings.shadow_timeout_seconds
            )
            latency_ms = (time.perf_counter() - started) * 1000
            ids = new_ids(len(rows))
            row = ledger.ledger_row(
                ids[0],
                model=shadow.model,
                version=shadow.version,
                alias=None,
                consumer=consumer,
                request_id=request_id,
                table=rows,
                predictions=preds.tolist() if isinstance(preds, np.ndarray) else list(preds),
                classes=shadow.loaded.classes,
                probabilities=probas,
                latency_ms=latency_ms,
                policy=route.policy,
                arm="shadow",
                traffic_rev=route.traffic_rev,
                shadow=True,
            )
            await self.writer.insert_rows([row])
            self.metrics.shadow.child(shadow.model, str(shadow.version), "ok").inc()
        except Exception as exc:
            self.metrics.shadow.child(shadow.model, str(shadow.version), "failed").inc()
            if isinstance(exc, asyncio.TimeoutError):
                exc = ModelFailed(f"timed out after {self.settings.shadow_timeout_seconds:g} s")
            log.warning(
                "shadow scoring of %s version %s failed: %s", shadow.model, shadow.version, exc
            )
            with contextlib.suppress(Exception):
                await self._failed(route, shadow, "shadow", consumer, request_id, exc)

    async def _failed(
        self,
        route: Route,
        served: Served,
        arm: str | None,
        consumer: str,
        request_id: str,
        exc: BaseException,
    ) -> None:
        """Record a failed scoring (error rates per arm are read from the store)."""
        row = {
            "ts": time.time(),
            "model": served.model,
            "version": served.version,
            "policy": route.policy,
            "arm": arm,
            "traffic_rev": route.traffic_rev,
            "consumer": consumer,
            "request_id": request_id,
            "error": str(exc)[:2000],
        }
        await self.writer.run(lambda conn: conn.execute(failures.insert().values(**row)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)  # referenced until done, and awaited at stop
        task.add_done_callback(self._background.discard)

    def batcher(self, served: Served) -> Batcher:
        """The version's batcher, made on first use and again when its settings change."""
        settings = self.settings
        serving = self._serving(served.model)
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
        batcher = self._batchers.get(key)
        if batcher is None or batcher.served is not served or batcher.limits != limits:
            batcher = Batcher(
                lambda rows: self._score(served, rows),
                max_rows=limits[0],
                max_wait_ms=limits[1],
                max_concurrent=limits[2],
                concat=Table.concat,
            )
            batcher.served = served
            batcher.limits = limits
            # Kept across a change of batching limits, not of the version's object or size.
            old = self._batchers.get(key)
            same = old is not None and old.served is served and old.limits[3] == limits[3]
            batcher.cache = (
                (old.cache if same and old is not None else PredictionCache(limits[3]))
                if limits[3] > 0 and served.deterministic
                else None
            )
            batcher.observer = functools.partial(self.metrics.batch, served.model, served.version)
            health = self.health.of(key)
            batcher.admit = functools.partial(self.health.check, health)
            self._batchers[key] = batcher
        return batcher

    def _default_cache(self, name: str) -> int:
        """The server's cache size for a model: none for models that learn online."""
        spec = self.router.models.get(name, {}).get("spec") or {}
        return 0 if spec.get("online") else self.settings.cache_max_entries

    async def get_serving(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: registry.get_serving(c, name))

    async def set_serving(self, principal: Principal, name: str, config: Any) -> dict[str, Any]:
        """Per-model serving settings (batching); every server applies them on its next refresh."""
        principal.require("admin")
        out = await self.writer.run(lambda c: registry.set_serving(c, name, config))
        await asyncio.to_thread(self.router.refresh)
        return out

    async def batch_stats(self, principal: Principal, name: str, version: int) -> dict[str, Any]:
        """What batching did for a version since this process started."""
        principal.require("read")
        served = await self.router.get(name, version)
        batcher = self.batcher(served)
        cache = batcher.cache.stats() if batcher.cache is not None else None
        return {"model": name, "version": version, **batcher.stats.as_dict(), "cache": cache}

    async def served(
        self, principal: Principal, name: str, version: int | None = None
    ) -> tuple[Served, str | None]:
        """The version a request would reach (for metadata and readiness checks)."""
        if not (principal.allows("predict") or principal.allows("read")):
            principal.require("predict")
        return await self.router.resolve(name, version=version)

    async def _score(self, served: Served, rows: Table) -> tuple[Any, np.ndarray | None]:
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
        inline = not loaded.custom_code and timing.inline(self.settings.inline_predict_ms)
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
            self._serving(served.model).get(
                "predict_timeout_seconds", self.settings.predict_timeout_seconds
            )
        )
        try:
            result = call() if inline else await self.predict_pool.run(call, timeout)
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

    def _serving(self, name: str) -> dict[str, Any]:
        """A model's serving settings (overrides of the server's)."""
        return self.router.models.get(name, {}).get("serving") or {}

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
                await self.writer.run(write)

        self._spawn(record())

    async def version_health(self, principal: Principal, name: str) -> dict[str, Any]:
        """How this server's calls of each of the model's versions went."""
        principal.require("read")
        await self._read(lambda c: registry.get_model(c, name))
        return {
            "model": name,
            "versions": [
                {"version": version, **health.as_dict()}
                for (model, version), health in sorted(self.health.versions.items())
                if model == name
            ],
        }

    async def get_prediction(self, principal: Principal, prediction_id: str) -> dict[str, Any]:
        """One prediction with its feedback. Keys with ``read`` see every prediction; other keys
        only their consumer's own (for feedback flows). Anyone else's is "not found", like an
        unknown id, so ids cannot be probed."""
        record = await self._read(lambda c: ledger.get_prediction(c, prediction_id, self.archive))
        if not principal.allows("read") and record["consumer"] != principal.consumer:
            raise PredictionNotFound(f"no prediction with id {prediction_id!r}")
        return record

    async def list_predictions(
        self, principal: Principal, name: str, **filters: Any
    ) -> dict[str, Any]:
        """A page of a model's predictions: all of them for ``read`` keys, else the caller's."""
        mine = None if principal.allows("read") else principal.consumer

        def run(conn: Connection) -> dict[str, Any]:
            registry.get_model(conn, name)
            return ledger.list_predictions(conn, name, consumer=mine, **filters)

        return await self._read(run)

    async def feedback(self, principal: Principal, payload: Any) -> dict[str, Any]:
        """Store labels and rewards for known predictions; report the rest per item."""
        principal.require("feedback")
        if not isinstance(payload, dict):
            raise InvalidRequest(
                "the body must be a JSON object",
                details=[{"field": "body", "reason": "not an object"}],
            )
        good, rejected = ledger.check_feedback_items(payload.get("feedback"))
        good_by_index = {item["index"]: item for item in good}
        accepted: list[dict[str, Any]] = []
        if good:
            pids = [g["prediction_id"] for g in good]
            archived = await self._read(lambda c: ledger.archived(c, pids, self.archive))

            def store(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
                stored, unknown = ledger.store_feedback(conn, good, principal.consumer, archived)
                labelled = [g for g in good if g.get("label") is not None]
                if labelled and stored:
                    kept = {a["prediction_id"] for a in stored}
                    learning.observe_feedback(
                        conn, [g for g in labelled if g["prediction_id"] in kept], archived
                    )
                return stored, unknown

            accepted, unknown = await self.writer.run(store)
            rejected = sorted(rejected + unknown, key=lambda r: r["index"])
            for item in accepted:
                kind = (
                    "label" if good_by_index[item["index"]].get("label") is not None else "reward"
                )
                self.metrics.feedback.child(item["model"], str(item["version"]), kind).inc()
        if not accepted:
            raise InvalidInput(
                "no feedback item was accepted",
                details=[
                    {"row": r["index"], "field": "prediction_id", "reason": r["reason"]}
                    for r in rejected
                ],
            )
        return {"accepted": accepted, "rejected": rejected}

    # -- registry ---------------------------------------------------------------------------------

    async def create_model(
        self, principal: Principal, name: str, task: str, description: str
    ) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(
            lambda c: registry.create_model(
                c, name, task=task, description=description, actor=principal.consumer
            )
        )
        await asyncio.to_thread(self.router.refresh)
        return out

    async def list_models(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(registry.list_models)

    async def get_model(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: registry.get_model(c, name))

    async def list_versions(self, principal: Principal, name: str) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: registry.list_versions(c, name))

    async def get_version(
        self, principal: Principal, name: str, version: int, *, stats: bool = False
    ) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: registry.get_version(c, name, version, stats=stats))

    async def set_alias(
        self, principal: Principal, name: str, alias: str, version: int, reason: str = ""
    ) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(
            lambda c: registry.set_alias(
                c, name, alias, version, actor=principal.consumer, reason=reason
            )
        )
        await self._after_registry_change()
        return out

    async def rollback(
        self, principal: Principal, name: str, alias: str, reason: str = ""
    ) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(
            lambda c: registry.rollback_alias(
                c, name, alias, actor=principal.consumer, reason=reason
            )
        )
        await self._after_registry_change()
        return out

    async def alias_history(
        self, principal: Principal, name: str, alias: str | None = None
    ) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: registry.alias_history(c, name, alias))

    async def _change(self, principal: Principal, fn: Callable[[Connection], T]) -> T:
        """An admin's registry change: run on the writer, then every route sees it."""
        principal.require("admin")
        out = await self.writer.run(fn)
        await self._after_registry_change()
        return out

    def router_changed_from_thread(self) -> None:
        """A registry change made from a worker thread (the learner): refresh the routes."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._after_registry_change(), self._loop)

    async def learning_status(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: learning_status(c, name))

    async def _after_registry_change(self) -> None:
        await asyncio.to_thread(self.router.refresh)
        await self.router.warm()

    # -- the learning loop --------------------------------------------------------------------

    async def algorithms(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("read")
        from ..learning import algorithms

        return algorithms.catalog()

    async def create_from_algorithm(
        self, principal: Principal, doc: dict[str, Any]
    ) -> dict[str, Any]:
        """A model made from a built-in algorithm: no code, no version until it has learned."""
        return await self._change(
            principal,
            functools.partial(learning.create_algorithm_model, doc=doc, actor=principal.consumer),
        )

    async def observe(
        self,
        principal: Principal,
        name: str,
        rows: Any,
        source: str = "api",
        idempotency_key: str | None = None,
        *,
        text: bool = False,
    ) -> dict[str, Any]:
        """Store labelled rows (every bad one rejected with its index and reason) before the
        answer; online models learn from them in the background. ``text``: the cells are
        text from a CSV file, read as their fields' types row by row.

        With ``idempotency_key``, rows already stored under that key (within
        ``idempotency_window_seconds``) are the answer and nothing is stored again.
        """
        principal.require("feedback")
        model_id, spec = await self._read(
            lambda c: (registry.model_row(c, name).id, learning.spec_of(c, name))
        )
        good, positions, rejected = learning.check_observations(spec, rows, text=text)
        key = None if idempotency_key is None else _idempotency_key(idempotency_key)
        since = time.time() - self.settings.idempotency_window_seconds
        limit = int(self._serving(name).get("max_segments", self.settings.max_segments))

        def write(c: Connection) -> tuple[list[int], bool, dict[int, str], list[str]]:
            # In the writer: two calls cannot both take the last free segment.
            blocked, refused, have = learning.over_segment_limit(c, model_id, spec, good, limit)
            keep = [row for j, row in enumerate(good) if j not in blocked]
            ids, new = (
                learning.store_observations_once(c, model_id, keep, source, key, since)
                if keep
                else ([], False)
            )
            if refused:
                detail = {"refused": refused[:20], "segments": have, "max_segments": limit}
                releases.record_event(c, model_id, "segment_limit", principal.consumer, detail)
            return ids, new, blocked, refused

        ids: list[int] = []
        if good:
            ids, new, blocked, refused = await self.writer.run(write)
            if new:
                self.metrics.observations.child(name, source).inc(len(ids))
            if refused:
                log.warning("model %s: new segments refused at its limit of %d", name, limit)
                field = spec["segment_by"]
                rejected = sorted(
                    rejected
                    + [
                        {
                            "index": positions[j],
                            "field": field,
                            "reason": f"segment {segment!r} would be new, and the model has "
                            f"its limit of {limit} segments (serving setting max_segments)",
                        }
                        for j, segment in sorted(blocked.items())
                    ],
                    key=lambda r: int(r["index"]),
                )
        if not ids:
            raise InvalidInput(
                "no observation was accepted",
                details=[
                    {"row": r["index"], "field": r["field"], "reason": r["reason"]}
                    for r in rejected
                ],
            )
        return {
            "model": name,
            "accepted": len(ids),
            "first_id": ids[0],
            "last_id": ids[-1],
            "rejected": rejected,
        }

    async def snapshot(self, principal: Principal, name: str) -> dict[str, Any]:
        """A dataset of the model's observations so far (Parquet, content-hashed)."""
        principal.require("admin")
        data = await self._read(lambda c: learning.snapshot_data(c, name))
        # Off the writer: a remote artifact store may take a while.
        sha, _ = await asyncio.to_thread(self.artifacts.put, io.BytesIO(data.parquet))
        return await self.writer.run(lambda c: learning.record_snapshot(c, data, sha))

    async def dataset(self, principal: Principal, dataset_id: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: learning.get_dataset(c, dataset_id))

    async def create_job(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """Queue a retrain or replay job (admin; a worker process of some server runs it), or
        record the start of a batch scoring run (``score``: predict and read scopes; the client
        runs it and reports)."""
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind in jobs.CLIENT_KINDS:
            principal.require("predict")
            principal.require("read")
        else:
            principal.require("admin")
        params = jobs.check_params(kind, doc)

        def create(conn: Connection) -> dict[str, Any]:
            if kind == "score":
                registry.version_row(conn, name, params["version"])  # 404 for an unknown one
            elif kind == "retrain":
                learning.spec_of(conn, name)  # 409 for a pushed model: nothing to retrain
                model_id = registry.model_row(conn, name).id
                running = jobs.active_job(conn, model_id, "retrain")
                if running is not None:
                    raise Conflict(f"model {name!r} has a retrain job in progress: job {running}")
            else:
                registry.version_row(conn, name, params["version"])  # 404 for an unknown one
            return jobs.create_job(conn, name, str(kind), params, actor=principal.consumer)

        out = await self.writer.run(create)
        self._jobs_wake.set()
        return out

    async def job(self, principal: Principal, job_id: int) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: jobs.get_job(c, job_id))

    async def list_jobs(self, principal: Principal, name: str) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: jobs.list_jobs(c, name))

    async def report_run(self, principal: Principal, job_id: int, doc: Any) -> dict[str, Any]:
        """A client-run job's progress and heartbeat (its creator, or an admin)."""
        principal.require("predict")
        progress, message = jobs.check_report(doc)
        admin = principal.allows("admin")
        return await self.writer.run(
            lambda c: jobs.report_run(
                c, job_id, progress, message, actor=principal.consumer, admin=admin
            )
        )

    async def finish_run(self, principal: Principal, job_id: int, doc: Any) -> dict[str, Any]:
        """End a client-run job with its result (its creator, or an admin)."""
        principal.require("predict")
        status, result, error = jobs.check_finish(doc)
        admin = principal.allows("admin")
        return await self.writer.run(
            lambda c: jobs.finish_run(
                c, job_id, status, result=result, error=error, actor=principal.consumer, admin=admin
            )
        )

    async def artifact(self, principal: Principal, name: str, version: int) -> tuple[Path, str]:
        """A version's artifact file and sha256, for batch scoring (predict and read scopes)."""
        principal.require("predict")
        principal.require("read")
        row = await self._read(lambda c: registry.version_row(c, name, version))
        return self.artifacts.local_path(row.sha256), str(row.sha256)

    async def cancel_job(self, principal: Principal, job_id: int) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(lambda c: jobs.request_cancel(c, job_id))
        self._jobs_wake.set()
        return out

    async def get_triggers(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(
            lambda c: {"model": name, "triggers": registry.model_row(c, name).triggers}
        )

    async def set_triggers(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """When to retrain by itself (``{"triggers": null}`` removes them)."""
        return await self._set_model_document(
            principal, name, doc, "triggers", check_triggers, learned_only=True
        )

    async def get_gate(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: {"model": name, "gate": registry.model_row(c, name).gate})

    async def set_gate(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """The promotion gate retrains pass through (``{"gate": null}`` removes it)."""
        return await self._set_model_document(principal, name, doc, "gate", check_gate)

    async def _set_model_document(
        self,
        principal: Principal,
        name: str,
        doc: Any,
        key: str,
        check: Callable[[Any], Any],
        *,
        learned_only: bool = False,
        audit: Callable[[Any], Any] | None = None,
    ) -> dict[str, Any]:
        """Store ``{key: {...}}`` (or ``{key: null}``) in the model's column ``key``, audited as
        the event ``<key>_set`` (with ``audit(value)`` when given: what the event may show);
        every server's release loop picks it up. ``learned_only`` refuses models pushed as
        artifacts (409)."""
        if not isinstance(doc, dict) or set(doc) != {key}:
            raise InvalidInput(
                f'the body must be {{"{key}": {{...}}}} or {{"{key}": null}}',
                details=[{"field": "body", "reason": f'expected an object with the key "{key}"'}],
            )
        value = check(doc[key])

        def store(conn: Connection) -> dict[str, Any]:
            if learned_only:
                learning.spec_of(conn, name)
            model = registry.model_row(conn, name)
            conn.execute(models.update().where(models.c.id == model.id).values({key: value}))
            shown = audit(value) if audit is not None else value
            releases.record_event(conn, model.id, f"{key}_set", principal.consumer, {key: shown})
            registry.bump_generation(conn)
            return {"model": name, key: value}

        return await self._change(principal, store)

    async def get_segments(self, principal: Principal, name: str) -> dict[str, Any]:
        """A model's segment key, its segments (versions, aliases) and which are loaded here."""
        principal.require("read")
        live = dict((self.router.live.get(name) or segments.LiveSegments()).items())
        return await self._read(lambda c: segments.describe(c, name, live))

    async def set_segments(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """A pushed model's segment key (``{"field": null}`` removes it); audited."""
        return await self._change(
            principal,
            lambda c: segments.set_segment_key(c, name, doc, actor=principal.consumer),
        )

    async def get_traffic(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: releases.get_traffic(c, name))

    async def set_traffic(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """Replace the traffic policy of a model's unversioned routes (a new experiment)."""
        return await self._change(
            principal, lambda c: releases.set_traffic(c, name, doc, actor=principal.consumer)
        )

    async def list_consumers(self, principal: Principal, name: str) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: releases.list_consumers(c, name))

    async def get_consumer(self, principal: Principal, name: str, consumer: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: releases.get_consumer(c, name, consumer))

    async def set_consumer(
        self, principal: Principal, name: str, consumer: str, doc: Any
    ) -> dict[str, Any]:
        """Pin a consumer to a version or alias and/or give it an adapter."""
        return await self._change(
            principal,
            lambda c: releases.set_consumer(c, name, consumer, doc, actor=principal.consumer),
        )

    async def delete_consumer(
        self, principal: Principal, name: str, consumer: str
    ) -> dict[str, Any]:
        return await self._change(
            principal,
            lambda c: releases.delete_consumer(c, name, consumer, actor=principal.consumer),
        )

    async def get_adapter(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(
            lambda c: {"model": name, "adapter": registry.model_row(c, name).adapter}
        )

    async def set_adapter(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """The model-wide adapter (consumers with their own use theirs); null removes it."""
        return await self._change(
            principal, lambda c: releases.set_model_adapter(c, name, doc, actor=principal.consumer)
        )

    async def events(
        self, principal: Principal, name: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        principal.require("read")
        found = await self._read(lambda c: releases.list_events(c, name, limit))
        return [{**e, "detail": monitoring.shown_event(e["kind"], e["detail"])} for e in found]

    async def experiment(
        self,
        principal: Principal,
        name: str,
        *,
        metric: str | None = None,
        revision: int | None = None,
        alpha: float = 0.05,
    ) -> dict[str, Any]:
        """The report of a traffic experiment: per arm, traffic, feedback, the metric with its
        interval, and the difference to the control arm with its test."""
        principal.require("read")
        return await self._read(
            lambda c: outcomes.report_for(c, name, metric=metric, revision=revision, alpha=alpha)
        )

    # -- monitoring -------------------------------------------------------------------------------

    async def performance(
        self,
        principal: Principal,
        name: str,
        *,
        window: str | None = None,
        version: int | None = None,
        buckets: int = 24,
        consumer: str | None = None,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Live metrics per version from feedback labels, over a window cut into buckets
        (of one consumer's, one segment's predictions when given)."""
        principal.require("read")
        span = parse_window(window, "window", 86400.0)
        timeline.check_buckets(buckets)
        until = time.time()
        return await self._read(
            functools.partial(
                performance.report,
                name=name,
                since=until - span,
                until=until,
                version=version,
                buckets=buckets,
                consumer=consumer,
                segment=segment,
                max_rows=self.settings.performance_max_rows,
                archive=self.archive,
            )
        )

    async def drift(
        self,
        principal: Principal,
        name: str,
        *,
        window: str | None = None,
        version: int | None = None,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Per version with traffic in the window (of one segment when given): its inputs and
        predictions against its reference."""
        principal.require("read")
        return await self._read(
            functools.partial(
                monitoring.drift_report,
                name=name,
                window=window,
                version=version,
                segment=segment,
                max_rows=self.settings.drift_max_rows,
            )
        )

    async def get_monitoring(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")

        def run(conn: Connection) -> dict[str, Any]:
            doc = registry.model_row(conn, name).monitoring
            if not principal.allows("admin"):
                doc = monitoring.masked(doc)  # the webhook URL may hold its secret
            return {
                "model": name,
                "monitoring": doc,
                "thresholds": monitoring.thresholds_of(doc),
                "window_seconds": monitoring.window_of(doc),
            }

        return await self._read(run)

    async def set_monitoring(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """Drift thresholds, window and webhook (``{"monitoring": null}`` removes them)."""
        return await self._set_model_document(
            principal, name, doc, "monitoring", monitoring.check_monitoring, audit=monitoring.masked
        )

    async def set_reference(
        self, principal: Principal, name: str, version: int, doc: Any
    ) -> dict[str, Any]:
        """A version's drift reference from a window of its own logged traffic (audited)."""
        principal.require("admin")
        since, until = monitoring.check_reference_window(doc)
        return await self.writer.run(
            functools.partial(
                monitoring.set_reference_from_traffic,
                name=name,
                version=version,
                since=since,
                until=until,
                actor=principal.consumer,
                max_rows=self.settings.drift_max_rows,
            )
        )

    async def check_drift(self) -> None:
        """One round of the background drift check: a ``drift`` or ``drift_cleared`` event
        (and the model's webhook) when a version's verdict changes."""
        for name, model in list(self.router.models.items()):
            found = await self._read(
                functools.partial(
                    monitoring.drift_report,
                    name=name,
                    max_rows=self.settings.drift_max_rows,
                    with_settings=True,
                )
            )
            settings = found.pop("settings", None) or {}
            for entry in found["versions"]:
                if not monitoring.judged(entry, found["thresholds"]):
                    continue
                detail = monitoring.event_detail(entry, found["window"])
                try:
                    kind = await self.writer.run(
                        functools.partial(
                            monitoring.transition,
                            model_id=model["id"],
                            version=entry["version"],
                            drifted=entry["drifted"],
                            detail=detail,
                        )
                    )
                except Exception as exc:  # another server recorded it first
                    log.info("drift state of %s v%s: %s", name, entry["version"], exc)
                    continue
                if kind is not None:
                    log.warning("%s: %s version %s %s", kind, name, entry["version"], detail)
                    if settings.get("webhook"):
                        payload = monitoring.webhook_payload(name, kind, detail)
                        await self._webhook(model["id"], settings["webhook"], payload)

    async def _webhook(self, model_id: int, url: str, payload: dict[str, Any]) -> None:
        """POST a monitoring event; a failure is logged and recorded, never raised."""
        import httpx

        timeout = self.settings.webhook_timeout_seconds
        try:
            async with httpx.AsyncClient(transport=self.webhook_transport, timeout=timeout) as http:
                response = await asyncio.wait_for(http.post(url, json=payload), timeout * 2)
                response.raise_for_status()
        except Exception as exc:
            # The URL may hold its secret, and errors quote it: both go out masked.
            error = monitoring.scrubbed(f"{type(exc).__name__}: {exc}", url)[:500]
            shown = monitoring.masked_url(url)
            log.warning("webhook %s for %s failed: %s", shown, payload["model"], error)
            detail = {"url": shown, "event": payload["event"], "error": error}
            with contextlib.suppress(Exception):
                await self.writer.run(
                    lambda c: releases.record_event(
                        c, model_id, "webhook_failed", releases.SYSTEM_ACTOR, detail
                    )
                )

    # -- push -------------------------------------------------------------------------------------

    async def push(
        self, principal: Principal, name: str, artifact: Path, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """Check an artifact (load, schema, smoke prediction) and add it as a new version.

        Nothing is stored unless every check passes. Formats that run code when loaded need an
        admin key, and a server without keys refuses them unless told otherwise; the ``push``
        scope may push skops files only.
        """
        principal.require("push")
        registry.check_model_name(name)
        if meta.get("alias") is not None:
            principal.require("admin")
            registry.check_alias_name(meta["alias"])
        if meta.get("task") is not None:
            registry.check_task(meta["task"])
        segment = meta.get("segment")
        if segment is not None:
            segment = segments.segment_of(segment, "segment")
            key = (self.router.models.get(name) or {}).get("segment_by")
            if key is None:
                await asyncio.to_thread(self.router.refresh)
                key = (self.router.models.get(name) or {}).get("segment_by")
            if key is None:
                raise Conflict(
                    f"model {name!r} has no segment key: set one first "
                    f'(PUT /v1/models/{name}/segments with {{"field": "<input field>"}})'
                )
        flavor = str(meta.get("flavor") or await asyncio.to_thread(flavors.detect_flavor, artifact))
        trust, refusal = principal.allows("admin"), flavors.ADMIN_ONLY
        if self.settings.no_auth and not self.settings.dangerously_allow_code_without_auth:
            # Without keys everyone is an admin, a web page in the user's browser included.
            trust, refusal = False, _NO_AUTH_REFUSAL
        loaded = await asyncio.to_thread(
            functools.partial(flavors.load, trust_code=trust, refusal=refusal), flavor, artifact
        )
        schema, schema_source = _schema_for(
            meta.get("schema"), loaded, narrow=bool(meta.get("schema_from_train_data"))
        )
        if segment is not None:
            segments.check_segment_key(key, schema, "schema")
        compat = await self._read(
            functools.partial(
                _compatibility,
                name=name,
                schema=schema,
                release=self.router.releases.get(name),
            )
        )
        if meta.get("strict") and not compat["compatible"]:
            failing = [c for c in compat["consumers"] if c["rows_rejected"]]
            raise Incompatible(
                "the new schema would reject recent payloads of "
                + ", ".join(repr(c["consumer"]) for c in failing)
                + " (give them an adapter, or push without strict)",
                details=[
                    {
                        "field": f"consumer:{c['consumer']}",
                        "reason": f"{c['rows_rejected']} of {c['rows_checked']} rows rejected: "
                        + "; ".join(f"{r['field']}: {r['reason']}" for r in c["reasons"]),
                    }
                    for c in failing
                ],
            )
        try:
            smoke = example_table(schema)
            preds, probas = await asyncio.to_thread(loaded.predict_with_proba, smoke)
            preds = preds.tolist() if isinstance(preds, np.ndarray) else preds
            orjson.dumps({"p": preds, "q": probas}, option=orjson.OPT_SERIALIZE_NUMPY)
        except Exception as exc:
            raise ArtifactRejected(
                f"the smoke prediction failed on a row that fits the schema: "
                f"{type(exc).__name__}: {exc}",
                details=[{"field": "artifact", "reason": f"smoke prediction failed: {exc}"}],
            ) from exc

        def put() -> tuple[str, int]:
            with open(artifact, "rb") as fh:
                return self.artifacts.put(fh)

        sha, size = await asyncio.to_thread(put)
        await asyncio.to_thread(self.router.cache.keep, flavor, sha, loaded)
        described = await asyncio.to_thread(flavors.describe_object, loaded.obj)
        env = meta.get("environment") or {}
        lineage = {
            "created_by": principal.consumer,
            "python": env.get("python") or flavors.libraries_for(flavor)["python"],
            "libraries": env.get("libraries") or flavors.libraries_for(flavor, loaded.obj),
            "server_libraries": flavors.libraries_for(flavor, loaded.obj),
            "code_commit": meta.get("commit"),
            "train_data_sha256": meta.get("train_data_sha256"),
            "hyperparameters": meta.get("params") or described["hyperparameters"],
            "learned": described["learned"],
            "metrics": meta.get("metrics") or {},
            "schema_source": schema_source,
        }
        if meta.get("deterministic") is not None:
            lineage["deterministic"] = bool(meta["deterministic"])
        task = meta.get("task") or loaded.task
        stats = meta.get("train_stats")
        if isinstance(stats, dict) and isinstance(stats.get("fields"), dict):
            keep = set(schema.names)
            stats = {**stats, "fields": {k: v for k, v in stats["fields"].items() if k in keep}}
        reference = await asyncio.to_thread(
            drift.reference_from_sample, meta.get("reference_sample"), schema, loaded
        )

        def write(conn: Connection) -> int:
            model = registry.ensure_model(
                conn,
                name,
                task=task,
                description=meta.get("description") or "",
                actor=principal.consumer,
            )
            number = registry.insert_version(
                conn,
                model.id,
                sha256=sha,
                size_bytes=size,
                flavor=flavor,
                input_schema=schema.to_dict(),
                train_stats=stats,
                lineage=lineage,
                description=meta.get("version_description") or "",
                reference=reference,
                segment=segment,
            )
            if meta.get("alias"):
                registry.set_alias(
                    conn,
                    name,
                    segments.segment_alias(meta["alias"], segment) if segment else meta["alias"],
                    number,
                    actor=principal.consumer,
                    reason="set at push",
                )
            return number

        number = await self.writer.run(write)
        deterministic = is_deterministic(lineage, loaded.custom_code)
        self.router.add(
            Served(name, number, task, schema, loaded, deterministic=deterministic, segment=segment)
        )
        await asyncio.to_thread(self.router.refresh)
        out = await self._read(lambda c: registry.get_version(c, name, number))
        return {**out, "compatibility": compat}

    # -- keys -------------------------------------------------------------------------------------

    async def create_key(
        self, principal: Principal, consumer: str, scopes: list[str]
    ) -> dict[str, Any]:
        principal.require("admin")
        secret, record = await self.writer.run(lambda c: keys.create_key(c, consumer, scopes))
        return {"key": secret, **record}

    async def list_keys(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("admin")
        return await self._read(keys.list_keys)

    async def revoke_key(self, principal: Principal, key_id: int) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(lambda c: keys.revoke_key(c, key_id))
        self.keys.forget()
        return out

    # -- dashboard views (modelport.monitoring.timeline, modelport.monitoring.fit) ---------------------------------------

    async def timeline(
        self,
        principal: Principal,
        name: str,
        *,
        seconds: float,
        buckets: int,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Requests, rows, errors and latency per version and time bucket (of one segment)."""
        principal.require("read")
        return await self._read(
            lambda c: timeline.timeline(c, name, seconds=seconds, buckets=buckets, segment=segment)
        )

    async def recent_predictions(
        self, principal: Principal, name: str, limit: int
    ) -> dict[str, Any]:
        """The newest predictions, newest first, with their current feedback."""
        principal.require("read")
        return await self._read(lambda c: timeline.recent(c, name, limit))

    async def fit_view(self, principal: Principal, name: str, points: int) -> dict[str, Any]:
        """A one-input regression's last labelled points and the production version's line
        over them (scored without touching the ledger)."""
        principal.require("read")
        fit.check_points(points)
        served, alias = await self.router.resolve(name)
        field = fit.input_field(served)
        found = await self._read(lambda c: fit.labelled_points(c, name, field, points))
        line = await asyncio.to_thread(fit.line, served, fit.grid(found, served))
        return {
            "model": name,
            "version": served.version,
            "alias": alias,
            "field": field,
            "points": found,
            "line": line,
        }


def _compatibility(
    conn: Connection, *, name: str, schema: Schema, release: Release | None
) -> dict[str, Any]:
    """The push's compatibility report, for the version number the push will most likely get."""
    try:
        version = 1 + max(v["version"] for v in registry.list_versions(conn, name))
    except (ModelNotFound, ValueError):
        return {"since": None, "compatible": True, "consumers": []}  # a new model: no traffic
    return compatibility.check(conn, name, schema, version, release)


def _field_of(payload: dict[str, Any], field: str) -> str | None:
    """The value of ``field`` in the first row of a predict body, as a unit key."""
    inputs = payload.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        value = inputs[0].get(field)
    else:
        columns, data = payload.get("columns"), payload.get("data")
        if not (isinstance(columns, list) and field in columns and isinstance(data, list) and data):
            return None
        first = data[0]
        index = columns.index(field)
        value = first[index] if isinstance(first, list) and index < len(first) else None
    return None if value is None else str(value)


def _idempotency_key(value: str) -> str:
    if not value or len(value) > 200:
        raise InvalidRequest(
            "the Idempotency-Key header must be 1 to 200 characters",
            details=[{"field": "Idempotency-Key", "reason": "expected 1 to 200 characters"}],
        )
    return value


def _optional_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not is_version_number(value):
        raise InvalidInput(
            f"'{field}' must be a whole number from 1 to {MAX_ID}",
            details=[{"field": field, "reason": f"expected a whole number from 1 to {MAX_ID}"}],
        )
    return value


def _schema_for(given: Any, loaded: flavors.LoadedModel, *, narrow: bool) -> tuple[Schema, str]:
    """The version's schema: as given, from an MLflow signature, or from the estimator's features.

    With ``narrow`` (a schema inferred from all training-data columns), only the estimator's
    own input columns are kept, in its order; the target and other extra columns drop out.
    """
    features = getattr(loaded.obj, "feature_names_in_", None)
    if given is not None:
        schema = parse_schema(given)
        if narrow and features is not None:
            by_name = {f.name: f for f in schema.fields}
            missing = [str(n) for n in features if str(n) not in by_name]
            if missing:
                raise InvalidInput(
                    f"the training data lacks the model's input column(s): {', '.join(missing)}",
                    details=[{"field": n, "reason": "not in the training data"} for n in missing],
                )
            return Schema(tuple(by_name[str(n)] for n in features)), "train_data"
        return schema, "train_data" if narrow else "given"
    if isinstance(loaded.extra.get("schema"), Schema):
        return loaded.extra["schema"], "signature"
    if features is not None:
        return Schema(tuple(Field(str(n), "number") for n in features)), "estimator"
    width = getattr(loaded.obj, "n_features_in_", None)
    if isinstance(width, int) and width > 0:
        return Schema(tuple(Field(f"x{i}", "number") for i in range(width))), "estimator"
    raise InvalidInput(
        "no input schema: give one (--schema FILE), or training data to infer it from "
        "(--train-data FILE)",
        details=[{"field": "schema", "reason": "missing and cannot be derived from the artifact"}],
    )
