"""Traffic policies: which version answers the unversioned routes of a model.

A policy is set per model (``PUT /v1/models/{name}/traffic``) and read by every server from the
registry snapshot. Arms name their version by alias or by number; aliases are followed at
request time, so moving ``candidate`` moves the arm.

============ ==============================================================================
``single``   every request to one target (the default: the ``production`` alias)
``split``    weighted arms; with a unit key (``X-Unit-ID`` or an input field) a unit always
             lands on the same arm while the weights stay the same
``shadow``   the primary answers; a share of requests is also scored by the shadow target
             off the response path and logged as shadow
``bandit``   arms chosen by a bandit learning from feedback (rewards, or labels matching the
             prediction); its statistics are read from the store
``canary``   a share goes to the candidate, guarded by error rate, p99 latency and a live
             metric against the champion; a breach rolls it back (see modelport.releases.canary)
============ ==============================================================================

Parsing checks everything a caller can get wrong and reports each problem with its path
(``arms[1].weight``), so a bad policy is a 422 naming the field, never a surprise at run time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput

POLICIES = ("single", "split", "shadow", "bandit", "canary")
UNIT_HEADER = "x-unit-id"
_MAX_ARMS = 20


@dataclass(frozen=True)
class Target:
    """A version by alias or by number."""

    alias: str | None = None
    version: int | None = None

    def resolve(self, aliases: dict[str, int]) -> int | None:
        return self.version if self.version is not None else aliases.get(self.alias or "")

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias} if self.alias is not None else {"version": self.version}


@dataclass(frozen=True)
class Arm:
    name: str
    target: Target
    weight: float = 1.0


@dataclass(frozen=True)
class Guards:
    """What a canary must keep to stay: compared over ``window_s`` seconds of its traffic."""

    max_error_rate: float = 0.05
    max_p99_ms: float | None = None
    metric: str | None = None  # "accuracy" or "mean_reward", from feedback
    max_metric_drop: float = 0.05
    min_requests: int = 20
    min_feedback: int = 20
    window_s: float = 300.0


@dataclass(frozen=True)
class Policy:
    """A parsed policy. ``arms`` in order; the first arm is the control of an experiment."""

    kind: str
    arms: tuple[Arm, ...]
    unit_field: str | None = None
    share: float = 0.0  # shadow: mirrored share; canary: candidate share
    bandit: dict[str, Any] = field(default_factory=dict)  # algorithm and its parameters
    reward: str = "reward"  # bandit: "reward" or "label"
    guards: Guards | None = None
    doc: dict[str, Any] = field(default_factory=dict)  # the canonical JSON form

    @property
    def control(self) -> Arm:
        return self.arms[0]


DEFAULT = {"policy": "single", "target": {"alias": "production"}}


def unit_position(model: str, unit: str, salt: str = "") -> float:
    """Where a unit falls in [0, 1): the same unit, the same place, in every process."""
    digest = hashlib.blake2b(f"{salt}{model}\x00{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_weighted(arms: tuple[Arm, ...], u: float) -> Arm:
    """The arm whose share of [0, 1), in order and proportional to the weights, holds ``u``."""
    total = sum(a.weight for a in arms)
    edge = 0.0
    for arm in arms:
        edge += arm.weight / total
        if u < edge:
            return arm
    return arms[-1]


# -- parsing ------------------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append({"field": path, "reason": reason})


def parse_policy(
    doc: Any, *, aliases: dict[str, int], versions: set[int], check_params: Any = None
) -> Policy:
    """Check a policy document against the model's aliases and versions.

    ``check_params(kind, params)`` checks bandit parameters (modelport.releases.bandits); every problem
    is reported with its path in one :class:`InvalidInput`.
    """
    p = _Problems()
    if not isinstance(doc, dict):
        raise InvalidInput(
            "the traffic policy must be an object",
            details=[{"field": "body", "reason": "expected an object"}],
        )
    kind = doc.get("policy")
    if kind not in POLICIES:
        raise InvalidInput(
            f"'policy' must be one of {', '.join(POLICIES)}",
            details=[{"field": "policy", "reason": f"expected one of {', '.join(POLICIES)}"}],
        )
    known = {
        "single": {"policy", "target"},
        "split": {"policy", "arms", "unit"},
        "shadow": {"policy", "target", "shadow", "share", "unit"},
        "bandit": {"policy", "arms", "algorithm", "params", "reward"},
        "canary": {"policy", "champion", "candidate", "share", "unit", "guards"},
    }[kind]
    for key in doc:
        if key not in known:
            p.add(key, f"unexpected field for a {kind} policy")

    def target(path: str, value: Any) -> Target | None:
        if (
            not isinstance(value, dict)
            or len(value) != 1
            or not ({"alias", "version"} & set(value))
        ):
            p.add(path, 'expected {"alias": name} or {"version": number}')
            return None
        if "alias" in value:
            alias = value["alias"]
            if not isinstance(alias, str) or alias not in aliases:
                p.add(f"{path}.alias", f"no alias {alias!r} on this model")
                return None
            return Target(alias=alias)
        version = value["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version not in versions:
            p.add(f"{path}.version", f"no version {version!r} of this model")
            return None
        return Target(version=version)

    def share(path: str, value: Any, default: float | None = None) -> float:
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            p.add(path, "expected a number between 0 and 1")
            return 0.0
        return float(value)

    unit_field = _unit(doc.get("unit"), p) if "unit" in known else None
    arms: list[Arm] = []
    extra: dict[str, Any] = {}
    guards = None
    policy_share = 0.0
    reward = "reward"
    if kind == "single":
        t = target("target", doc.get("target"))
        if t:
            arms.append(Arm("main", t))
    elif kind in ("split", "bandit"):
        arms = _arms(doc.get("arms"), p, target, weighted=kind == "split")
        if kind == "bandit":
            algorithm = doc.get("algorithm", "thompson")
            params = doc.get("params") or {}
            if not isinstance(params, dict):
                p.add("params", "expected an object")
                params = {}
            if check_params is not None:
                for problem in check_params(algorithm, params):
                    field_name = problem.get("field") or "params"
                    path = field_name if field_name == "algorithm" else f"params.{field_name}"
                    p.add(path, problem["reason"])
            extra = {"algorithm": algorithm, "params": params}
            reward = doc.get("reward", "reward")
            if reward not in ("reward", "label"):
                p.add("reward", 'expected "reward" (feedback rewards) or "label" (correct labels)')
    elif kind == "shadow":
        primary = target("target", doc.get("target"))
        shadow = target("shadow", doc.get("shadow"))
        policy_share = share("share", doc.get("share"), default=1.0)
        if primary and shadow:
            arms = [Arm("primary", primary), Arm("shadow", shadow)]
    else:  # canary
        champion = target("champion", doc.get("champion"))
        candidate = target("candidate", doc.get("candidate"))
        policy_share = share("share", doc.get("share"))
        guards = _guards(doc.get("guards") or {}, p)
        if champion and candidate:
            arms = [Arm("champion", champion), Arm("candidate", candidate)]
    if p.items:
        first = p.items[0]
        raise InvalidInput(
            f"invalid traffic policy: {first['field']}: {first['reason']}", details=p.items
        )
    canonical: dict[str, Any] = {"policy": kind}
    if kind == "single":
        canonical["target"] = arms[0].target.to_dict()
    elif kind in ("split", "bandit"):
        canonical["arms"] = [
            {
                "name": a.name,
                **a.target.to_dict(),
                **({"weight": a.weight} if kind == "split" else {}),
            }
            for a in arms
        ]
        canonical.update(extra)
        if kind == "bandit":
            canonical["reward"] = reward
    elif kind == "shadow":
        canonical.update(target=arms[0].target.to_dict(), shadow=arms[1].target.to_dict())
        canonical["share"] = policy_share
    else:
        canonical.update(champion=arms[0].target.to_dict(), candidate=arms[1].target.to_dict())
        canonical["share"] = policy_share
        assert guards is not None
        canonical["guards"] = {k: v for k, v in guards.__dict__.items() if v is not None}
    if unit_field is not None:
        canonical["unit"] = {"field": unit_field}
    elif "unit" in known and kind != "bandit":
        canonical["unit"] = {"header": "X-Unit-ID"}
    return Policy(
        kind=kind,
        arms=tuple(arms),
        unit_field=unit_field,
        share=policy_share,
        bandit=extra,
        reward=reward,
        guards=guards,
        doc=canonical,
    )


def _unit(value: Any, p: _Problems) -> str | None:
    """``{"header": "X-Unit-ID"}`` (the default) or ``{"field": name}``."""
    if value is None or value == {"header": "X-Unit-ID"}:
        return None
    if isinstance(value, dict) and set(value) == {"field"}:
        name = value["field"]
        if isinstance(name, str) and name:
            return name
    p.add("unit", 'expected {"header": "X-Unit-ID"} or {"field": name of an input field}')
    return None


def _arms(value: Any, p: _Problems, target: Any, *, weighted: bool) -> list[Arm]:
    if not isinstance(value, list) or not 2 <= len(value) <= _MAX_ARMS:
        p.add("arms", f"expected a list of 2 to {_MAX_ARMS} arms")
        return []
    arms = []
    names: set[str] = set()
    total = 0.0
    for i, item in enumerate(value):
        path = f"arms[{i}]"
        if not isinstance(item, dict):
            p.add(path, "expected an object")
            continue
        for key in item:
            if key not in ("name", "alias", "version", "weight"):
                p.add(f"{path}.{key}", "unexpected field")
        name = item.get("name", f"arm{i}")
        if not isinstance(name, str) or not name or len(name) > 100:
            p.add(f"{path}.name", "expected a name of 1 to 100 characters")
            continue
        if name in names:
            p.add(f"{path}.name", f"duplicate arm name {name!r}")
        names.add(name)
        weight = item.get("weight", 1.0)
        if not weighted and "weight" in item:
            p.add(f"{path}.weight", "a bandit sets the shares itself; drop the weight")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or weight < 0
            or not math.isfinite(weight)
        ):
            p.add(f"{path}.weight", "expected a number >= 0")
            continue
        total += weight
        t = target(path, {k: v for k, v in item.items() if k in ("alias", "version")})
        if t:
            arms.append(Arm(name, t, float(weight)))
    if weighted and arms and total <= 0:
        p.add("arms", "the weights must add up to a positive number")
    return arms


_GUARD_KEYS = {
    "max_error_rate": (float, 0.0, 1.0),
    "max_p99_ms": (float, 0.0, None),
    "max_metric_drop": (float, 0.0, 1.0),
    "min_requests": (int, 1, None),
    "min_feedback": (int, 1, None),
    "window_s": (float, 1.0, None),
}


def _guards(value: Any, p: _Problems) -> Guards:
    if not isinstance(value, dict):
        p.add("guards", "expected an object")
        return Guards()
    out: dict[str, Any] = {}
    for key, raw in value.items():
        path = f"guards.{key}"
        if key == "metric":
            if raw not in (None, "accuracy", "mean_reward"):
                p.add(path, 'expected "accuracy" or "mean_reward"')
            else:
                out[key] = raw
            continue
        if key not in _GUARD_KEYS:
            p.add(path, f"unknown guard; known: metric, {', '.join(_GUARD_KEYS)}")
            continue
        kind, low, high = _GUARD_KEYS[key]
        ok = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
        ok = ok and raw >= low and (high is None or raw <= high)
        if kind is int and ok and not float(raw).is_integer():
            ok = False
        if not ok:
            bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            p.add(path, f"expected {'an integer' if kind is int else 'a number'} {bounds}")
            continue
        out[key] = int(raw) if kind is int else float(raw)
    return Guards(**out)
