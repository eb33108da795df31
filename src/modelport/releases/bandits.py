"""Bandit policies: which arm of a bandit experiment answers the next request.

A policy is pure: it reads per-arm sufficient statistics (:class:`ArmStats`: how many rewards an
arm has received, their sum and their sum of squares) and an injected random generator, and
names an arm. The statistics are aggregates the store can recompute at any time (``COUNT``,
``SUM``), so every server process that reads them holds the same posterior; nothing here keeps
state between calls.

Three policies, built by :func:`make_policy` from the ``algorithm`` and ``params`` of a traffic
policy and checked beforehand by :func:`check_params`:

``thompson`` (params ``prior_a``, ``prior_b``; default 1, 1)
    Thompson sampling for 0/1 rewards: each arm's success rate has the posterior
    Beta(prior_a + successes, prior_b + failures); draw one rate per arm, take the largest.
``ucb1`` (param ``scale``; default 1)
    UCB1 for real-valued rewards in [0, scale].
``epsilon_greedy`` (param ``epsilon``; default 0.1)
    The arm with the best mean reward, except a uniformly random arm with probability epsilon.

Arms are considered in the order of the mapping given (the traffic policy's order, control
first), and ties go to the earlier arm, so a choice depends on nothing but the statistics and
the generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

KINDS = ("thompson", "ucb1", "epsilon_greedy")

# Each kind's parameters, their defaults, and the check a value must pass (with its reason).
_PARAMS: dict[str, dict[str, tuple[float, str]]] = {
    "thompson": {"prior_a": (1.0, "positive"), "prior_b": (1.0, "positive")},
    "ucb1": {"scale": (1.0, "positive")},
    "epsilon_greedy": {"epsilon": (0.1, "unit")},
}


@dataclass(frozen=True)
class ArmStats:
    """The rewards one arm has received: their count, sum and sum of squares."""

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"an arm cannot have a negative reward count ({self.n})")

    @classmethod
    def of(cls, rewards: Iterable[float]) -> ArmStats:
        """The statistics of a sequence of rewards, as the store would sum them."""
        n, total, total_sq = 0, 0.0, 0.0
        for r in rewards:
            n, total, total_sq = n + 1, total + r, total_sq + r * r
        return cls(n, total, total_sq)

    def add(self, reward: float) -> ArmStats:
        """These statistics with one more reward."""
        return ArmStats(self.n + 1, self.total + reward, self.total_sq + reward * reward)

    @property
    def mean(self) -> float | None:
        """The mean reward, or None before the first one."""
        return self.total / self.n if self.n else None


class BanditPolicy(Protocol):
    """What every policy offers: a choice, and the probability of each choice."""

    @property
    def kind(self) -> str:
        """The name :func:`make_policy` knows the policy by."""
        ...

    def choose(self, stats: Mapping[str, ArmStats], rng: np.random.Generator) -> str:
        """The arm that answers the next request."""
        ...

    def shares(
        self, stats: Mapping[str, ArmStats], rng: np.random.Generator, draws: int = 10_000
    ) -> dict[str, float]:
        """The probability that :meth:`choose` picks each arm now (they sum to 1)."""
        ...


@dataclass(frozen=True)
class Thompson:
    """Thompson sampling with a Beta prior, for rewards of 0 or 1.

    A reward in between counts as that fraction of a success (``total`` successes out of ``n``),
    a common relaxation; rewards outside [0, 1] are not meaningful to this policy.
    """

    prior_a: float = 1.0
    prior_b: float = 1.0
    kind: ClassVar[str] = "thompson"

    def _posterior(
        self, stats: Mapping[str, ArmStats]
    ) -> tuple[list[str], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        names = _names(stats)
        # Clipped so that a stray reward outside [0, 1] cannot make a Beta parameter invalid.
        wins = np.array([min(max(stats[a].total, 0.0), float(stats[a].n)) for a in names])
        n = np.array([float(stats[a].n) for a in names])
        return names, self.prior_a + wins, self.prior_b + (n - wins)

    def choose(self, stats: Mapping[str, ArmStats], rng: np.random.Generator) -> str:
        names, a, b = self._posterior(stats)
        return names[int(np.argmax(rng.beta(a, b)))]

    def shares(
        self, stats: Mapping[str, ArmStats], rng: np.random.Generator, draws: int = 10_000
    ) -> dict[str, float]:
        # No closed form for more than two arms: estimate P(arm's draw is the largest).
        if draws < 1:
            raise ValueError(f"draws must be at least 1 (got {draws})")
        names, a, b = self._posterior(stats)
        best = np.argmax(rng.beta(a, b, size=(draws, len(names))), axis=1)
        counts = np.bincount(best, minlength=len(names))
        return {name: int(c) / draws for name, c in zip(names, counts, strict=True)}


@dataclass(frozen=True)
class UCB1:
    """UCB1: the arm with the largest ``mean / scale + sqrt(2 ln N / n)``; untried arms first.

    UCB1's exploration bonus comes from Hoeffding's inequality for rewards in [0, 1], so rewards
    must lie in [0, scale]: dividing the mean by ``scale`` keeps the bonus calibrated (a bonus
    too small for the reward range explores too little and can lock onto a worse arm). A fixed
    range is used rather than a variance estimate because it is the assumption UCB1's guarantee
    rests on and it cannot be fooled by a few early, similar rewards.

    The choice is deterministic given the statistics (the generator is not used), so between
    two refreshes of the statistics every request goes to the same arm.
    """

    scale: float = 1.0
    kind: ClassVar[str] = "ucb1"

    def choose(self, stats: Mapping[str, ArmStats], rng: np.random.Generator) -> str:
        names = _names(stats)
        untried = [a for a in names if stats[a].n == 0]
        if untried:
            return untried[0]
        log_n = math.log(sum(stats[a].n for a in names))
        scores = [
            stats[a].total / stats[a].n / self.scale + math.sqrt(2.0 * log_n / stats[a].n)
            for a in names
        ]
        return names[scores.index(max(scores))]

    def shares(
        self, stats: Mapping[str, ArmStats], rng: np.random.Generator, draws: int = 10_000
    ) -> dict[str, float]:
        chosen = self.choose(stats, rng)
        return {a: 1.0 if a == chosen else 0.0 for a in _names(stats)}


@dataclass(frozen=True)
class EpsilonGreedy:
    """Epsilon-greedy: untried arms first, then a random arm with probability ``epsilon``, else
    the arm with the best mean reward."""

    epsilon: float = 0.1
    kind: ClassVar[str] = "epsilon_greedy"

    def _best(self, stats: Mapping[str, ArmStats], names: list[str]) -> str:
        untried = [a for a in names if stats[a].n == 0]
        if untried:
            return untried[0]
        means = [stats[a].total / stats[a].n for a in names]
        return names[means.index(max(means))]

    def choose(self, stats: Mapping[str, ArmStats], rng: np.random.Generator) -> str:
        names = _names(stats)
        if any(stats[a].n == 0 for a in names):
            return self._best(stats, names)
        if rng.random() < self.epsilon:
            return names[int(rng.integers(len(names)))]
        return self._best(stats, names)

    def shares(
        self, stats: Mapping[str, ArmStats], rng: np.random.Generator, draws: int = 10_000
    ) -> dict[str, float]:
        # Exact, so no draws: epsilon spread evenly, the rest on the greedy arm.
        names = _names(stats)
        best = self._best(stats, names)
        if any(stats[a].n == 0 for a in names):
            return {a: 1.0 if a == best else 0.0 for a in names}
        even = self.epsilon / len(names)
        return {a: even + (1.0 - self.epsilon if a == best else 0.0) for a in names}


def check_params(kind: str, params: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every problem with a policy's ``algorithm`` and ``params``, as ``{"field", "reason"}``.

    ``field`` is ``"algorithm"`` for an unknown kind, otherwise the parameter's name (``"params"``
    when ``params`` is not a mapping at all). An empty list means :func:`make_policy` will accept
    them.
    """
    if kind not in _PARAMS:
        return [{"field": "algorithm", "reason": f"expected one of {', '.join(KINDS)}"}]
    if not isinstance(params, Mapping):
        return [{"field": "params", "reason": "expected an object"}]
    known = _PARAMS[kind]
    problems: list[dict[str, str]] = []
    for key, value in params.items():
        if key not in known:
            expected = ", ".join(known)
            problems.append(
                {"field": str(key), "reason": f"unknown parameter for {kind} (expected {expected})"}
            )
            continue
        rule = known[key][1]
        # bool is an int to Python, but `true` is no number to someone writing a policy.
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if rule == "positive" and not (number and math.isfinite(value) and value > 0):
            problems.append({"field": key, "reason": "expected a number greater than 0"})
        elif rule == "unit" and not (number and 0 <= value <= 1):
            problems.append({"field": key, "reason": "expected a number between 0 and 1"})
    return problems


def make_policy(kind: str, params: Mapping[str, Any]) -> BanditPolicy:
    """The policy ``kind`` with ``params`` (missing ones take their defaults).

    Raises ValueError listing the problems :func:`check_params` finds.
    """
    problems = check_params(kind, params)
    if problems:
        listed = "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
        raise ValueError(f"invalid {kind!r} bandit parameters: {listed}")
    values = {key: float(params.get(key, default)) for key, (default, _) in _PARAMS[kind].items()}
    if kind == "thompson":
        return Thompson(**values)
    if kind == "ucb1":
        return UCB1(**values)
    return EpsilonGreedy(**values)


def _names(stats: Mapping[str, ArmStats]) -> list[str]:
    if not stats:
        raise ValueError("a bandit needs at least one arm")
    return list(stats)
