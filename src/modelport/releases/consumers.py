"""Releases per consuming app: traffic policies, consumer pins and adapters, and their audit.

Plain functions over a SQLAlchemy connection, run on the writer thread like every registry
write; each change bumps the registry generation (every server picks it up within a poll) and
is recorded as a model event (``GET /v1/models/{name}/events``), as are the automatic actions
of canaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import ConsumerNotFound, InvalidInput
from ..inputs.adapters import Adapter, parse_adapter
from ..registry import models as registry
from ..store.tables import alias_events, consumers, model_events, models
from ..timefmt import iso
from . import bandits
from .traffic import DEFAULT, Policy, parse_policy

SYSTEM_ACTOR = "modelport"  # the actor of automatic actions


@dataclass(frozen=True)
class ConsumerSettings:
    """What one consumer gets from one model."""

    pin_version: int | None = None
    pin_alias: str | None = None
    adapter: Adapter | None = None


@dataclass(frozen=True)
class Release:
    """A model's release state as routing uses it (parsed once per registry change)."""

    policy: Policy
    traffic_rev: int
    adapter: Adapter | None
    consumers: dict[str, ConsumerSettings]


def release_of(model: dict[str, Any]) -> Release:
    """Parse the snapshot entry of a model (documents were checked when they were stored)."""
    aliases = model["aliases"]
    policy_doc = model.get("traffic") or DEFAULT
    try:
        policy = parse_policy(
            policy_doc,
            aliases=aliases,
            versions=model["versions"],
            check_params=bandits.check_params,
        )
    except InvalidInput:
        # e.g. a policy naming an alias that no longer exists: the default until it is fixed
        policy = parse_policy(DEFAULT, aliases={"production": 0}, versions=set())
    people = {
        name: ConsumerSettings(
            pin_version=c["pin_version"],
            pin_alias=c["pin_alias"],
            adapter=parse_adapter(c["adapter"]) if c["adapter"] else None,
        )
        for name, c in model["consumers"].items()
    }
    adapter = parse_adapter(model["adapter"]) if model.get("adapter") else None
    return Release(policy, model.get("traffic_rev", 0), adapter, people)


# -- events ---------------------------------------------------------------------------------------


def record_event(
    conn: Connection, model_id: int, kind: str, actor: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        model_events.insert().values(
            model_id=model_id, kind=kind, actor=actor, detail=detail, at=time.time()
        )
    )


def list_events(conn: Connection, name: str, limit: int = 200) -> list[dict[str, Any]]:
    """The model's release events, alias moves included, newest first."""
    model = registry.model_row(conn, name)
    out = [
        {"time": iso(r.at), "at": r.at, "kind": r.kind, "actor": r.actor, "detail": r.detail}
        for r in conn.execute(
            sa.select(model_events)
            .where(model_events.c.model_id == model.id)
            .order_by(model_events.c.id.desc())
            .limit(limit)
        )
    ]
    for r in conn.execute(
        sa.select(alias_events)
        .where(alias_events.c.model_id == model.id)
        .order_by(alias_events.c.id.desc())
        .limit(limit)
    ):
        out.append(
            {
                "time": iso(r.at),
                "at": r.at,
                "kind": f"alias_{r.kind}",
                "actor": r.actor,
                "detail": {
                    "alias": r.alias,
                    "from_version": r.from_version,
                    "to_version": r.to_version,
                    "reason": r.reason,
                },
            }
        )
    out.sort(key=lambda e: e["at"], reverse=True)
    for event in out:
        del event["at"]
    return out[:limit]


# -- traffic --------------------------------------------------------------------------------------


def _aliases_and_versions(conn: Connection, model_id: int) -> tuple[dict[str, int], set[int]]:
    snap = registry.model_routing_state(conn, model_id)
    return snap["aliases"], snap["versions"]


def get_traffic(conn: Connection, name: str) -> dict[str, Any]:
    model = registry.model_row(conn, name)
    return {
        "model": name,
        "traffic": model.traffic or DEFAULT,
        "revision": model.traffic_rev,
    }


def set_traffic(conn: Connection, name: str, doc: Any, *, actor: str) -> dict[str, Any]:
    """Check and store a model's traffic policy; a new revision starts a new experiment."""
    model = registry.model_row(conn, name)
    aliases, known = _aliases_and_versions(conn, model.id)
    policy = parse_policy(doc, aliases=aliases, versions=known, check_params=bandits.check_params)
    rev = model.traffic_rev + 1
    conn.execute(
        models.update().where(models.c.id == model.id).values(traffic=policy.doc, traffic_rev=rev)
    )
    record_event(conn, model.id, "traffic_set", actor, {"traffic": policy.doc, "revision": rev})
    registry.bump_generation(conn)
    return {"model": name, "traffic": policy.doc, "revision": rev}


def replace_policy_if_current(
    conn: Connection,
    model_id: int,
    rev: int,
    doc: dict[str, Any],
    kind: str,
    detail: dict[str, Any],
) -> bool:
    """An automatic action: store ``doc`` only if the policy is still at ``rev`` (so the many
    processes that may notice the same breach act once); record why."""
    done = conn.execute(
        models.update()
        .where(models.c.id == model_id, models.c.traffic_rev == rev)
        .values(traffic=doc, traffic_rev=rev + 1)
    ).rowcount
    if not done:
        return False
    record_event(
        conn, model_id, kind, SYSTEM_ACTOR, {**detail, "traffic": doc, "revision": rev + 1}
    )
    registry.bump_generation(conn)
    return True


# -- consumers ------------------------------------------------------------------------------------


def _consumer_dict(name: str, row: Any) -> dict[str, Any]:
    pin: dict[str, Any] | None = None
    if row.pin_version is not None:
        pin = {"version": row.pin_version}
    elif row.pin_alias is not None:
        pin = {"alias": row.pin_alias}
    return {
        "model": name,
        "consumer": row.consumer,
        "pin": pin,
        "adapter": row.adapter,
        "updated": iso(row.updated_at),
        "updated_by": row.updated_by,
    }


def check_consumer_doc(doc: Any, aliases: dict[str, int], known: set[int]) -> dict[str, Any]:
    """``{"pin": {"version": n} | {"alias": a} | null, "adapter": {...} | null}``."""
    if not isinstance(doc, dict):
        raise InvalidInput(
            "the body must be an object", details=[{"field": "body", "reason": "not an object"}]
        )
    problems = [
        {"field": key, "reason": "unexpected field (pin, adapter)"}
        for key in doc
        if key not in ("pin", "adapter")
    ]
    pin = doc.get("pin")
    out: dict[str, Any] = {"pin_version": None, "pin_alias": None, "adapter": None}
    if pin is not None:
        if not isinstance(pin, dict) or len(pin) != 1 or not ({"alias", "version"} & set(pin)):
            problems.append(
                {"field": "pin", "reason": 'expected {"version": n} or {"alias": name}'}
            )
        elif "version" in pin:
            v = pin["version"]
            if isinstance(v, bool) or not isinstance(v, int) or v not in known:
                problems.append(
                    {"field": "pin.version", "reason": f"no version {v!r} of this model"}
                )
            else:
                out["pin_version"] = v
        elif not isinstance(pin["alias"], str) or pin["alias"] not in aliases:
            problems.append(
                {"field": "pin.alias", "reason": f"no alias {pin['alias']!r} on this model"}
            )
        else:
            out["pin_alias"] = pin["alias"]
    if doc.get("adapter") is not None:
        try:
            out["adapter"] = parse_adapter(doc["adapter"]).to_dict()
        except InvalidInput as exc:
            problems.extend(
                {**d, "field": f"adapter.{d['field']}".replace("adapter.adapter", "adapter")}
                for d in exc.details
            )
    if problems:
        raise InvalidInput(
            f"invalid consumer settings: {problems[0]['field']}: {problems[0]['reason']}",
            details=problems,
        )
    return out


def set_consumer(
    conn: Connection, name: str, consumer: str, doc: Any, *, actor: str
) -> dict[str, Any]:
    """Pin a consumer and/or give it an adapter (replacing what it had)."""
    model = registry.model_row(conn, name)
    registry.check_consumer_name(consumer)
    aliases, known = _aliases_and_versions(conn, model.id)
    values = check_consumer_doc(doc, aliases, known)
    now = time.time()
    key = (consumers.c.model_id == model.id) & (consumers.c.consumer == consumer)
    if conn.execute(sa.select(consumers.c.consumer).where(key)).first() is None:
        conn.execute(
            consumers.insert().values(
                model_id=model.id, consumer=consumer, updated_at=now, updated_by=actor, **values
            )
        )
    else:
        conn.execute(
            consumers.update().where(key).values(updated_at=now, updated_by=actor, **values)
        )
    row = conn.execute(sa.select(consumers).where(key)).one()
    result = _consumer_dict(name, row)
    record_event(
        conn,
        model.id,
        "consumer_set",
        actor,
        {"consumer": consumer, "pin": result["pin"], "adapter": result["adapter"]},
    )
    registry.bump_generation(conn)
    return result


def delete_consumer(conn: Connection, name: str, consumer: str, *, actor: str) -> dict[str, Any]:
    model = registry.model_row(conn, name)
    key = (consumers.c.model_id == model.id) & (consumers.c.consumer == consumer)
    if not conn.execute(consumers.delete().where(key)).rowcount:
        raise ConsumerNotFound(f"model {name!r} has no settings for consumer {consumer!r}")
    record_event(conn, model.id, "consumer_removed", actor, {"consumer": consumer})
    registry.bump_generation(conn)
    return {"model": name, "consumer": consumer, "removed": True}


def list_consumers(conn: Connection, name: str) -> list[dict[str, Any]]:
    model = registry.model_row(conn, name)
    rows = conn.execute(
        sa.select(consumers).where(consumers.c.model_id == model.id).order_by(consumers.c.consumer)
    )
    return [_consumer_dict(name, r) for r in rows]


def get_consumer(conn: Connection, name: str, consumer: str) -> dict[str, Any]:
    model = registry.model_row(conn, name)
    row = conn.execute(
        sa.select(consumers).where(
            (consumers.c.model_id == model.id) & (consumers.c.consumer == consumer)
        )
    ).first()
    if row is None:
        raise ConsumerNotFound(f"model {name!r} has no settings for consumer {consumer!r}")
    return _consumer_dict(name, row)


# -- the model's adapter --------------------------------------------------------------------------


def set_model_adapter(conn: Connection, name: str, doc: Any, *, actor: str) -> dict[str, Any]:
    """``{"adapter": {...}}``: the adapter every consumer without its own goes through
    (``{"adapter": null}`` removes it)."""
    model = registry.model_row(conn, name)
    if not isinstance(doc, dict) or set(doc) != {"adapter"}:
        raise InvalidInput(
            'the body must be {"adapter": {...}} or {"adapter": null}',
            details=[{"field": "body", "reason": 'expected an object with the one key "adapter"'}],
        )
    adapter = parse_adapter(doc["adapter"]).to_dict() if doc["adapter"] is not None else None
    conn.execute(models.update().where(models.c.id == model.id).values(adapter=adapter))
    record_event(conn, model.id, "adapter_set", actor, {"adapter": adapter})
    registry.bump_generation(conn)
    return {"model": name, "adapter": adapter}
