"""What the traffic of one experiment did, per arm: read from the ledger, feedback and failures.

Bandits, canary guards and experiment reports all ask the same questions of the store, for one
model and one traffic revision (every policy change starts a new one): how many requests and
rows each arm answered, how many failed, how fast, and what the feedback says. Feedback is
reduced to the newest item of each kind per prediction (a later label supersedes an earlier
one). Every server process computes the same answers, because they come from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import InvalidInput
from ..store.tables import failures, feedback, predictions

#: The most latencies read to estimate a p99 (the newest ones).
_LATENCY_SAMPLE = 5000


@dataclass(frozen=True)
class ArmTraffic:
    requests: int = 0
    rows: int = 0
    failures: int = 0
    p99_ms: float | None = None


@dataclass(frozen=True)
class ArmFeedback:
    """Sufficient statistics of one feedback kind for one arm."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0


def _scope(model: str, rev: int, since: float | None) -> list[Any]:
    where = [
        predictions.c.model == model,
        predictions.c.traffic_rev == rev,
        predictions.c.shadow == sa.false(),
    ]
    if since is not None:
        where.append(predictions.c.ts >= since)
    return where


def traffic(
    conn: Connection,
    model: str,
    rev: int,
    *,
    since: float | None = None,
    latency: bool = False,
    shadow: bool = False,
) -> dict[str, ArmTraffic]:
    """Requests, rows and failures per arm (and the p99 latency when ``latency``)."""
    where = _scope(model, rev, since)
    if shadow:
        where[2] = predictions.c.shadow == sa.true()
    counts = {
        r.arm: [int(r.requests), int(r.rows or 0)]
        for r in conn.execute(
            sa.select(
                predictions.c.arm,
                sa.func.count().label("requests"),
                sa.func.sum(predictions.c.rows).label("rows"),
            )
            .where(*where)
            .group_by(predictions.c.arm)
        )
    }
    fwhere = [failures.c.model == model, failures.c.traffic_rev == rev]
    if since is not None:
        fwhere.append(failures.c.ts >= since)
    failed = {
        r.arm: int(r.n)
        for r in conn.execute(
            sa.select(failures.c.arm, sa.func.count().label("n"))
            .where(*fwhere)
            .group_by(failures.c.arm)
        )
    }
    out = {}
    for arm in set(counts) | set(failed):
        p99 = None
        if latency and arm in counts:
            values = conn.execute(
                sa.select(predictions.c.latency_ms)
                .where(*where, predictions.c.arm == arm)
                .order_by(predictions.c.id.desc())
                .limit(_LATENCY_SAMPLE)
            ).scalars()
            sample = np.fromiter(values, dtype=float)
            p99 = float(np.percentile(sample, 99)) if sample.size else None
        requests, rows = counts.get(arm, [0, 0])
        out[arm] = ArmTraffic(requests, rows, failed.get(arm, 0), p99)
    return out


def newest_feedback(*where: Any) -> sa.Subquery:
    """The ids of the newest feedback item per prediction among those matching ``where``
    (conditions on ``feedback`` and its ``predictions`` row): a later label supersedes."""
    return (
        sa.select(sa.func.max(feedback.c.id).label("id"))
        .select_from(feedback.join(predictions, predictions.c.id == feedback.c.ledger_id))
        .where(*where)
        .group_by(feedback.c.ledger_id, feedback.c.ledger_row)
        .subquery()
    )


def feedback_stats(
    conn: Connection,
    model: str,
    rev: int,
    kind: str,
    *,
    since: float | None = None,
) -> dict[str, ArmFeedback]:
    """Per arm, over the newest feedback of ``kind`` per prediction: ``reward`` (rewards),
    ``correct`` (labels equal to the prediction, as 0/1), ``error`` (label - prediction) or
    ``sq_error`` (its square: the sums an RMSE needs)."""
    column = {
        "reward": feedback.c.reward,
        "correct": feedback.c.correct,
        "error": feedback.c.error,
        "sq_error": feedback.c.error,
    }[kind]
    newest = newest_feedback(*_scope(model, rev, since), column.is_not(None))
    value: Any = sa.cast(column, sa.Float)
    if kind == "correct":
        value = sa.case((column == sa.true(), 1.0), else_=0.0)
    elif kind == "sq_error":
        value = value * value
    rows = conn.execute(
        sa.select(
            predictions.c.arm,
            sa.func.count().label("n"),
            sa.func.sum(value).label("total"),
            sa.func.sum(value * value).label("total_sq"),
        )
        .select_from(
            feedback.join(newest, newest.c.id == feedback.c.id).join(
                predictions, predictions.c.id == feedback.c.ledger_id
            )
        )
        .group_by(predictions.c.arm)
    )
    return {
        r.arm: ArmFeedback(int(r.n), float(r.total or 0.0), float(r.total_sq or 0.0)) for r in rows
    }


def report_for(
    conn: Connection,
    name: str,
    *,
    metric: str | None = None,
    revision: int | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The experiment report of a model's traffic revision (default: the current one)."""
    from ..registry import models as registry
    from . import experiment
    from .traffic import DEFAULT

    model = registry.model_row(conn, name)
    rev = revision if revision is not None else model.traffic_rev
    doc = (model.traffic or DEFAULT) if rev == model.traffic_rev else None
    if doc is None:  # an earlier revision: its policy is in the events
        doc = _policy_of_revision(conn, model.id, rev) or DEFAULT
    kind = doc.get("policy", "single")
    arm_names = _arm_names(doc)
    if metric is None:
        if kind == "bandit" and doc.get("reward", "reward") == "reward":
            metric = "mean_reward"
        else:
            metric = "rmse" if model.task == "regression" else "accuracy"
    if metric not in experiment.METRICS:
        raise InvalidInput(
            f"unknown metric {metric!r}; known: {', '.join(experiment.METRICS)}",
            details=[{"field": "metric", "reason": "unknown metric"}],
        )
    stat_kind = {"accuracy": "correct", "mean_reward": "reward", "rmse": "sq_error"}[metric]
    seen = traffic(conn, name, rev)
    fb = feedback_stats(conn, name, rev, stat_kind)
    if kind == "shadow":  # the shadow arm's own rows are marked shadow
        seen.update(traffic(conn, name, rev, shadow=True))
    names = arm_names + sorted(a for a in set(seen) | set(fb) if a not in arm_names and a)
    arms = {
        arm: experiment.ArmAggregate(
            seen.get(arm, ArmTraffic()).requests,
            fb.get(arm, ArmFeedback()).n,
            fb.get(arm, ArmFeedback()).total,
            fb.get(arm, ArmFeedback()).total_sq,
        )
        for arm in names
    } or {"main": experiment.ArmAggregate(0)}
    control = next(iter(arms))
    body = experiment.report(arms, control, metric, alpha)
    for arm in body["arms"]:
        t = seen.get(arm["arm"], ArmTraffic())
        arm["rows"] = t.rows
        arm["failures"] = t.failures
    return {"model": name, "revision": rev, "policy": kind, **body}


def _arm_names(doc: dict[str, Any]) -> list[str]:
    kind = doc.get("policy", "single")
    if kind in ("split", "bandit"):
        return [a["name"] for a in doc.get("arms", [])]
    if kind == "shadow":
        return ["primary", "shadow"]
    if kind == "canary":
        return ["champion", "candidate"]
    return []


def _policy_of_revision(conn: Connection, model_id: int, rev: int) -> dict[str, Any] | None:
    from ..store.tables import model_events

    for detail in conn.execute(
        sa.select(model_events.c.detail)
        .where(model_events.c.model_id == model_id)
        .order_by(model_events.c.id.desc())
    ).scalars():
        if isinstance(detail, dict) and detail.get("revision") == rev and "traffic" in detail:
            policy: dict[str, Any] = detail["traffic"]
            return policy
    return None
