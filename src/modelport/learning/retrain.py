"""The retrain job (in a worker process) and the promotion gate it applies.

A retrain trains the model's algorithm on a dataset snapshot with a seed, so the same snapshot
and seed give the same model; evaluates it on its holdout, and the champion (the version behind
``production``) on the very same holdout rows; stores it as a new version with its lineage
(snapshot, parameters, seed, libraries, holdout metrics) aliased ``candidate``; then applies the
model's gate, if it has one:

    {"metric": "accuracy", "min_improvement": 0.01,
     "replay": {"hours": 24, "min_agreement": 0.8, "max_rejected": 0.0}}

The candidate is promoted to ``production`` only if its holdout metric beats the champion's by
``min_improvement`` (lower is better for ``rmse``/``mae``/``log_loss``) and, with ``replay``, a
replay of the last hours of traffic agrees with what was served at least that often and
rejects at most that share of rows. Either way an event records the decision and why.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from .. import flavors
from ..documents import Document, Number, checked
from ..errors import InvalidInput
from ..inputs.schema import parse_schema
from ..monitoring import drift
from ..registry import models as registry
from ..releases import consumers as releases
from . import observations as learning

Progress = Callable[[float, str], None]

#: Metrics where less is better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
GATE_ACTOR = "modelport-gate"


class Replay(Document):
    """Replay of recent logged traffic through the candidate, as part of the gate."""

    hours: Number | None = Field(None, ge=0, description="How far back (default 24).")
    min_agreement: Number | None = Field(
        None, ge=0, description="The least share of answers equal to production's."
    )
    max_rejected: Number | None = Field(
        None, ge=0, description="The most rows the candidate's schema may reject."
    )


class Gate(Document):
    """The promotion gate a retrained candidate passes before it becomes production."""

    metric: Literal["accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2"] = Field(
        description="The holdout metric compared with production's on the same rows."
    )
    min_improvement: Number = Field(0.0, description="The margin the candidate must win by.")
    replay: Replay | None = None


def check_gate(doc: Any) -> dict[str, Any] | None:
    """A promotion gate, checked (None removes it)."""
    if doc is None:
        return None
    gate = checked(Gate, doc, "gate", "gate")
    out = gate.model_dump(exclude={"replay"})
    replay = gate.replay.model_dump(exclude_none=True) if gate.replay is not None else None
    return {**out, **({"replay": replay} if replay else {})}


def run_retrain(
    store: Any, artifacts: Any, job: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    import joblib

    name, params = job["model"], job["params"]
    with store.read() as conn:
        spec = learning.spec_of(conn, name)
        dataset = learning.get_dataset(conn, params["dataset"]) if params.get("dataset") else None
    if dataset is None:
        dataset = learning.snapshot(store, artifacts, name)
    progress(0.1, f"dataset {dataset['id'][:12]}: {dataset['rows']} rows")
    frame = learning.load_dataset(artifacts, dataset["id"])
    from . import algorithms, training  # training code: in the job's worker, never a server

    schema = parse_schema(spec["schema"])
    algo_params = {**spec["params"], **(params.get("params") or {})}
    algo_params = algorithms.check_spec(spec["algorithm"], algo_params)
    started = time.perf_counter()
    trained = training.train(
        spec["algorithm"],
        algo_params,
        schema,
        frame,
        spec["target"],
        holdout=params.get("holdout", 0.2),
        seed=params.get("seed", 0),
        classes=spec.get("classes"),
    )
    progress(0.6, f"trained in {time.perf_counter() - started:.1f} s: {trained.metrics}")
    reference = drift.safe_reference(
        lambda: drift.reference_from_frame(
            "dataset", frame, schema.names, trained.estimator, seed=params.get("seed", 0)
        )
    )
    champion = _champion_metrics(store, artifacts, name, trained, spec)
    blob = io.BytesIO()
    joblib.dump(trained.estimator, blob)
    blob.seek(0)
    sha, size = artifacts.put(blob)
    lineage = {
        "created_by": job["created_by"],
        "python": flavors.libraries_for("pickle")["python"],
        "libraries": flavors.libraries_for("pickle", trained.estimator),
        "server_libraries": flavors.libraries_for("pickle", trained.estimator),
        "code_commit": None,
        "train_data_sha256": dataset["id"],
        "dataset": dataset["id"],
        "algorithm": spec["algorithm"],
        "hyperparameters": algo_params,
        "seed": params.get("seed", 0),
        "learned": flavors.describe_object(trained.estimator)["learned"],
        "metrics": trained.metrics,
        "holdout_rows": trained.holdout_rows,
        "job": job["id"],
        "schema_source": "spec",
    }
    with store.transaction() as conn:
        model = registry.model_row(conn, name)
        number = registry.insert_version(
            conn,
            model.id,
            sha256=sha,
            size_bytes=size,
            flavor="pickle",
            input_schema=spec["schema"],
            train_stats=None,
            lineage=lineage,
            description=f"retrained by job {job['id']} on dataset {dataset['id'][:12]}",
            reference=reference,
        )
        registry.set_alias(
            conn,
            name,
            "candidate",
            number,
            actor=job["created_by"],
            reason=f"retrain job {job['id']}",
        )
    progress(0.8, f"version {number} stored as candidate")
    decision = None
    if model.gate and params.get("promote", True):
        decision = apply_gate(store, artifacts, name, number, model.gate, trained.metrics, champion)
        progress(0.95, f"gate: {decision['decision']} ({decision['reason']})")
    return {
        "version": number,
        "dataset": dataset["id"],
        "rows": dataset["rows"],
        "metrics": trained.metrics,
        "champion_metrics": champion,
        "gate": decision,
    }


def _champion_metrics(
    store: Any, artifacts: Any, name: str, trained: Any, spec: dict[str, Any]
) -> dict[str, Any] | None:
    """The production version's metrics on the candidate's holdout rows (None if none)."""
    with store.read() as conn:
        aliases = registry.get_model(conn, name)["aliases"]
        if "production" not in aliases:
            return None
        row = registry.version_row(conn, name, aliases["production"])
    loaded = flavors.load(row.flavor, artifacts.local_path(row.sha256), trust_code=True)
    from . import training

    metrics: dict[str, Any] = training.evaluate(
        loaded.obj, trained.holdout, spec["target"], spec["task"]
    )
    return {**metrics, "version": aliases["production"]}


def apply_gate(
    store: Any,
    artifacts: Any,
    name: str,
    version: int,
    gate: dict[str, Any],
    metrics: dict[str, Any],
    champion: dict[str, Any] | None,
) -> dict[str, Any]:
    """Promote ``version`` or keep it a candidate, by the gate; the decision is an event."""
    metric = gate["metric"]
    ours = metrics.get(metric)
    reasons = []
    if ours is None:
        reasons.append(f"the candidate has no holdout {metric}")
    elif champion is not None and champion.get(metric) is not None:
        theirs = champion[metric]
        margin = gate.get("min_improvement", 0.0)
        better = theirs - ours if metric in LOWER_IS_BETTER else ours - theirs
        if better < margin:
            reasons.append(
                f"holdout {metric} {ours:.4g} against the champion's {theirs:.4g}: an improvement of "
                f"{better:.4g}, less than {margin:g}"
            )
    replay_report = None
    if gate.get("replay") and champion is not None and not reasons:
        from .replay import replay_version

        bounds = gate["replay"]
        since = time.time() - float(bounds.get("hours", 24)) * 3600
        replay_report = replay_version(store, artifacts, name, version, since=since, until=None)
        agreement = replay_report["agreement"]
        rejected = replay_report["rejected_share"]
        if agreement is not None and agreement < bounds.get("min_agreement", 0.0):
            reasons.append(f"replay agreement {agreement:.3f} below {bounds['min_agreement']:g}")
        if rejected is not None and rejected > bounds.get("max_rejected", 1.0):
            reasons.append(
                f"replay rejected {rejected:.3f} of rows, above {bounds['max_rejected']:g}"
            )
    decision = "refused" if reasons else "promoted"
    reason = "; ".join(reasons) or (
        f"holdout {metric} {ours:.4g}" + (f" against {champion[metric]:.4g}" if champion else "")
    )
    with store.transaction() as conn:
        model = registry.model_row(conn, name)
        if decision == "promoted":
            registry.set_alias(conn, name, "production", version, actor=GATE_ACTOR, reason=reason)
        releases.record_event(
            conn,
            model.id,
            f"gate_{decision}",
            GATE_ACTOR,
            {
                "version": version,
                "reason": reason,
                "metric": metric,
                "candidate": metrics.get(metric),
                "champion": champion.get(metric) if champion else None,
                "replay": replay_report,
            },
        )
    return {"decision": decision, "reason": reason}


# -- triggers ---------------------------------------------------------------------------------------

TRIGGER_ACTOR = "modelport-trigger"


class MetricBelow(Document):
    """Retrain when the live metric from feedback falls below a threshold."""

    metric: Literal["accuracy", "mean_reward"]
    threshold: Number = Field(ge=0)
    window_s: Number | None = Field(None, ge=0, description="The window read (seconds).")
    min_feedback: Number | None = Field(None, ge=0, description="Feedback needed to judge.")


class Triggers(Document):
    """When a model retrains by itself (at least one trigger)."""

    every_seconds: Number | None = Field(None, gt=0)
    after_observations: Number | None = Field(None, gt=0)
    metric_below: MetricBelow | None = None


def check_triggers(doc: Any) -> dict[str, Any] | None:
    """Retraining triggers, checked (None removes them)::

    {"every_seconds": 86400, "after_observations": 1000,
     "metric_below": {"metric": "accuracy", "threshold": 0.8, "window_s": 3600,
                      "min_feedback": 30}}
    """
    if doc is None:
        return None
    if isinstance(doc, dict) and not doc:
        raise InvalidInput(
            "triggers must be an object with at least one trigger",
            details=[{"field": "triggers", "reason": "expected a non-empty object"}],
        )
    checked(Triggers, doc, "triggers", "triggers")
    return dict(doc)


def due_trigger(conn: Any, name: str, now: float) -> str | None:
    """Why a retrain of ``name`` is due now, or None (also None while one is queued or runs)."""
    import sqlalchemy as sa

    from ..jobs import queue as jobmod
    from ..store.tables import datasets, feedback, jobs, predictions

    model = registry.model_row(conn, name)
    triggers = model.triggers
    if not triggers or model.spec is None or jobmod.active_job(conn, model.id, "retrain"):
        return None
    every = triggers.get("every_seconds")
    if every:
        last = conn.execute(
            sa.select(sa.func.max(jobs.c.created_at)).where(
                jobs.c.model_id == model.id, jobs.c.type == "retrain"
            )
        ).scalar()
        if last is None or now - last >= every:
            return f"schedule: every {every:g} s"
    after = triggers.get("after_observations")
    if after:
        through = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(datasets.c.through_observation), 0)).where(
                datasets.c.model_id == model.id
            )
        ).scalar()
        count, _ = learning.observation_count(conn, model.id, after=int(through))
        if count >= after:
            return f"{count} new observations (at least {after:g})"
    below = triggers.get("metric_below")
    production = registry.get_model(conn, name)["aliases"].get("production")
    if below and production is not None:
        column = feedback.c.correct if below["metric"] == "accuracy" else feedback.c.reward
        value = (
            sa.case((column == sa.true(), 1.0), else_=0.0)
            if below["metric"] == "accuracy"
            else column
        )
        row = conn.execute(
            sa.select(sa.func.count(), sa.func.avg(value))
            .select_from(feedback.join(predictions, predictions.c.id == feedback.c.ledger_id))
            .where(
                predictions.c.model == name,
                predictions.c.version == production,
                predictions.c.shadow == sa.false(),
                predictions.c.ts >= now - float(below.get("window_s", 3600)),
                column.is_not(None),
            )
        ).one()
        n, mean = int(row[0]), row[1]
        if n >= below.get("min_feedback", 30) and mean is not None and mean < below["threshold"]:
            return (
                f"live {below['metric']} {mean:.3f} of version {production} below "
                f"{below['threshold']:g} ({n} feedback items)"
            )
    return None


def trigger_retrain(conn: Any, name: str, reason: str) -> dict[str, Any] | None:
    """Queue a retrain for ``reason`` unless one is already queued or running; the event."""
    from ..jobs import queue as jobmod

    model = registry.model_row(conn, name)
    if jobmod.active_job(conn, model.id, "retrain"):
        return None
    job = jobmod.create_job(conn, name, "retrain", {"seed": 0, "holdout": 0.2}, actor=TRIGGER_ACTOR)
    releases.record_event(
        conn, model.id, "retrain_triggered", TRIGGER_ACTOR, {"job": job["id"], "reason": reason}
    )
    return job
