"""Canary guards: when a candidate's live traffic says it must go, roll it back and say why.

Every server checks every canary policy each ``release_check_seconds`` against the store:

- error rate: the candidate's failed calls over its attempts in the guard window;
- p99 latency of the candidate's answers in the window (``max_p99_ms``);
- a live metric from feedback (``accuracy`` from labels, or ``mean_reward``) over the whole
  experiment, candidate against champion: a drop beyond ``max_metric_drop``.

Each guard needs ``min_requests`` (or ``min_feedback``) before it judges. A breach replaces the
policy with the champion alone, only if the policy is still the one judged (so of the servers
that see it, one acts), and records a ``canary_rollback`` event with the figures. Requests the
candidate fails meanwhile are answered by the champion (see the service), so callers see no
errors while the guard gathers its evidence.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from . import consumers as releases
from . import outcomes
from .traffic import Policy


def breach(
    conn: Connection, model: str, policy: Policy, rev: int, now: float
) -> dict[str, Any] | None:
    """The first guard the candidate breaks, with its figures; None while it holds."""
    guards = policy.guards
    assert guards is not None
    window = outcomes.traffic(
        conn, model, rev, since=now - guards.window_s, latency=guards.max_p99_ms is not None
    )
    candidate = window.get("candidate", outcomes.ArmTraffic())
    attempts = candidate.requests + candidate.failures
    if attempts >= guards.min_requests:
        rate = candidate.failures / attempts
        if rate > guards.max_error_rate:
            return {
                "guard": "error_rate",
                "reason": f"error rate {rate:.3f} above {guards.max_error_rate:g} "
                f"({candidate.failures} of {attempts} calls failed)",
                "value": rate,
                "limit": guards.max_error_rate,
            }
    if (
        guards.max_p99_ms is not None
        and candidate.requests >= guards.min_requests
        and candidate.p99_ms is not None
        and candidate.p99_ms > guards.max_p99_ms
    ):
        return {
            "guard": "p99_ms",
            "reason": f"p99 latency {candidate.p99_ms:.1f} ms above {guards.max_p99_ms:g} ms",
            "value": candidate.p99_ms,
            "limit": guards.max_p99_ms,
        }
    if guards.metric is not None:
        kind = "correct" if guards.metric == "accuracy" else "reward"
        stats = outcomes.feedback_stats(conn, model, rev, kind)
        cand, champ = stats.get("candidate"), stats.get("champion")
        if cand and champ and cand.n >= guards.min_feedback and champ.n >= guards.min_feedback:
            ours, theirs = cand.total / cand.n, champ.total / champ.n
            if ours < theirs - guards.max_metric_drop:
                return {
                    "guard": guards.metric,
                    "reason": f"{guards.metric} {ours:.3f} against the champion's {theirs:.3f} "
                    f"(more than {guards.max_metric_drop:g} lower; {cand.n} and {champ.n} "
                    "feedback items)",
                    "value": ours,
                    "limit": theirs - guards.max_metric_drop,
                }
    return None


def roll_back(
    conn: Connection, model_id: int, policy: Policy, rev: int, found: dict[str, Any]
) -> bool:
    """Serve the champion alone, if the policy is still ``rev``; record the breach."""
    doc = {"policy": "single", "target": policy.arms[0].target.to_dict()}
    detail = {"from_revision": rev, "candidate": policy.arms[1].target.to_dict(), **found}
    return releases.replace_policy_if_current(conn, model_id, rev, doc, "canary_rollback", detail)
