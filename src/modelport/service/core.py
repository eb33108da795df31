"""The service layer: every operation modelport offers, as plain async Python.

REST (native and Open Inference Protocol), the CLI and the dashboard call these methods; no
business rule lives in a transport. A :class:`Service` holds the process's
:class:`~modelport.runtime.Runtime` (store, writer thread, artifacts, router, metrics), the
scoring engine every protocol's scoring route calls (``service.engine``, see
:mod:`modelport.serving.engine`) and the background loops; :meth:`start` and :meth:`stop`
bracket its life.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Connection

from .. import flavors, ledger
from ..errors import (
    Conflict,
    InvalidInput,
    InvalidRequest,
    PredictionNotFound,
)
from ..jobs import queue as jobs
from ..jobs.runner import JobRunner
from ..learning import observations as learning
from ..learning.learner import Learner, learning_status
from ..learning.retrain import check_gate, check_triggers, due_trigger, trigger_retrain
from ..monitoring import checks as monitoring
from ..monitoring import fit, performance, timeline
from ..registry import keys
from ..registry import models as registry
from ..registry.keys import ANONYMOUS, KeyCache, Principal
from ..registry.push import push as push_version
from ..releases import canary, outcomes
from ..releases import consumers as releases
from ..releases.bandits import ArmStats
from ..runtime import Runtime
from ..serving import segments
from ..serving.engine import Engine
from ..serving.payloads import check_idempotency_key
from ..serving.routing import Served
from ..settings import Settings
from ..store.artifacts import is_remote
from ..store.tables import models
from ..timefmt import parse_window

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("modelport.service")
T = TypeVar("T")


class Service:
    """One modelport process's state and operations."""

    def __init__(
        self, settings: Settings, *, webhook_transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``webhook_transport``: how monitoring webhooks are sent (tests give a fake)."""
        self.settings = settings
        self.webhook_transport = webhook_transport
        self.runtime = runtime = Runtime.open(settings)
        self.store, self.writer, self.artifacts = runtime.store, runtime.writer, runtime.artifacts
        self.router, self.metrics = runtime.router, runtime.metrics
        self.engine = Engine(runtime)
        self.keys = KeyCache(self.store, settings.key_cache_seconds)
        self._watch: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._releases: asyncio.Task[None] | None = None
        self._jobs_wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._learner: asyncio.Task[None] | None = None
        self._drift: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
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
        self._runner = asyncio.create_task(
            JobRunner(self.runtime).run(self._stopping, self._jobs_wake)
        )
        self.runtime.loop = asyncio.get_running_loop()
        self._learner = asyncio.create_task(
            Learner(self.runtime).run(self._stopping, self.settings.learn_poll_seconds)
        )
        if self.settings.drift_check_seconds > 0:
            self._drift = asyncio.create_task(
                self._repeat(self.settings.drift_check_seconds, self.check_drift, "drift check")
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
        await self.engine.drain()
        await asyncio.to_thread(self.writer.stop)
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

    def _read(self, fn: Callable[[Connection], T]) -> Awaitable[T]:
        return self.runtime.read(fn)

    # -- predictions ------------------------------------------------------------------------------

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
        return {"model": name, "version": version, **self.engine.calls.batch_stats(served)}

    async def served(
        self, principal: Principal, name: str, version: int | None = None
    ) -> tuple[Served, str | None]:
        """The version a request would reach (for metadata and readiness checks)."""
        if not (principal.allows("predict") or principal.allows("read")):
            principal.require("predict")
        return await self.router.resolve(name, version=version)

    def _serving(self, name: str) -> dict[str, Any]:
        """A model's serving settings (overrides of the server's)."""
        return self.router.models.get(name, {}).get("serving") or {}

    async def version_health(self, principal: Principal, name: str) -> dict[str, Any]:
        """How this server's calls of each of the model's versions went."""
        principal.require("read")
        await self._read(lambda c: registry.get_model(c, name))
        return {"model": name, "versions": self.engine.calls.health_of(name)}

    async def get_prediction(self, principal: Principal, prediction_id: str) -> dict[str, Any]:
        """One prediction with its feedback. Keys with ``read`` see every prediction; other keys
        only their consumer's own (for feedback flows). Anyone else's is "not found", like an
        unknown id, so ids cannot be probed."""
        record = await self._read(lambda c: ledger.get_prediction(c, prediction_id))
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

            def store(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
                stored, unknown = ledger.store_feedback(conn, good, principal.consumer)
                labelled = [g for g in good if g.get("label") is not None]
                if labelled and stored:
                    kept = {a["prediction_id"] for a in stored}
                    learning.observe_feedback(
                        conn, [g for g in labelled if g["prediction_id"] in kept]
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
        self,
        principal: Principal,
        name: str,
        task: str,
        description: str,
        segment_by: str | None = None,
    ) -> dict[str, Any]:
        """An empty model (and its segment key), in one transaction: both or neither."""
        principal.require("admin")
        if segment_by is not None:
            segments.check_segment_key(segment_by, None)

        def create(conn: Connection) -> dict[str, Any]:
            out = registry.create_model(
                conn, name, task=task, description=description, actor=principal.consumer
            )
            if segment_by is not None:
                doc = {"field": segment_by}
                segments.set_segment_key(conn, name, doc, actor=principal.consumer)
                out["segment_by"] = segment_by
            return out

        out = await self.writer.run(create)
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

    async def learning_status(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: learning_status(c, name))

    async def _after_registry_change(self) -> None:
        await self.runtime.registry_changed()

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
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
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
        """Check an artifact and add it as a new version (:func:`modelport.registry.push.push`)."""
        return await push_version(self.runtime, principal, name, artifact, meta)

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
