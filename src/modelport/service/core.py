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
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from .. import flavors, ledger
from ..errors import (
    InvalidInput,
    InvalidRequest,
    PredictionNotFound,
)
from ..jobs.runner import JobRunner
from ..learning import observations as learning
from ..learning.learner import Learner
from ..learning.retrain import due_trigger, trigger_retrain
from ..once import Once
from ..registry import keys
from ..registry import models as registry
from ..registry.keys import ANONYMOUS, KeyCache, Principal
from ..releases import canary, outcomes
from ..releases.bandits import ArmStats
from ..runtime import Runtime
from ..serving.engine import Engine
from ..serving.memory import QuietTrim
from ..serving.routing import Served
from ..settings import Settings
from ..store.archive import Archive
from ..store.artifacts import is_remote
from ..store.retention import Retention, start_check
from .learning import LearningOps
from .monitoring import MonitoringOps
from .registry import RegistryOps
from .releases import ReleaseOps

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("modelport.service")


class Service(RegistryOps, LearningOps, ReleaseOps, MonitoringOps):
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
        self.archive = Archive(self.artifacts)  # the ledger rows retention moved out
        self.retention = Retention(runtime)
        self.keys = KeyCache(self.store, settings.key_cache_seconds)
        # When a key's cache entry expires under load, every request in flight with it misses
        # at once: they all wait for one lookup instead of each sending its own to a thread.
        self._verifying: Once[str, Principal] = Once()
        self._watch: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._releases: asyncio.Task[None] | None = None
        self._jobs_wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._learner: asyncio.Task[None] | None = None
        self._drift: asyncio.Task[None] | None = None
        self._archiving: asyncio.Task[None] | None = None
        self._trimming: asyncio.Task[None] | None = None
        # Every scored request writes a ledger row: their count standing still is quiet.
        self.memory = QuietTrim(lambda: self.writer.stats.rows, self._trimmed)

    # -- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        start_check(self.settings)
        await asyncio.to_thread(self.artifacts.check)
        # Before any model loads or job runs: keeps pandas (and pyarrow) out of the process
        # until something needs a DataFrame (see flavors.import_scikit_learn).
        await asyncio.to_thread(flavors.import_scikit_learn)
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
        if self.settings.ledger_archive_seconds > 0:
            self._archiving = asyncio.create_task(
                self.retention.run(self._stopping, self.settings.ledger_archive_seconds)
            )
        if self.settings.memory_trim_seconds > 0:
            self._trimming = asyncio.create_task(
                self._repeat(self.settings.memory_trim_seconds, self.memory.tick, "memory trim")
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
        # The learner's last snapshots may have left router refreshes running on the store.
        await self.runtime.registry_changes_done()
        if self._drift is not None:
            await self._drift
        if self._archiving is not None:
            self.retention.stop()
            await self._archiving
        if self._trimming is not None:
            await self._trimming
        await self.engine.drain()
        await asyncio.to_thread(self.writer.stop)
        self.store.close()
        self.metrics.close()

    def _trimmed(self, released: int) -> None:
        self.metrics.memory_trims.inc()
        self.metrics.memory_returned.inc(released)

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
        if not secret:
            return self.keys.authenticate(secret)  # raises Unauthorized; reads nothing
        principal = self.keys.cached(secret)
        if principal is not None:
            return principal
        return await self._verifying.run(secret, functools.partial(self.keys.authenticate, secret))

    # -- predictions ------------------------------------------------------------------------------

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

    async def version_health(self, principal: Principal, name: str) -> dict[str, Any]:
        """How this server's calls of each of the model's versions went."""
        principal.require("read")
        await self._read(lambda c: registry.get_model(c, name))
        return {"model": name, "versions": self.engine.calls.health_of(name)}

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
            first = f": {rejected[0]['reason']}" if rejected else ""
            raise InvalidInput(
                f"no feedback item was accepted{first}",
                details=[
                    {"row": r["index"], "field": "prediction_id", "reason": r["reason"]}
                    for r in rejected
                ],
            )
        return {"accepted": accepted, "rejected": rejected}

    # -- registry ---------------------------------------------------------------------------------

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
