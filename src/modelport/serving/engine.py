"""The scoring engine: one prediction's path, from parsed payload to committed ledger row.

    route (router: explicit version or alias, consumer pin, traffic policy, segment)
      -> validate (the payload against the version it reached, through the consumer's adapter)
      -> call (ModelCalls: prediction cache, batcher, model call, health)
      -> ledger (rows committed by the writer before the answer goes out)
      -> answer (Scored)

Every protocol (native ``/v1``, the Open Inference Protocol) hands the engine a
:class:`~modelport.serving.payloads.Payload` and gets a :class:`Scored` back; nothing calls
back up. A canary candidate that fails hands the request to the champion; a shadow copy is
scored after the answer, off its path, in a task the engine keeps until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ledger
from ..errors import Conflict, InvalidInput, ModelFailed, ModelportError
from ..ids import new_ids
from ..inputs import typed
from ..store.tables import failures
from . import segments
from .calls import ModelCalls
from .payloads import NativePayload, Payload, RawBody, check_idempotency_key
from .routing import Route, Served

if TYPE_CHECKING:
    from ..inputs.schema import Schema
    from ..inputs.table import Table
    from ..registry.keys import Principal
    from ..runtime import Runtime

log = logging.getLogger("modelport.service")


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


def _plain(preds: Any) -> list[Any]:
    return preds.tolist() if isinstance(preds, np.ndarray) else list(preds)


def _ledger_row(
    first_id: str,
    served: Served,
    consumer: str,
    request_id: str,
    rows: Table,
    predictions: list[Any],
    probabilities: np.ndarray | None,
    started: float,
    **route: Any,
) -> tuple[Any, ...]:
    """The ledger row of rows a version answered (``route``: alias, policy, arm, ...)."""
    return ledger.ledger_row(
        first_id,
        model=served.model,
        version=served.version,
        consumer=consumer,
        request_id=request_id,
        table=rows,
        predictions=predictions,
        classes=served.loaded.classes,
        probabilities=probabilities,
        latency_ms=(time.perf_counter() - started) * 1000,
        **route,
    )


class Engine:
    """Scores requests for one server process; owns the model calls and the shadow tasks."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.calls = ModelCalls(runtime, self._spawn)
        self._background: set[asyncio.Task[None]] = set()
        # Idempotent requests in flight, by (kind, consumer, model, key): a repeat waits for them.
        self._keyed: dict[tuple[str, str, str, str], asyncio.Event] = {}
        # The schema that answered each consumer's last native request to a model: the typed
        # reader's guess for the next one. None when answering needed the parsed body (an
        # adapter, a segment key), and no guess when the nesting limit is below the reader's.
        self._hints: dict[tuple[str, str], Schema | None] = {}
        self._typed = self.settings.max_json_depth >= typed.DEPTH
        # How many connections the process's HTTP server holds open, when it can tell (set by
        # the app when served by ``modelport serve``; None: unknown, never alone).
        self.open_connections: Callable[[], int] | None = None
        self._scoring = 0  # score() calls in flight

    async def drain(self) -> None:
        """Give shadow copies and event records their time, then let them go; close the
        predict threads."""
        if self._background:
            _, pending = await asyncio.wait(
                self._background, timeout=self.settings.shadow_timeout_seconds
            )
            for task in pending:
                task.cancel()
        await asyncio.to_thread(self.calls.close)

    # -- the native predict ------------------------------------------------------------------------

    def predict(
        self,
        principal: Principal,
        name: str,
        body: Any,
        request_id: str,
        unit_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """Validate, score and log the rows of one native predict request.

        ``body``: the parsed body, or its bytes (:class:`RawBody`), which the typed reader of
        the schema that answered the consumer's last request to the model may read straight
        into rows.
        ``unit_id`` (the ``X-Unit-ID`` header) keeps a unit on one arm of a split policy.
        ``idempotency_key`` (the ``Idempotency-Key`` header): a repeat from the same consumer
        within ``idempotency_window_seconds`` gets the first answer, from the ledger.
        (A plain function returning the coroutine: a request without a key costs one test.)
        """
        if idempotency_key is None:
            return self._predict(principal, name, body, request_id, unit_id)
        principal.require("predict")
        if isinstance(body, RawBody):  # a body that is not JSON is refused before the lookup
            body = body.loads(body.data)
        since = time.time() - self.settings.idempotency_window_seconds
        consumer, key = principal.consumer, check_idempotency_key(idempotency_key)

        return self._once(
            ("predict", consumer, name, key),
            lambda: self.runtime.read(lambda c: ledger.answered(c, consumer, name, key, since)),
            lambda: self._predict(principal, name, body, request_id, unit_id, key),
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
        body: Any,
        request_id: str,
        unit_id: str | None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        principal.require("predict")
        max_rows = self.settings.max_rows_per_request
        hinted = (principal.consumer, name)
        if isinstance(body, RawBody):
            hint = self._hints.get(hinted) if self._typed else None
            payload = NativePayload.read(body, max_rows, unit_id, hint)
        else:
            payload = NativePayload.parse(body, max_rows, unit_id)
        scored = await self.score(
            principal,
            name,
            payload,
            version=payload.version,
            alias=payload.alias,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )
        self._hints[hinted] = None if payload.needs_body else scored.served.schema
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

    # -- every protocol's path ---------------------------------------------------------------------

    async def score(
        self,
        principal: Principal,
        name: str,
        payload: Payload,
        *,
        version: int | None,
        alias: str | None,
        request_id: str,
        idempotency_key: str | None = None,
    ) -> Scored:
        """Route, adapt, validate, score and log one request; the rows are committed to the
        ledger before this returns."""
        self._scoring += 1
        try:
            principal.require("predict")
            started = time.perf_counter()
            router = self.runtime.router
            key = router.segment_keys.get(name)
            if key is not None and version is None:
                target = router.segment_target(name, alias, principal.consumer)
                if target is not None:
                    return await self._score_segments(
                        principal, name, key, target, payload, request_id, started, idempotency_key
                    )
            route = await router.route(
                name, consumer=principal.consumer, version=version, alias=alias, unit=payload.unit
            )
            served, arm = route.served, route.arm
            try:
                rows = payload.table(served, route.adapter_for(served))
                try:
                    preds, probas, cached = await self.calls.run(served, rows, alone=self.alone())
                except ModelFailed as exc:
                    await self._failed(route, served, arm, principal.consumer, request_id, exc)
                    if route.fallback is None:
                        raise
                    served, arm = route.fallback, route.fallback_arm
                    rows = payload.table(served, route.adapter_for(served))
                    preds, probas, cached = await self.calls.run(served, rows)
            except ModelportError as exc:
                exc.version = served.version
                raise
            ids = new_ids(len(rows))
            predictions = _plain(preds)
            await self.runtime.writer.insert_rows(
                [
                    _ledger_row(
                        ids[0],
                        served,
                        principal.consumer,
                        request_id,
                        rows,
                        predictions,
                        probas,
                        started,
                        alias=route.alias if served is route.served else None,
                        policy=route.policy,
                        arm=arm,
                        traffic_rev=route.traffic_rev,
                        cached=cached,
                        idempotency_key=idempotency_key,
                    )
                ],
                inline=self.alone(),
            )
            self.runtime.metrics.scored(
                name,
                served.version,
                arm,
                principal.consumer,
                len(rows),
                time.perf_counter() - started,
            )
            if route.shadow is not None:
                self._spawn(self._shadow(route, principal.consumer, request_id, payload))
            return Scored(served, predictions, probas, ids)
        finally:
            self._scoring -= 1

    def alone(self) -> bool:
        """Whether the request being scored is all this process serves: one HTTP connection
        open (or none: a stream's record), no other scoring in flight, no shadow copy or event
        record pending (``inline_when_alone``). Its model call then runs on its own task (no
        other request could join its batch) and its ledger rows are committed on the event
        loop's thread: nothing else waits on the loop while it waits for the flush, and the
        hand-overs to a batch's task and to the writer thread and back are saved."""
        connections = self.open_connections
        return (
            connections is not None
            and self._scoring == 1
            and not self._background
            and connections() <= 1
        )

    async def _score_segments(
        self,
        principal: Principal,
        name: str,
        key: str,
        alias: str,
        payload: Payload,
        request_id: str,
        started: float,
        idempotency_key: str | None = None,
    ) -> Scored:
        """A segmented model's request: rows grouped by segment, each group answered by its
        segment's version (or the fallback), logged as one ledger row per segment, and
        re-joined in the request's order. A request with an idempotency key holds rows of
        one segment (its answer is kept as one ledger row)."""
        router = self.runtime.router
        limit = int(router.serving(name).get("max_live_segments", self.settings.max_live_segments))
        adapter = router.adapter(name, principal.consumer)
        first = segments.segment_of(payload.unit(key), key)
        served, used = await router.for_segment(name, alias, first, limit)
        applies = adapter if adapter is not None and adapter.applies_to(served.version) else None
        try:
            rows = payload.table(served, applies)
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
                mine, mine_alias = await router.for_segment(name, alias, segment, limit)
            if mine.schema is served.schema or mine.schema == served.schema:
                part = rows if len(idx) == n else rows.take(idx)
            else:  # a segment's version with a schema of its own: validate against it
                own = adapter if adapter is not None and adapter.applies_to(mine.version) else None
                part = payload.table(mine, own).take(idx)
            try:
                preds, probas, cached = await self.calls.run(mine, part)
            except ModelportError as exc:
                exc.version = mine.version
                if isinstance(exc, ModelFailed):
                    route = Route(mine, mine_alias, "segment")
                    await self._failed(route, mine, None, principal.consumer, request_id, exc)
                raise
            plain = _plain(preds)
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
            ledger_rows.append(
                _ledger_row(
                    part_ids[0],
                    mine,
                    principal.consumer,
                    request_id,
                    part,
                    plain,
                    probas,
                    started,
                    alias=mine_alias,
                    policy="segment",
                    segment=segment,
                    cached=cached,
                    idempotency_key=idempotency_key,
                )
            )
        await self.runtime.writer.insert_rows(ledger_rows, inline=self.alone())
        elapsed = time.perf_counter() - started
        for idx in groups.values():
            self.runtime.metrics.scored(
                name, row_versions[idx[0]], None, principal.consumer, len(idx), elapsed
            )
        return Scored(served, predictions, probas_out, ids, row_versions, values)

    async def _shadow(self, route: Route, consumer: str, request_id: str, payload: Payload) -> None:
        """Score a shadow copy and log it; whatever goes wrong stays here (and in failures)."""
        shadow = route.shadow
        assert shadow is not None
        started = time.perf_counter()
        metrics = self.runtime.metrics
        timeout = self.settings.shadow_timeout_seconds
        try:
            rows = payload.table(shadow, route.adapter_for(shadow))
            preds, probas = await asyncio.wait_for(self.calls.batcher(shadow).submit(rows), timeout)
            row = _ledger_row(
                new_ids(len(rows))[0],
                shadow,
                consumer,
                request_id,
                rows,
                _plain(preds),
                probas,
                started,
                alias=None,
                policy=route.policy,
                arm="shadow",
                traffic_rev=route.traffic_rev,
                shadow=True,
            )
            await self.runtime.writer.insert_rows([row])
            metrics.shadow.child(shadow.model, str(shadow.version), "ok").inc()
        except Exception as exc:
            metrics.shadow.child(shadow.model, str(shadow.version), "failed").inc()
            if isinstance(exc, asyncio.TimeoutError):
                exc = ModelFailed(f"timed out after {timeout:g} s")
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
        await self.runtime.writer.run(lambda conn: conn.execute(failures.insert().values(**row)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)  # referenced until done, and awaited at stop
        task.add_done_callback(self._background.discard)
