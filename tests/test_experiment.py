"""Experiment report: intervals and tests checked against hand calculations and scipy on the raw
samples, thin data reported with reasons, and output that is plain JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from modelport.releases.experiment import ArmAggregate, report

# Two small reward samples; the treatment arm "b" is better on average.
REWARDS_A = [0.2, 0.5, 0.9, 0.4, 0.7]
REWARDS_B = [0.6, 0.8, 0.9, 0.75, 1.0, 0.95]
# Prediction errors of a regression model per arm.
ERRORS_A = [0.5, -1.2, 2.0, 0.1, -0.7, 1.5, -0.3]
ERRORS_B = [0.2, -0.4, 0.6, 0.1, -0.3, 0.5]


def summed(values: list[float], requests: int = 50) -> ArmAggregate:
    """The aggregate the store would sum for these feedback values."""
    x = np.asarray(values, dtype=float)
    return ArmAggregate(requests, len(x), float(x.sum()), float((x**2).sum()))


def squared(errors: list[float], requests: int = 50) -> ArmAggregate:
    """The RMSE aggregate of these prediction errors: n, sum of e^2, sum of (e^2)^2."""
    return summed([e * e for e in errors], requests)


def arm(result: dict[str, Any], name: str) -> dict[str, Any]:
    row: dict[str, Any] = next(r for r in result["arms"] if r["arm"] == name)
    return row


def test_two_proportion_z_test_45_of_100_vs_60_of_100() -> None:
    result = report(
        {"a": ArmAggregate(120, 100, 45), "b": ArmAggregate(80, 100, 60)}, "a", "accuracy"
    )
    # By hand: pooled p = 105/200 = 0.525, se = sqrt(0.525 * 0.475 * (1/100 + 1/100)).
    z = 0.15 / math.sqrt(0.525 * 0.475 * 0.02)
    p = math.erfc(abs(z) / math.sqrt(2))  # two-sided normal tail
    assert z == pytest.approx(2.1239769762)
    assert p == pytest.approx(0.0336720689)
    versus = arm(result, "b")["vs_control"]
    assert versus["test"] == "two-proportion z-test (pooled)"
    assert versus["difference"] == pytest.approx(0.15)
    assert versus["statistic"] == pytest.approx(z)
    assert versus["p_value"] == pytest.approx(p)
    assert versus["significant"] is True
    # The pooled z-test is the chi-square test of the 2x2 table without continuity correction.
    chi2, p_chi2, _, _ = stats.chi2_contingency([[45, 55], [60, 40]], correction=False)
    assert versus["statistic"] ** 2 == pytest.approx(chi2)
    assert versus["p_value"] == pytest.approx(p_chi2)
    assert arm(result, "a")["vs_control"] is None
    assert arm(result, "a")["share"] == 0.6
    assert arm(result, "b")["value"] == 0.6


def test_a_worse_arm_has_a_negative_difference_and_alpha_is_configurable() -> None:
    arms = {"a": ArmAggregate(100, 100, 60), "b": ArmAggregate(100, 100, 45)}
    versus = arm(report(arms, "a", "accuracy"), "b")["vs_control"]
    assert versus["difference"] == pytest.approx(-0.15)
    assert versus["statistic"] == pytest.approx(-2.1239769762)
    strict = report(arms, "a", "accuracy", alpha=0.01)
    assert strict["confidence"] == pytest.approx(0.99)
    assert arm(strict, "b")["vs_control"]["significant"] is False
    wide, narrow = arm(strict, "a")["ci"], arm(report(arms, "a", "accuracy"), "a")["ci"]
    assert wide["low"] < narrow["low"] < narrow["high"] < wide["high"]


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Statistics in Medicine 17, table I
        (0, 10, 0.0, 0.2775),  # Wilson stays sensible at 0 %
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval(correct: int, n: int, low: float, high: float) -> None:
    ci = arm(report({"a": ArmAggregate(n, n, correct)}, "a", "accuracy"), "a")["ci"]
    assert ci["low"] == pytest.approx(low, abs=5e-5)
    assert ci["high"] == pytest.approx(high, abs=5e-5)
    # The closed form: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, p = stats.norm.ppf(0.975), correct / n
    centre, half = p + z**2 / (2 * n), z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert ci["low"] == pytest.approx((centre - half) / (1 + z**2 / n), abs=1e-12)
    assert ci["high"] == pytest.approx((centre + half) / (1 + z**2 / n), abs=1e-12)


def test_mean_reward_welch_test_matches_scipy_on_the_raw_samples() -> None:
    result = report({"a": summed(REWARDS_A), "b": summed(REWARDS_B)}, "a", "mean_reward")
    expected = stats.ttest_ind(REWARDS_B, REWARDS_A, equal_var=False)
    versus = arm(result, "b")["vs_control"]
    assert versus["test"] == "Welch's t-test"
    assert versus["difference"] == pytest.approx(np.mean(REWARDS_B) - np.mean(REWARDS_A))
    assert versus["statistic"] == pytest.approx(expected.statistic)
    assert versus["p_value"] == pytest.approx(expected.pvalue)
    assert versus["significant"] is bool(expected.pvalue < 0.05)
    for name, sample in (("a", REWARDS_A), ("b", REWARDS_B)):
        row = arm(result, name)
        interval = stats.ttest_1samp(sample, 0.0).confidence_interval(0.95)
        assert row["value"] == pytest.approx(np.mean(sample))
        assert row["ci"]["low"] == pytest.approx(interval.low)
        assert row["ci"]["high"] == pytest.approx(interval.high)


def test_rmse_is_tested_on_squared_errors() -> None:
    result = report({"a": squared(ERRORS_A), "b": squared(ERRORS_B)}, "a", "rmse")
    sq_a, sq_b = np.square(ERRORS_A), np.square(ERRORS_B)
    expected = stats.ttest_ind(sq_b, sq_a, equal_var=False)
    versus = arm(result, "b")["vs_control"]
    assert versus["test"] == "Welch's t-test on squared errors"
    assert versus["difference"] == pytest.approx(math.sqrt(sq_b.mean()) - math.sqrt(sq_a.mean()))
    assert versus["statistic"] == pytest.approx(expected.statistic)
    assert versus["p_value"] == pytest.approx(expected.pvalue)
    for name, sq in (("a", sq_a), ("b", sq_b)):
        row = arm(result, name)
        interval = stats.ttest_1samp(sq, 0.0).confidence_interval(0.95)
        assert row["value"] == pytest.approx(math.sqrt(sq.mean()))
        assert row["ci"]["low"] == pytest.approx(math.sqrt(max(interval.low, 0.0)))
        assert row["ci"]["high"] == pytest.approx(math.sqrt(interval.high))
    # Arm "a" has one large error in seven: its MSE interval reaches below 0 and is clamped.
    assert stats.ttest_1samp(sq_a, 0.0).confidence_interval(0.95).low < 0
    assert arm(result, "a")["ci"]["low"] == 0.0


def test_no_feedback() -> None:
    result = report({"a": ArmAggregate(10), "b": summed(REWARDS_B)}, "a", "mean_reward")
    control, other = arm(result, "a"), arm(result, "b")
    assert (control["value"], control["ci"], control["reason"]) == (None, None, "no feedback")
    assert other["vs_control"]["difference"] is None
    assert other["vs_control"]["p_value"] is None
    assert other["vs_control"]["significant"] is None
    assert other["vs_control"]["reason"] == "no feedback in the control"
    flipped = report({"a": squared(ERRORS_A), "b": ArmAggregate(3)}, "a", "rmse")
    assert arm(flipped, "b")["vs_control"]["reason"] == "no feedback in this arm"


@pytest.mark.parametrize("metric", ["mean_reward", "rmse"])
def test_a_single_feedback_event_has_a_value_but_no_interval_or_test(metric: str) -> None:
    # One reward of 0.25, or one squared error of 0.25 (an RMSE of 0.5).
    result = report({"a": summed([0.25]), "b": summed(REWARDS_B)}, "a", metric)
    control = arm(result, "a")
    assert control["value"] == pytest.approx(0.25 if metric == "mean_reward" else 0.5)
    assert control["ci"] is None
    assert control["reason"] == "one feedback event: no interval"
    versus = arm(result, "b")["vs_control"]
    assert versus["difference"] is not None
    assert versus["statistic"] is None
    assert versus["reason"] == "fewer than 2 feedback events in an arm"


def test_zero_variance() -> None:
    # Ten rewards of 0.1: the sums carry rounding, yet the variance is exactly zero.
    result = report({"a": summed([0.1] * 10), "b": summed([0.7] * 4)}, "a", "mean_reward")
    assert arm(result, "a")["value"] == pytest.approx(0.1)
    assert arm(result, "a")["ci"] is None
    assert arm(result, "a")["reason"] == "no variance in the feedback: no interval"
    versus = arm(result, "b")["vs_control"]
    assert versus["difference"] == pytest.approx(0.6)
    assert (versus["p_value"], versus["reason"]) == (None, "no variance in either arm")
    # One constant arm against a varying one is still a Welch test; with no variance in the
    # control it reduces to a one-sample t-test of the other arm against the control's value.
    mixed = report({"a": summed([0.25] * 10), "b": summed(REWARDS_B)}, "a", "mean_reward")
    expected = stats.ttest_1samp(REWARDS_B, 0.25)
    assert arm(mixed, "b")["vs_control"]["statistic"] == pytest.approx(expected.statistic)
    assert arm(mixed, "b")["vs_control"]["p_value"] == pytest.approx(expected.pvalue)


def test_accuracy_with_every_outcome_the_same() -> None:
    result = report({"a": ArmAggregate(5, 5, 5), "b": ArmAggregate(3, 3, 3)}, "a", "accuracy")
    assert arm(result, "a")["value"] == 1.0
    assert arm(result, "a")["ci"]["high"] == 1.0
    versus = arm(result, "b")["vs_control"]
    assert versus["difference"] == 0.0
    assert versus["p_value"] is None
    assert versus["reason"] == "no variance: every outcome in both arms is the same"


def test_the_report_is_plain_json() -> None:
    arms = {
        "control": summed(REWARDS_A),
        "one": summed([0.5]),
        "none": ArmAggregate(0),
        "flat": summed([0.2] * 3),
        "good": summed(REWARDS_B, requests=np.int64(7)),  # type: ignore[arg-type]
        "numpy": ArmAggregate(np.int64(9), np.int64(3), np.float64(1.5), np.float64(0.9)),  # type: ignore[arg-type]
    }
    for metric in ("mean_reward", "rmse"):
        result = report(arms, "control", metric)
        assert [r["arm"] for r in result["arms"]] == list(arms)
        assert json.loads(json.dumps(result, allow_nan=False)) == result
        _assert_plain(result)
    accuracy = report({"a": ArmAggregate(0), "b": ArmAggregate(4, 4, 1)}, "a", "accuracy")
    assert arm(accuracy, "a")["share"] == 0.0
    _assert_plain(accuracy)
    assert report({"a": ArmAggregate(0)}, "a", "accuracy")["arms"][0]["share"] is None


def _assert_plain(value: Any) -> None:
    """Only JSON's own types: no numpy scalars (np.float64 would pass json.dumps unnoticed)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)
    else:
        assert type(value) in (str, int, float, bool, type(None)), (value, type(value))
        assert not (type(value) is float and not math.isfinite(value))


@pytest.mark.parametrize(
    ("arms", "control", "metric", "alpha", "message"),
    [
        ({"a": ArmAggregate(1)}, "a", "f1", 0.05, "unknown metric 'f1'"),
        ({"a": ArmAggregate(1)}, "z", "accuracy", 0.05, "control arm 'z'"),
        ({"a": ArmAggregate(1)}, "a", "accuracy", 0.0, "alpha"),
        ({"a": ArmAggregate(1)}, "a", "accuracy", 1.0, "alpha"),
        ({"a": ArmAggregate(9, 4, 5)}, "a", "accuracy", 0.05, "whole number between 0 and n"),
        ({"a": ArmAggregate(9, 4, 2.5)}, "a", "accuracy", 0.05, "whole number between 0 and n"),
        ({"a": ArmAggregate(9, -1)}, "a", "accuracy", 0.05, "negative"),
        ({"a": ArmAggregate(9, 2, 4.0, 1.0)}, "a", "mean_reward", 0.05, "sum of squares"),
        ({"a": ArmAggregate(9, 2, math.nan, 1.0)}, "a", "rmse", 0.05, "finite"),
    ],
)
def test_invalid_input(
    arms: dict[str, ArmAggregate], control: str, metric: str, alpha: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        report(arms, control, metric, alpha)
