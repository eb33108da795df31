"""The learning loop's operations: built-in algorithms, observations, dataset snapshots, jobs and
score runs, retraining triggers and the promotion gate.

A part of :class:`modelport.service.core.Service`: the methods assume its attributes (see
:class:`modelport.service.base.ServiceBase`)."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from typing import Any

from sqlalchemy.engine import Connection

from ..errors import (
    Conflict,
    InvalidInput,
)
from ..jobs import queue as jobs
from ..learning import observations as learning
from ..learning.learner import learning_status
from ..learning.retrain import check_gate, check_triggers
from ..registry import models as registry
from ..registry.keys import Principal
from ..releases import consumers as releases
from ..serving.payloads import check_idempotency_key
from .base import ServiceBase

log = logging.getLogger("modelport.service")


class LearningOps(ServiceBase):
    """The learning loop's operations."""

    async def learning_status(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: learning_status(c, name))

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
        limit = int(self.router.serving(name).get("max_segments", self.settings.max_segments))

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
