"""The registry: models, immutable versions, and aliases whose every move is audited.

Plain functions over a SQLAlchemy connection. In a server, writes run on the writer thread
(:meth:`Writer.run`), so they are serialized and grouped with other writes; every write bumps the
registry generation, which tells other processes sharing the store to refresh.
"""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from ..documents import Document, Number, Whole, checked
from ..errors import (
    AliasNotFound,
    Conflict,
    InvalidInput,
    InvalidRequest,
    ModelNotFound,
    NothingToRollBack,
    VersionNotFound,
)
from ..store import archive
from ..store.tables import (
    alias_events,
    aliases,
    consumers,
    models,
    registry_generation,
    versions,
)
from ..timefmt import iso

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,199}\Z")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}\Z")
# A segment's own pointer: "<alias>@<segment>" (modelport.serving.segments).
SEGMENT_ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*@[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
TASKS = ("classification", "regression", "other")
DEFAULT_ALIAS = "production"


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise InvalidRequest(
            f"invalid model name {name!r}: use lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit",
            details=[{"field": "name", "reason": "must match [a-z0-9][a-z0-9_-]*"}],
        )
    return name


def check_alias_name(alias: str) -> str:
    if not (ALIAS_NAME.match(alias) or (len(alias) <= 100 and SEGMENT_ALIAS_NAME.match(alias))):
        raise InvalidRequest(
            f"invalid alias name {alias!r}: start with a letter; use letters, digits, '_', '.', '-'",
            details=[{"field": "alias", "reason": "must match [A-Za-z][A-Za-z0-9_.-]*"}],
        )
    return alias


def check_task(task: str) -> str:
    if task not in TASKS:
        raise InvalidRequest(
            f"invalid task {task!r}: choose from {', '.join(TASKS)}",
            details=[{"field": "task", "reason": f"expected one of {', '.join(TASKS)}"}],
        )
    return task


def bump_generation(conn: Connection) -> None:
    conn.execute(
        registry_generation.update()
        .where(registry_generation.c.id == 1)
        .values(generation=registry_generation.c.generation + 1)
    )


def generation(conn: Connection) -> int:
    return int(conn.execute(sa.select(registry_generation.c.generation)).scalar_one())


# -- models ---------------------------------------------------------------------------------------


def _model_row(conn: Connection, name: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(models).where(models.c.name == name)).first()
    if row is None:
        raise ModelNotFound(f"no model named {name!r}")
    return row


def create_model(
    conn: Connection, name: str, *, task: str, description: str, actor: str
) -> dict[str, Any]:
    check_model_name(name)
    check_task(task)
    if conn.execute(sa.select(models.c.id).where(models.c.name == name)).first() is not None:
        raise Conflict(f"a model named {name!r} already exists")
    conn.execute(
        models.insert().values(
            name=name, task=task, description=description, created_at=time.time(), created_by=actor
        )
    )
    bump_generation(conn)
    return get_model(conn, name)


def ensure_model(
    conn: Connection, name: str, *, task: str, description: str, actor: str
) -> sa.Row[Any]:
    """The model's row, created first when it does not exist."""
    row = conn.execute(sa.select(models).where(models.c.name == name)).first()
    if row is None:
        create_model(conn, name, task=task, description=description, actor=actor)
        row = _model_row(conn, name)
    return row


def _model_dict(conn: Connection, row: sa.Row[Any]) -> dict[str, Any]:
    alias_map = {
        a.name: a.version
        for a in conn.execute(sa.select(aliases).where(aliases.c.model_id == row.id))
    }
    latest = conn.execute(
        sa.select(sa.func.max(versions.c.version)).where(versions.c.model_id == row.id)
    ).scalar()
    return {
        "name": row.name,
        "task": row.task,
        "description": row.description,
        "created": iso(row.created_at),
        "created_by": row.created_by,
        "latest_version": latest,
        "aliases": dict(sorted(alias_map.items())),
        "segment_by": row.segment_by,
    }


def get_model(conn: Connection, name: str) -> dict[str, Any]:
    return _model_dict(conn, _model_row(conn, name))


def list_models(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(models).order_by(models.c.name)).all()
    return [_model_dict(conn, r) for r in rows]


# -- versions -------------------------------------------------------------------------------------


def insert_version(
    conn: Connection,
    model_id: int,
    *,
    sha256: str,
    size_bytes: int,
    flavor: str,
    input_schema: dict[str, Any],
    train_stats: dict[str, Any] | None,
    lineage: dict[str, Any],
    description: str = "",
    reference: dict[str, Any] | None = None,
    segment: str | None = None,
) -> int:
    """Add the next version of a model; return its number. ``reference``: its drift
    reference (see :mod:`modelport.monitoring.drift`); ``segment``: the segment it answers for."""
    current = conn.execute(
        sa.select(sa.func.max(versions.c.version)).where(versions.c.model_id == model_id)
    ).scalar()
    number = (current or 0) + 1
    conn.execute(
        versions.insert().values(
            model_id=model_id,
            version=number,
            sha256=sha256,
            size_bytes=size_bytes,
            flavor=flavor,
            input_schema=input_schema,
            train_stats=train_stats,
            reference=reference,
            lineage=lineage,
            description=description,
            created_at=time.time(),
            segment=segment,
        )
    )
    bump_generation(conn)
    return number


def _version_dict(name: str, row: sa.Row[Any], alias_names: list[str]) -> dict[str, Any]:
    return {
        "model": name,
        "version": row.version,
        "created": iso(row.created_at),
        "flavor": row.flavor,
        "sha256": row.sha256,
        "size_bytes": row.size_bytes,
        "description": row.description,
        "aliases": alias_names,
        "schema": row.input_schema,
        "lineage": row.lineage,
        "segment": row.segment,
    }


def _aliases_by_version(conn: Connection, model_id: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for a in conn.execute(
        sa.select(aliases.c.name, aliases.c.version)
        .where(aliases.c.model_id == model_id)
        .order_by(aliases.c.name)
    ):
        out.setdefault(a.version, []).append(a.name)
    return out


def list_versions(conn: Connection, name: str) -> list[dict[str, Any]]:
    model = _model_row(conn, name)
    by_version = _aliases_by_version(conn, model.id)
    rows = conn.execute(
        sa.select(versions).where(versions.c.model_id == model.id).order_by(versions.c.version)
    )
    return [_version_dict(name, r, by_version.get(r.version, [])) for r in rows]


def version_row(conn: Connection, name: str, version: int) -> sa.Row[Any]:
    model = _model_row(conn, name)
    row = conn.execute(
        sa.select(versions).where(versions.c.model_id == model.id, versions.c.version == version)
    ).first()
    if row is None:
        raise VersionNotFound(f"model {name!r} has no version {version}")
    return row


def get_version(
    conn: Connection, name: str, version: int, *, stats: bool = False
) -> dict[str, Any]:
    row = version_row(conn, name, version)
    out = _version_dict(name, row, _aliases_by_version(conn, row.model_id).get(version, []))
    if stats:
        out["train_stats"] = row.train_stats
    return out


# -- aliases --------------------------------------------------------------------------------------


def set_alias(
    conn: Connection, name: str, alias: str, version: int, *, actor: str, reason: str = ""
) -> dict[str, Any]:
    """Point an alias at a version, recording the move."""
    check_alias_name(alias)
    model = _model_row(conn, name)
    version_row(conn, name, version)
    current = conn.execute(
        sa.select(aliases.c.version).where(aliases.c.model_id == model.id, aliases.c.name == alias)
    ).scalar()
    if current != version:
        _move(conn, model.id, alias, current, version, kind="move", actor=actor, reason=reason)
    return {"model": name, "alias": alias, "version": version, "previous": current}


def rollback_alias(
    conn: Connection, name: str, alias: str, *, actor: str, reason: str = ""
) -> dict[str, Any]:
    """Move an alias back to the target it had before its latest move not already undone."""
    check_alias_name(alias)
    model = _model_row(conn, name)
    current = conn.execute(
        sa.select(aliases.c.version).where(aliases.c.model_id == model.id, aliases.c.name == alias)
    ).scalar()
    if current is None:
        raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
    events = conn.execute(
        sa.select(alias_events)
        .where(alias_events.c.model_id == model.id, alias_events.c.alias == alias)
        .order_by(alias_events.c.id.desc())
    ).all()
    undone = {e.reverts for e in events if e.kind == "rollback"}
    for event in events:
        if event.kind != "move" or event.id in undone:
            continue
        if event.from_version is None:
            break
        _move(
            conn,
            model.id,
            alias,
            current,
            event.from_version,
            kind="rollback",
            actor=actor,
            reason=reason,
            reverts=event.id,
        )
        return {"model": name, "alias": alias, "version": event.from_version, "previous": current}
    raise NothingToRollBack(
        f"alias {alias!r} of model {name!r} has no earlier target to roll back to"
    )


def _move(
    conn: Connection,
    model_id: int,
    alias: str,
    from_version: int | None,
    to_version: int,
    *,
    kind: str,
    actor: str,
    reason: str,
    reverts: int | None = None,
) -> None:
    now = time.time()
    if from_version is None:
        conn.execute(
            aliases.insert().values(
                model_id=model_id, name=alias, version=to_version, updated_at=now
            )
        )
    else:
        conn.execute(
            aliases.update()
            .where(aliases.c.model_id == model_id, aliases.c.name == alias)
            .values(version=to_version, updated_at=now)
        )
    conn.execute(
        alias_events.insert().values(
            model_id=model_id,
            alias=alias,
            from_version=from_version,
            to_version=to_version,
            kind=kind,
            reverts=reverts,
            actor=actor,
            reason=reason,
            at=now,
        )
    )
    bump_generation(conn)


def alias_history(conn: Connection, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Every recorded alias move of a model, newest first."""
    model = _model_row(conn, name)
    query = sa.select(alias_events).where(alias_events.c.model_id == model.id)
    if alias is not None:
        query = query.where(alias_events.c.alias == alias)
    return [
        {
            "id": e.id,
            "alias": e.alias,
            "from_version": e.from_version,
            "to_version": e.to_version,
            "kind": e.kind,
            "reverts": e.reverts,
            "actor": e.actor,
            "reason": e.reason,
            "at": iso(e.at),
        }
        for e in conn.execute(query.order_by(alias_events.c.id.desc()))
    ]


#: Serving settings a model may override, with their type and bounds (inclusive).
class ServingSettings(Document):
    """Per-model serving settings; a key left out (or null) uses the server's default."""

    max_batch_rows: Whole | None = Field(
        None, ge=1, le=1_000_000, description="Overrides batch_max_rows."
    )
    max_wait_ms: Number | None = Field(
        None, ge=0, le=60_000, description="Overrides batch_max_wait_ms."
    )
    max_concurrent_batches: Whole | None = Field(
        None, ge=1, le=1024, description="Overrides batch_max_concurrent."
    )
    predict_timeout_seconds: Number | None = Field(
        None, ge=0.001, le=86_400, description="Overrides predict_timeout_seconds."
    )
    cache_max_entries: Whole | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="Overrides cache_max_entries (0: no prediction cache; see "
        "modelport.serving.prediction_cache).",
    )
    max_live_segments: Whole | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Overrides max_live_segments: segment instances loaded at once (a "
        "segmented model; the least recently used is unloaded).",
    )
    max_segments: Whole | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Overrides max_segments: segments the model may have at all (new ones "
        "past it are refused).",
    )
    ledger_retention_days: Number | None = Field(
        None,
        ge=0,
        le=36_500,
        description="Overrides ledger_retention_days: days rows stay in the ledger table before "
        "the archive takes them (0: keep every row; modelport.store.retention).",
    )


def check_serving(config: Any) -> dict[str, Any]:
    """Validate per-model serving settings; every problem names its key."""
    clean = checked(ServingSettings, config, "serving settings").model_dump(exclude_none=True)
    if clean.get("ledger_retention_days") and not archive.available():
        raise InvalidInput(
            f"invalid serving settings: ledger_retention_days: {archive.NEEDS_PYARROW}",
            details=[{"field": "ledger_retention_days", "reason": archive.NEEDS_PYARROW}],
        )
    return clean


def set_serving(conn: Connection, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Replace a model's serving settings (keys not given fall back to the server defaults)."""
    model = _model_row(conn, name)
    clean = check_serving(config)
    conn.execute(models.update().where(models.c.id == model.id).values(serving=clean or None))
    bump_generation(conn)
    return {"model": name, "serving": clean}


def get_serving(conn: Connection, name: str) -> dict[str, Any]:
    return {"model": name, "serving": _model_row(conn, name).serving or {}}


def routing_state(conn: Connection, model_id: int | None = None) -> dict[str, dict[str, Any]]:
    """Every model (or one) with what routing needs: id, task, serving settings, aliases,
    version numbers, traffic policy and revision, adapter, and per-consumer settings."""
    query = sa.select(
        models.c.id,
        models.c.name,
        models.c.task,
        models.c.serving,
        models.c.traffic,
        models.c.traffic_rev,
        models.c.adapter,
        models.c.spec,
        models.c.triggers,
        models.c.segment_by,
    )
    if model_id is not None:
        query = query.where(models.c.id == model_id)
    out: dict[str, dict[str, Any]] = {
        r.name: {
            "id": r.id,
            "task": r.task,
            "serving": r.serving or {},
            "aliases": {},
            "versions": set(),
            "traffic": r.traffic,
            "traffic_rev": r.traffic_rev,
            "adapter": r.adapter,
            "spec": r.spec,
            "triggers": r.triggers,
            "segment_by": r.segment_by,
            "consumers": {},
        }
        for r in conn.execute(query)
    }
    by_id = {m["id"]: m for m in out.values()}
    for a in conn.execute(sa.select(aliases.c.model_id, aliases.c.name, aliases.c.version)):
        if a.model_id in by_id:
            by_id[a.model_id]["aliases"][a.name] = a.version
    for v in conn.execute(sa.select(versions.c.model_id, versions.c.version)):
        if v.model_id in by_id:
            by_id[v.model_id]["versions"].add(v.version)
    for c in conn.execute(sa.select(consumers)):
        if c.model_id in by_id:
            by_id[c.model_id]["consumers"][c.consumer] = {
                "pin_version": c.pin_version,
                "pin_alias": c.pin_alias,
                "adapter": c.adapter,
            }
    return out


def model_routing_state(conn: Connection, model_id: int) -> dict[str, Any]:
    """One model's routing state (see :func:`routing_state`)."""
    return next(iter(routing_state(conn, model_id).values()))


def model_row(conn: Connection, name: str) -> sa.Row[Any]:
    """A model's row; ModelNotFound when there is none."""
    return _model_row(conn, name)


CONSUMER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}\Z")  # as API keys name them


def check_consumer_name(name: str) -> str:
    if not CONSUMER_NAME.match(name):
        raise InvalidRequest(
            f"invalid consumer name {name!r}: letters, digits and _ . @ - (1-200 characters)",
            details=[{"field": "consumer", "reason": "invalid name"}],
        )
    return name
