"""Experiment statistics: each arm's metric with a confidence interval, and its test against
the control arm.

Pure and aggregate-based: the service layer reads per-arm counts and sums from the store and
passes them in as :class:`ArmAggregate`; :func:`report` returns plain JSON-ready data. Where data
is too thin for a number (no feedback, a single observation, no variance), the number is
``None`` and a ``reason`` says why; no NaN and no exception for thin data.

Metrics, and what ``n``, ``total`` and ``total_sq`` of an :class:`ArmAggregate` hold for each:

=============== ========================= ========================= =============================
metric          n                         total                     total_sq
=============== ========================= ========================= =============================
``accuracy``    labelled predictions      correct ones              (unused)
``mean_reward`` rewards                   sum of rewards            sum of squared rewards
``rmse``        labelled predictions      sum of squared errors     sum of squared errors squared
=============== ========================= ========================= =============================

Intervals: Wilson score for accuracy; Student t for the mean reward; for RMSE, the t interval of
the mean squared error, its lower end clamped at 0, square-rooted (approximate: squared errors
are skewed, so the t interval is only asymptotically right, but it needs nothing the store does
not already sum). Tests against the control: the pooled two-proportion z-test for accuracy;
Welch's t-test for the mean reward, and for RMSE on the squared errors (equal MSE and equal RMSE
are the same hypothesis, since the square root is increasing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy import stats

METRICS = ("accuracy", "mean_reward", "rmse")

_TESTS = {
    "accuracy": "two-proportion z-test (pooled)",
    "mean_reward": "Welch's t-test",
    "rmse": "Welch's t-test on squared errors",
}


@dataclass(frozen=True)
class ArmAggregate:
    """One arm's requests and the feedback aggregate for one metric (see the module table)."""

    requests: int
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0


@dataclass(frozen=True)
class _Sample:
    """The tested quantity of one arm (a 0/1 outcome, a reward, a squared error)."""

    n: int
    mean: float | None  # None without feedback
    var: float | None  # sample variance (n - 1 in the denominator); None when n < 2


def report(
    arms: Mapping[str, ArmAggregate], control: str, metric: str, alpha: float = 0.05
) -> dict[str, Any]:
    """The experiment report: per arm, the metric, its interval and its test against ``control``.

    Intervals are at confidence ``1 - alpha``; a difference is ``significant`` when its p-value
    is below ``alpha``. Arms keep the order of ``arms``. Raises ValueError for an unknown metric,
    a ``control`` not among the arms, ``alpha`` outside (0, 1) or impossible aggregates.

    Example, ``report({"a": ArmAggregate(100, 100, 45), "b": ArmAggregate(100, 100, 60)},
    control="a", metric="accuracy")``::

        {"metric": "accuracy", "control": "a", "alpha": 0.05, "confidence": 0.95,
         "arms": [
           {"arm": "a", "requests": 100, "share": 0.5, "feedback": 100, "value": 0.45,
            "ci": {"low": 0.3561, "high": 0.5476}, "reason": None, "vs_control": None},
           {"arm": "b", "requests": 100, "share": 0.5, "feedback": 100, "value": 0.6,
            "ci": {"low": 0.5020, "high": 0.6906}, "reason": None,
            "vs_control": {"difference": 0.15, "test": "two-proportion z-test (pooled)",
                           "statistic": 2.1239, "p_value": 0.0337, "significant": True,
                           "reason": None}}]}

    (numbers rounded here, full floats in the result). An arm's ``value`` is None without
    feedback and ``ci`` is None when it cannot be computed, ``reason`` saying why; likewise in
    ``vs_control`` (None for the control itself), ``statistic``, ``p_value`` and ``significant``
    are None when the difference cannot be tested.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    if control not in arms:
        raise ValueError(f"the control arm {control!r} is not among the arms")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (got {alpha})")
    samples = {name: _sample(name, agg, metric) for name, agg in arms.items()}
    all_requests = sum(agg.requests for agg in arms.values())
    rows = []
    for name, agg in arms.items():
        value, ci, reason = _estimate(samples[name], metric, 1 - alpha)
        rows.append(
            {
                "arm": name,
                "requests": int(agg.requests),
                "share": int(agg.requests) / int(all_requests) if all_requests else None,
                "feedback": int(agg.n),
                "value": value,
                "ci": None if ci is None else {"low": ci[0], "high": ci[1]},
                "reason": reason,
                "vs_control": None
                if name == control
                else _compare(samples[name], samples[control], metric, alpha),
            }
        )
    return {
        "metric": metric,
        "control": control,
        "alpha": float(alpha),
        "confidence": 1 - float(alpha),
        "arms": rows,
    }


def _sample(name: str, agg: ArmAggregate, metric: str) -> _Sample:
    """Check an aggregate and turn it into the mean and variance of the tested quantity."""
    # Plain Python numbers from here on, so no numpy scalar reaches the JSON-ready result.
    n, total, total_sq = int(agg.n), float(agg.total), float(agg.total_sq)
    if agg.requests < 0 or n < 0:
        raise ValueError(f"arm {name!r}: counts cannot be negative")
    if not (math.isfinite(total) and math.isfinite(total_sq)):
        raise ValueError(f"arm {name!r}: sums must be finite numbers")
    if metric == "accuracy":
        if total != round(total) or not 0 <= total <= n:
            raise ValueError(f"arm {name!r}: correct must be a whole number between 0 and n")
        total_sq = total  # the square of a 0/1 outcome is itself
    if n == 0:
        return _Sample(0, None, None)
    mean = total / n
    if n == 1:
        return _Sample(1, mean, None)
    spread = total_sq - total * mean  # (n - 1) times the sample variance
    # Sums of squares lose digits to cancellation: anything within rounding of 0 is 0.
    tolerance = 1e-10 * abs(total_sq)
    if spread < -tolerance:
        raise ValueError(f"arm {name!r}: the sum of squares is smaller than the sum allows")
    return _Sample(n, mean, spread / (n - 1) if spread > tolerance else 0.0)


def _estimate(
    s: _Sample, metric: str, confidence: float
) -> tuple[float | None, tuple[float, float] | None, str | None]:
    """An arm's metric value, its interval and, when either is missing, why."""
    if s.mean is None:
        return None, None, "no feedback"
    if metric == "accuracy":
        # Wilson rather than Wald: it stays inside [0, 1] and is sensible at 0 % and 100 %.
        ci = stats.binomtest(round(s.mean * s.n), s.n).proportion_ci(
            confidence_level=confidence, method="wilson"
        )
        return s.mean, (float(ci.low), float(ci.high)), None
    value = math.sqrt(s.mean) if metric == "rmse" else s.mean
    if s.var is None:
        return value, None, "one feedback event: no interval"
    if s.var == 0:
        return value, None, "no variance in the feedback: no interval"
    low, high = stats.t.interval(confidence, s.n - 1, loc=s.mean, scale=math.sqrt(s.var / s.n))
    if metric == "rmse":
        return value, (math.sqrt(max(float(low), 0.0)), math.sqrt(float(high))), None
    return value, (float(low), float(high)), None


def _compare(arm: _Sample, ctrl: _Sample, metric: str, alpha: float) -> dict[str, Any]:
    """The arm's difference to the control and, when there is enough data, its test."""
    result: dict[str, Any] = {
        "difference": None,
        "test": _TESTS[metric],
        "statistic": None,
        "p_value": None,
        "significant": None,
        "reason": None,
    }
    if arm.mean is None or ctrl.mean is None:
        result["reason"] = "no feedback in " + ("this arm" if arm.mean is None else "the control")
        return result
    if metric == "rmse":
        result["difference"] = math.sqrt(arm.mean) - math.sqrt(ctrl.mean)
    else:
        result["difference"] = arm.mean - ctrl.mean

    if metric == "accuracy":
        pooled = (arm.mean * arm.n + ctrl.mean * ctrl.n) / (arm.n + ctrl.n)
        if pooled in (0.0, 1.0):
            result["reason"] = "no variance: every outcome in both arms is the same"
            return result
        se = math.sqrt(pooled * (1 - pooled) * (1 / arm.n + 1 / ctrl.n))
        statistic = (arm.mean - ctrl.mean) / se
        p_value = 2 * float(stats.norm.sf(abs(statistic)))
    else:
        if arm.var is None or ctrl.var is None:
            result["reason"] = "fewer than 2 feedback events in an arm"
            return result
        if arm.var == 0 and ctrl.var == 0:
            result["reason"] = "no variance in either arm"
            return result
        # The test is on the tested quantity (squared errors for RMSE), arm minus control.
        welch = stats.ttest_ind_from_stats(
            arm.mean,
            math.sqrt(arm.var),
            arm.n,
            ctrl.mean,
            math.sqrt(ctrl.var),
            ctrl.n,
            equal_var=False,
        )
        statistic, p_value = float(welch.statistic), float(welch.pvalue)
    result.update(statistic=statistic, p_value=p_value, significant=p_value < alpha)
    return result
