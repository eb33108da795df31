"""Online learning beside serving: one process per model learns, every process serves.

For each model made from an online algorithm, the servers sharing a store compete for a lease
(renewed every tick, lost when it lapses); the holder reads the model's new observations in id
order, first scores them with its current state (the prequential, predict-then-learn record),
then learns from them, in a thread so no prediction waits on a learning step. Every
``snapshot_every`` observations or ``snapshot_seconds`` (once it has seen
``min_observations``) it writes its state as a new immutable version, with its parent version
and the last observation it learned, and moves ``production`` to it: every prediction names the
exact weights that made it. A new lease holder starts from the newest snapshot and the
observation after it, so nothing is learned twice and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from .. import flavors
from ..inputs.schema import Schema, parse_schema
from ..jobs import queue as jobs
from ..monitoring import drift
from ..registry import models as registry
from ..serving.segments import LiveSegments, segment_alias
from ..store.tables import learner_leases, prequential, versions
from . import observations as learning

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("modelport.learner")

LEARNER_ACTOR = "modelport-learner"
LEASE_SECONDS = 10.0
_BATCH = 1000


@dataclass
class _State:
    model_id: int
    spec: dict[str, Any]
    schema: Schema
    model: Any
    version: int | None  # the snapshot the state started from, then the latest one written
    through: int  # the last observation learned
    pending: int = 0  # observations learned since the last snapshot
    last_snapshot: float = field(default_factory=time.monotonic)
    n: int = 0  # prequential counts since the last snapshot
    total: float = 0.0
    total_sq: float = 0.0
    # The observations seen (a sample): each snapshot's drift reference.
    seen: drift.Reservoir = field(default_factory=drift.Reservoir)
    segment: str | None = None  # the segment the state learns (a segmented model)
    saved: int = 0  # the last observation its newest snapshot holds


@dataclass
class _Segmented:
    """The online learning of a segmented model: one state per segment, least recently used
    first, and how far the model's observations have been read."""

    model_id: int
    cursor: int  # every observation up to here was handed to its segment's state
    states: LiveSegments = field(default_factory=LiveSegments)
    lease: int = 0  # through_observation last written to the lease: all in some snapshot

    def safe_through(self) -> int:
        """Every observation up to here is in a snapshot (the cursor, held back by the oldest
        unsaved learning of any segment)."""
        # A segment's unsaved rows come after the lease (everything up to it was saved).
        unsaved = [max(s.saved, self.lease) for _, s in self.states.items() if s.pending]
        return int(min([self.cursor, *unsaved]))


def _online(model: dict[str, Any]) -> bool:
    """Whether a model (as the router holds it) is made from an online algorithm."""
    return bool((model.get("spec") or {}).get("online"))


class Learner:
    """The online learning of one server process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.holder = jobs.worker_name()
        self.states: dict[str, _State] = {}
        self.segmented: dict[str, _Segmented] = {}

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            # A tick runs in a thread, and a thread woken on a serving process's CPU delays the
            # request in flight: none while no model learns online.
            if any(_online(model) for model in self.runtime.router.models.values()):
                try:
                    await asyncio.to_thread(self.tick)
                except Exception as exc:
                    log.warning("online learning: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def tick(self) -> None:
        for name, model in list(self.runtime.router.models.items()):
            if not _online(model):
                continue
            spec = model["spec"]
            if not self._lease(model["id"]):
                self.states.pop(name, None)  # another process learns it; restore on return
                self.segmented.pop(name, None)
                continue
            if spec.get("segment_by"):
                self._learn_segments(name, model, spec)
                continue
            state = self.states.get(name) or self._restore(name, model["id"], spec)
            self.states[name] = state
            self._learn(name, state)

    # -- the lease --------------------------------------------------------------------------------

    def _lease(self, model_id: int) -> bool:
        now = time.time()

        def take(conn: Any) -> bool:
            row = conn.execute(
                sa.select(learner_leases).where(learner_leases.c.model_id == model_id)
            ).first()
            if row is None:
                conn.execute(
                    learner_leases.insert().values(
                        model_id=model_id, holder=self.holder, expires_at=now + LEASE_SECONDS
                    )
                )
                return True
            if row.holder != self.holder and row.expires_at > now:
                return False
            conn.execute(
                learner_leases.update()
                .where(learner_leases.c.model_id == model_id)
                .values(holder=self.holder, expires_at=now + LEASE_SECONDS)
            )
            return True

        return bool(self.runtime.writer.submit(take).result())

    # -- state --------------------------------------------------------------------------------------

    def _restore(
        self, name: str, model_id: int, spec: dict[str, Any], segment: str | None = None
    ) -> _State:
        """The newest snapshot's state (and where it stopped), or a model that knows nothing;
        of one segment when ``segment`` is given."""
        from . import algorithms

        schema = parse_schema(spec["schema"])
        query = sa.select(versions).where(versions.c.model_id == model_id)
        if segment is not None:
            query = query.where(versions.c.segment == segment)
        with self.runtime.store.read() as conn:
            row = conn.execute(query.order_by(versions.c.version.desc()).limit(1)).first()
        if row is not None and row.lineage.get("learner"):
            loaded = flavors.load(
                row.flavor, self.runtime.artifacts.local_path(row.sha256), trust_code=True
            )
            through = int(row.lineage["through_observation"])
            return _State(
                model_id,
                spec,
                schema,
                loaded.obj,
                row.version,
                through,
                segment=segment,
                saved=through,
            )
        model = algorithms.build_estimator(
            spec["algorithm"],
            spec["params"],
            schema,
            classes=spec.get("classes"),
            target=spec["target"],
        )
        return _State(
            model_id, spec, schema, model, row.version if row else None, 0, segment=segment
        )

    # -- learning -----------------------------------------------------------------------------------

    def _learn(self, name: str, state: _State) -> None:
        with self.runtime.store.read() as conn:
            rows = learning.read_observations(
                conn, state.model_id, after=state.through, limit=_BATCH
            )
        self._fold(name, state, rows)

    def _learn_segments(self, name: str, model: dict[str, Any], spec: dict[str, Any]) -> None:
        """Hand the model's new observations, in id order, each to its segment's state
        (made from the algorithm the first time a segment appears); keep at most
        ``max_live_segments`` states, snapshotting the least recently used before dropping it.
        """
        book = self.segmented.get(name)
        if book is None:
            with self.runtime.store.read() as conn:
                lease = conn.execute(
                    sa.select(learner_leases.c.through_observation).where(
                        learner_leases.c.model_id == model["id"]
                    )
                ).scalar()
            book = self.segmented[name] = _Segmented(
                model["id"], int(lease or 0), lease=int(lease or 0)
            )
        limit = int(
            (model.get("serving") or {}).get(
                "max_live_segments", self.runtime.settings.max_live_segments
            )
        )
        with self.runtime.store.read() as conn:
            rows = learning.read_observations(conn, book.model_id, after=book.cursor, limit=_BATCH)
        groups: dict[str, list[tuple[int, dict[str, Any], Any, str | None]]] = {}
        for row in rows:
            segment = learning.segment_of_inputs(spec, row[1])
            assert segment is not None
            groups.setdefault(segment, []).append(row)
        for segment, mine in groups.items():
            state = book.states.get(segment)
            if state is None:
                state = self._restore(name, book.model_id, spec, segment)
                if state.version is None:  # never snapshotted: nothing of it before these
                    state.through = state.saved = mine[0][0] - 1
            for _, evicted in book.states.touch(segment, state, limit):
                self._evict(name, evicted, book)
            self._fold(name, state, [r for r in mine if r[0] > state.through], book)
        if rows:
            book.cursor = rows[-1][0]
        for _, state in book.states.items():  # a quiet segment's time-based snapshot
            if state.segment not in groups:
                self._fold(name, state, [], book)
        # Snapshots taken while the batch was folded saw the cursor before it; once every
        # segment has saved what it learned, the lease moves to the end of the batch.
        if book.safe_through() > book.lease:
            self._write_lease(book, book.safe_through())

    def _write_lease(self, book: _Segmented, through: int) -> None:
        def write(conn: Any) -> None:
            conn.execute(
                learner_leases.update()
                .where(learner_leases.c.model_id == book.model_id)
                .values(through_observation=through)
            )

        self.runtime.writer.submit(write).result()
        book.lease = through

    def _evict(self, name: str, state: _State, book: _Segmented) -> None:
        """Snapshot a segment's state (if it learned since its last one) before dropping it."""
        if state.pending > 0:
            self._save_version(name, state, book)

    def _fold(
        self,
        name: str,
        state: _State,
        rows: list[tuple[int, dict[str, Any], Any, str | None]],
        book: _Segmented | None = None,
    ) -> None:
        """Learn ``rows`` (predicting each batch first), then snapshot when one is due."""
        settings = state.spec.get("learning") or learning.ONLINE_DEFAULTS
        if rows:
            records = [inputs for _, inputs, _, _ in rows]
            labels = [label for _, _, label, _ in rows]
            table = state.schema.table(records)
            state.seen.add(table.rows())
            X = table.frame()
            if state.model.ready(1):
                self._score(state, X, labels)
            state.model.learn(
                X,
                np.asarray(
                    labels, dtype=object if state.spec["task"] == "classification" else float
                ),
            )
            state.through = rows[-1][0]
            state.pending += len(rows)
        due = state.pending >= settings["snapshot_every"] or (
            state.pending > 0
            and time.monotonic() - state.last_snapshot >= settings["snapshot_seconds"]
        )
        if due and state.model.ready(int(settings["min_observations"])):
            self._save_version(name, state, book)

    def _score(self, state: _State, X: Any, labels: list[Any]) -> None:
        """Predict before learning: the prequential record of how the state was doing."""
        preds = np.asarray(state.model.predict(X))
        if state.spec["task"] == "classification":
            state.total += float(
                sum(str(p) == str(y) for p, y in zip(preds.tolist(), labels, strict=True))
            )
        else:
            errors = preds.astype(float) - np.asarray(labels, dtype=float)
            state.total += float(np.abs(errors).sum())
            state.total_sq += float((errors**2).sum())
        state.n += len(labels)

    def _save_version(self, name: str, state: _State, book: _Segmented | None = None) -> None:
        """Write the state as a new version and point ``production`` (a segment's
        ``production@<segment>``) at it once the model is ready to answer."""
        import joblib

        blob = io.BytesIO()
        joblib.dump(state.model, blob)
        blob.seek(0)
        sha, size = self.runtime.artifacts.put(blob)
        lineage = {
            "created_by": LEARNER_ACTOR,
            "python": flavors.libraries_for("pickle")["python"],
            "libraries": flavors.libraries_for("pickle", state.model),
            "server_libraries": flavors.libraries_for("pickle", state.model),
            "code_commit": None,
            "train_data_sha256": None,
            "hyperparameters": state.spec["params"],
            "learned": state.model.params(),
            "metrics": {},
            "schema_source": "spec",
            "learner": True,
            "parent_version": state.version,
            "through_observation": state.through,
            "observations_learned": state.model.n_seen,
            "prequential": {"n": state.n, "total": state.total, "total_sq": state.total_sq},
            # The prediction cache may keep its answers: a snapshot never changes.
            "deterministic": True,
        }
        settings = state.spec.get("learning") or learning.ONLINE_DEFAULTS
        ready = state.model.ready(int(settings["min_observations"]))
        alias = (
            "production" if state.segment is None else segment_alias("production", state.segment)
        )
        if book is not None:  # observations up to here are all in some snapshot
            pending = [
                max(s.saved, book.lease)
                for _, s in book.states.items()
                if s.pending and s is not state
            ]
            lease_through = max(book.lease, min([book.cursor, *pending]))
            book.lease = lease_through
        else:
            lease_through = state.through

        schema, model = state.schema, state.model
        reference = drift.safe_reference(
            lambda: drift.build_reference(
                "observations",
                list(schema.names),
                state.seen.rows,
                lambda rows: np.asarray(
                    model.predict(schema.table_from_rows(rows).frame())
                ).tolist(),
                total=state.seen.seen,
            )
        )

        def write(conn: Any) -> int:
            number = registry.insert_version(
                conn,
                state.model_id,
                sha256=sha,
                size_bytes=size,
                flavor="pickle",
                input_schema=state.spec["schema"],
                train_stats=None,
                lineage=lineage,
                description=f"online snapshot through observation {state.through}",
                reference=reference,
                segment=state.segment,
            )
            if ready:
                registry.set_alias(
                    conn, name, alias, number, actor=LEARNER_ACTOR, reason="online snapshot"
                )
            conn.execute(
                prequential.insert().values(
                    model_id=state.model_id,
                    version=number,
                    ts=time.time(),
                    n=state.n,
                    total=state.total,
                    total_sq=state.total_sq,
                    learned=state.model.n_seen,
                )
            )
            conn.execute(
                learner_leases.update()
                .where(learner_leases.c.model_id == state.model_id)
                .values(through_observation=lease_through)
            )
            return number

        state.version = int(self.runtime.writer.submit(write).result())
        state.saved = state.through
        state.pending, state.n, state.total, state.total_sq = 0, 0, 0.0, 0.0
        state.last_snapshot = time.monotonic()
        self.runtime.registry_changed_from_thread()


def learning_status(conn: Any, name: str) -> dict[str, Any]:
    """What the online learner has done for a model: observations, snapshots, prequential."""
    model = registry.model_row(conn, name)
    spec = learning.spec_of(conn, name)
    count, newest = learning.observation_count(conn, model.id)
    lease = conn.execute(
        sa.select(learner_leases).where(learner_leases.c.model_id == model.id)
    ).first()
    rows = conn.execute(
        sa.select(prequential)
        .where(prequential.c.model_id == model.id)
        .order_by(prequential.c.id.desc())
        .limit(200)
    ).all()
    classification = spec["task"] == "classification"
    series = [
        {
            "version": r.version,
            "time": r.ts,
            "n": r.n,
            "learned": r.learned,
            ("accuracy" if classification else "mae"): (r.total / r.n if r.n else None),
            **(
                {}
                if classification
                else {"rmse": float(np.sqrt(r.total_sq / r.n)) if r.n else None}
            ),
        }
        for r in reversed(rows)
    ]
    return {
        "model": name,
        "algorithm": spec["algorithm"],
        "online": bool(spec.get("online")),
        "settings": spec.get("learning"),
        "observations": count,
        "newest_observation": newest,
        "learned_through": lease.through_observation if lease else 0,
        "learner": lease.holder if lease else None,
        "prequential": series,
    }
