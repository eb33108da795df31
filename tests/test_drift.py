"""Drift statistics on tiny data, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelport.monitoring import drift

THRESHOLDS = {"psi": 0.2, "ks_pvalue": 0.01, "chi2_pvalue": 0.01, "min_rows": 1}


def test_numeric_psi_uses_the_reference_deciles_and_floors_empty_bins() -> None:
    reference = list(range(1, 11))  # deciles 1.9, 2.8, ..., 9.1: one value per bin
    current = [1] * 5 + [10] * 5  # half in the first bin, half in the last, none between
    eps = drift.EPSILON
    by_hand = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (eps - 0.1) * math.log(eps / 0.1)
    assert drift.numeric_psi(reference, current) == pytest.approx(by_hand, rel=1e-12)
    assert drift.numeric_psi(reference, reference) == pytest.approx(0.0, abs=1e-12)


def test_categorical_psi_puts_unseen_values_in_a_bin_of_their_own() -> None:
    reference = ["a", "a", "b", "b"]
    current = ["a", "a", "a", "c"]  # "c" was never seen
    eps = drift.EPSILON
    by_hand = (
        (0.75 - 0.5) * math.log(0.75 / 0.5)
        + (eps - 0.5) * math.log(eps / 0.5)
        + (0.25 - eps) * math.log(0.25 / eps)
    )
    names, ref_counts, cur_counts = drift.category_counts(reference, current)
    assert names == ["a", "b", drift.UNSEEN]
    assert (ref_counts.tolist(), cur_counts.tolist()) == ([2, 2, 0], [3, 0, 1])
    assert drift.categorical_psi(reference, current) == pytest.approx(by_hand, rel=1e-12)


def test_a_shifted_number_is_flagged_and_an_unshifted_one_is_not() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, 2000).tolist()
    same = drift.compare("x", True, reference, rng.normal(0, 1, 500).tolist())
    shifted = drift.compare("x", True, reference, rng.normal(1, 1, 500).tolist())
    assert same is not None and shifted is not None
    assert same["kind"] == shifted["kind"] == "numeric"
    assert drift.judge(same, THRESHOLDS) == []
    reasons = drift.judge(shifted, THRESHOLDS)
    assert shifted["psi"] > 0.2 and shifted["ks_pvalue"] < 0.01
    assert any(r.startswith("psi") for r in reasons) and any(r.startswith("ks") for r in reasons)


def test_a_shifted_category_is_flagged_and_an_unshifted_one_is_not() -> None:
    rng = np.random.default_rng(3)
    colors = ["red", "green", "blue"]
    reference = rng.choice(colors, 2000, p=[0.5, 0.3, 0.2]).tolist()
    same = drift.compare("color", False, reference, rng.choice(colors, 500, p=[0.5, 0.3, 0.2]))
    shifted = drift.compare("color", False, reference, rng.choice(colors, 500, p=[0.1, 0.1, 0.8]))
    assert same is not None and shifted is not None
    assert same["kind"] == "categorical" and "chi2" in same
    assert drift.judge(same, THRESHOLDS) == []
    assert shifted["chi2_pvalue"] < 0.01 and shifted["psi"] > 0.2
    assert len(drift.judge(shifted, THRESHOLDS)) == 2


def test_one_category_on_both_sides_is_no_drift_and_missing_values_are_left_out() -> None:
    found = drift.compare("flag", False, [True, True, None], [True, None])
    assert found is not None
    assert (found["chi2"], found["chi2_pvalue"], found["psi"]) == (0.0, 1.0, 0.0)
    assert drift.compare("x", True, [None], [1.0]) is None


def test_samples_are_seeded_and_bounded() -> None:
    rows = list(range(10_000))
    first = drift.sample_rows(rows, 100, seed=1)
    assert first == drift.sample_rows(rows, 100, seed=1) and len(first) == 100
    assert first == sorted(first) and first != drift.sample_rows(rows, 100, seed=2)
    assert drift.sample_rows(rows[:5], 100) == rows[:5]
