"""Bandit policies: they find the better arm, are reproducible under a seed, and depend on
nothing but the statistics the store can rebuild."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import integrate, stats

from modelport.releases.bandits import (
    UCB1,
    ArmStats,
    BanditPolicy,
    EpsilonGreedy,
    Thompson,
    check_params,
    make_policy,
)

EMPTY = ArmStats(0, 0.0, 0.0)
RATES = {"A": 0.4, "B": 0.6}  # true mean rewards: B is better
FEEDBACK_EVENTS = 2_000  # every request gets its feedback at once: one event per request

Reward = Callable[[str, np.random.Generator], float]


def bernoulli(arm: str, rng: np.random.Generator) -> float:
    return float(rng.random() < RATES[arm])


def clipped_normal(arm: str, rng: np.random.Generator) -> float:
    return float(np.clip(rng.normal(RATES[arm], 0.2), 0.0, 1.0))


def simulate(policy: BanditPolicy, reward: Reward, seed: int, steps: int) -> list[str]:
    """Requests one at a time: choose an arm, draw its reward, add it to the statistics."""
    rng = np.random.default_rng(seed)
    arm_stats = {"A": EMPTY, "B": EMPTY}
    chosen = []
    for _ in range(steps):
        arm = policy.choose(arm_stats, rng)
        arm_stats[arm] = arm_stats[arm].add(reward(arm, rng))
        chosen.append(arm)
    return chosen


@pytest.mark.parametrize(
    ("kind", "params", "reward"),
    [
        ("thompson", {}, bernoulli),
        ("ucb1", {}, clipped_normal),
        ("epsilon_greedy", {"epsilon": 0.1}, clipped_normal),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_better_arm_gets_most_traffic_after_2000_feedback_events(
    kind: str, params: dict[str, float], reward: Reward, seed: int
) -> None:
    chosen = simulate(make_policy(kind, params), reward, seed, FEEDBACK_EVENTS)
    assert chosen[-200:].count("B") >= 160  # at least 80 % of the last 200 requests


@pytest.mark.parametrize("kind", ["thompson", "ucb1", "epsilon_greedy"])
def test_a_seed_fixes_every_choice(kind: str) -> None:
    policy = make_policy(kind, {})
    first = simulate(policy, clipped_normal, seed=7, steps=300)
    assert simulate(policy, clipped_normal, seed=7, steps=300) == first
    assert {"A", "B"} <= set(first)


def test_different_seeds_choose_differently() -> None:
    policy = make_policy("thompson", {})
    assert simulate(policy, bernoulli, 1, 200) != simulate(policy, bernoulli, 2, 200)


@pytest.mark.parametrize("kind", ["thompson", "ucb1", "epsilon_greedy"])
def test_statistics_rebuilt_from_the_store_choose_as_the_incremental_ones(kind: str) -> None:
    # Two "processes" with the same seed: one adds each reward as it comes, the other sums the
    # stored rewards afresh before every choice, as a server reading the store would.
    policy = make_policy(kind, {})
    env = np.random.default_rng(11)
    live_rng, rebuilt_rng = np.random.default_rng(5), np.random.default_rng(5)
    live = {"A": EMPTY, "B": EMPTY}
    stored: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(500):
        arm = policy.choose(live, live_rng)
        rebuilt = {name: ArmStats.of(rewards) for name, rewards in stored.items()}
        assert policy.choose(rebuilt, rebuilt_rng) == arm
        r = clipped_normal(arm, env)
        live[arm] = live[arm].add(r)
        stored[arm].append(r)
    assert live == {name: ArmStats.of(rewards) for name, rewards in stored.items()}


def test_thompson_shares_match_the_posterior_probability() -> None:
    arm_stats = {"A": ArmStats(30, 12.0, 12.0), "B": ArmStats(25, 14.0, 14.0)}
    a, b = stats.beta(1 + 12, 1 + 18), stats.beta(1 + 14, 1 + 11)
    # P(draw for B > draw for A) = integral of pdf_B(x) * cdf_A(x)
    p_b, _ = integrate.quad(lambda x: b.pdf(x) * a.cdf(x), 0, 1)
    shares = Thompson().shares(arm_stats, np.random.default_rng(0), draws=100_000)
    assert shares["B"] == pytest.approx(p_b, abs=0.01)
    assert shares["A"] + shares["B"] == pytest.approx(1.0)


def test_thompson_uses_its_prior() -> None:
    # Beta(1, 50): successes are rare. A's one success gives Beta(2, 50) against B's Beta(1, 50).
    arm_stats = {"A": ArmStats(1, 1.0, 1.0), "B": EMPTY}
    a, b = stats.beta(2, 50), stats.beta(1, 50)
    p_a, _ = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1)
    shares = make_policy("thompson", {"prior_a": 1, "prior_b": 50}).shares(
        arm_stats, np.random.default_rng(0), draws=100_000
    )
    assert p_a == pytest.approx(0.75, abs=0.01)
    assert shares["A"] == pytest.approx(p_a, abs=0.01)


def test_epsilon_greedy_shares_are_its_choice_frequencies() -> None:
    arm_stats = {"A": ArmStats(10, 4.0, 2.0), "B": ArmStats(10, 6.0, 4.0), "C": ArmStats(5, 1, 1)}
    policy = EpsilonGreedy(epsilon=0.3)
    rng = np.random.default_rng(3)
    shares = policy.shares(arm_stats, rng)
    assert shares == pytest.approx({"A": 0.1, "B": 0.8, "C": 0.1})
    picks = [policy.choose(arm_stats, rng) for _ in range(20_000)]
    for arm, share in shares.items():
        assert picks.count(arm) / len(picks) == pytest.approx(share, abs=0.015)


@pytest.mark.parametrize("policy", [UCB1(), EpsilonGreedy(epsilon=1.0)])
def test_untried_arms_come_first(policy: BanditPolicy) -> None:
    arm_stats = {"A": ArmStats(100, 90.0, 85.0), "B": EMPTY, "C": EMPTY}
    rng = np.random.default_rng(0)
    assert policy.choose(arm_stats, rng) == "B"
    assert policy.shares(arm_stats, rng) == {"A": 0.0, "B": 1.0, "C": 0.0}


def test_ucb1_explores_an_arm_it_has_seen_little_of() -> None:
    arm_stats = {"A": ArmStats(1000, 600.0, 400.0), "B": ArmStats(3, 1.5, 1.0)}
    assert UCB1().choose(arm_stats, np.random.default_rng(0)) == "B"
    assert UCB1().shares(arm_stats, np.random.default_rng(0)) == {"A": 0.0, "B": 1.0}


def test_ucb1_scale_makes_the_reward_unit_irrelevant() -> None:
    # Rewards in [0, 4] with scale 4 choose exactly as the same rewards divided by 4 with
    # scale 1 (a power of two, so the sums are exact multiples).
    env, rng, rng4 = (np.random.default_rng(s) for s in (1, 2, 2))
    unit, four = {"A": EMPTY, "B": EMPTY}, {"A": EMPTY, "B": EMPTY}
    for _ in range(400):
        arm = UCB1().choose(unit, rng)
        assert UCB1(scale=4).choose(four, rng4) == arm
        r = clipped_normal(arm, env)
        unit[arm], four[arm] = unit[arm].add(r), four[arm].add(4 * r)


def test_ties_go_to_the_earlier_arm() -> None:
    same = ArmStats(10, 5.0, 3.0)
    for policy in (UCB1(), EpsilonGreedy(epsilon=0.0)):
        assert policy.choose({"X": same, "Y": same}, np.random.default_rng(0)) == "X"
        assert policy.choose({"Y": same, "X": same}, np.random.default_rng(0)) == "Y"


def test_arm_stats() -> None:
    assert ArmStats.of([1.0, 0.0, 0.5]) == ArmStats(3, 1.5, 1.25)
    assert EMPTY.add(0.5).add(1.0) == ArmStats(2, 1.5, 1.25)
    assert ArmStats(4, 3.0, 3.0).mean == 0.75
    assert EMPTY.mean is None
    with pytest.raises(ValueError, match="negative"):
        ArmStats(-1, 0.0, 0.0)


def test_make_policy_defaults_and_parameters() -> None:
    assert make_policy("thompson", {}) == Thompson(prior_a=1.0, prior_b=1.0)
    assert make_policy("thompson", {"prior_a": 2}) == Thompson(prior_a=2.0, prior_b=1.0)
    assert make_policy("ucb1", {"scale": 10}) == UCB1(scale=10.0)
    assert make_policy("epsilon_greedy", {}) == EpsilonGreedy(epsilon=0.1)
    assert make_policy("epsilon_greedy", {}).kind == "epsilon_greedy"
    with pytest.raises(ValueError, match=r"epsilon: expected a number between 0 and 1"):
        make_policy("epsilon_greedy", {"epsilon": 2})
    with pytest.raises(ValueError, match="algorithm"):
        make_policy("softmax", {})


def test_a_bandit_needs_arms() -> None:
    with pytest.raises(ValueError, match="at least one arm"):
        Thompson().choose({}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="draws"):
        Thompson().shares({"A": EMPTY}, np.random.default_rng(0), draws=0)


@pytest.mark.parametrize(
    ("kind", "params", "problems"),
    [
        ("thompson", {}, []),
        ("thompson", {"prior_a": 0.5, "prior_b": 3}, []),
        ("ucb1", {"scale": 100}, []),
        ("epsilon_greedy", {"epsilon": 0}, []),
        ("epsilon_greedy", {"epsilon": 1}, []),
        ("softmax", {}, [("algorithm", "expected one of thompson, ucb1, epsilon_greedy")]),
        ("epsilon_greedy", {"epsilon": 1.5}, [("epsilon", "expected a number between 0 and 1")]),
        ("epsilon_greedy", {"epsilon": -0.1}, [("epsilon", "expected a number between 0 and 1")]),
        ("epsilon_greedy", {"epsilon": "0.1"}, [("epsilon", "expected a number between 0 and 1")]),
        ("epsilon_greedy", {"epsilon": True}, [("epsilon", "expected a number between 0 and 1")]),
        ("thompson", {"prior_a": -1}, [("prior_a", "expected a number greater than 0")]),
        ("thompson", {"prior_b": 0}, [("prior_b", "expected a number greater than 0")]),
        ("ucb1", {"scale": float("inf")}, [("scale", "expected a number greater than 0")]),
        (
            "thompson",
            {"epsilon": 0.1, "prior_a": -2},
            [
                ("epsilon", "unknown parameter for thompson (expected prior_a, prior_b)"),
                ("prior_a", "expected a number greater than 0"),
            ],
        ),
    ],
)
def test_check_params(
    kind: str, params: dict[str, object], problems: list[tuple[str, str]]
) -> None:
    assert check_params(kind, params) == [{"field": f, "reason": r} for f, r in problems]
