"""Segmented models: one model instance per value of an input field (a store, a region, ...).

A model declares its segment key (``segment_by``): in the spec of a model made from an
algorithm, or with ``PUT /v1/models/{name}/segments`` for a pushed one. A segment's instances
are ordinary versions of the model, tagged with the segment, and its alias pointers are
ordinary aliases named ``<alias>@<segment>`` (``production@store-7``): one model in the
registry, one sequence of version numbers, so the ledger's (model, version) still names exactly
the weights that answered, lineage parents chain within a segment, and every alias move is
audited and can be rolled back like any other. A row whose segment has no ``<alias>@<segment>``
is answered by the model's ``<alias>`` itself: the fallback.

An online model gets a new instance (from its algorithm and parameters) the first time a
segment appears in its observations; it learns from that segment's observations only and is
snapshotted as versions of that segment (see :mod:`modelport.learning.learner`).

Memory stays bounded: at most ``max_live_segments`` segment instances of a model are loaded
(serving and learning alike); the least recently used is unloaded (an online one snapshotted
first) and loaded again from the store when its segment comes back.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import Conflict, InvalidInput
from ..inputs.schema import Schema, parse_schema
from ..registry import models as registry
from ..store.tables import models, versions

#: What a segment value may look like (it becomes part of alias names and URLs).
SEGMENT_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
#: Field types a segment key may have.
SEGMENT_TYPES = frozenset({"string", "category", "integer"})


def segment_of(value: Any, field: str) -> str:
    """A row's segment from its value of the segment key; 422 naming the field when it has
    none or one that cannot be a segment."""
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars from a validated table
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or (isinstance(value, float) and value != value):
        raise InvalidInput(
            f"the segment key {field!r} is missing",
            details=[{"field": field, "reason": "missing (the model is segmented by it)"}],
        )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(
            f"the segment key {field!r} must be a string or an integer",
            details=[{"field": field, "reason": "expected a string or an integer segment"}],
        )
    text = str(value)
    if not SEGMENT_VALUE.match(text):
        raise InvalidInput(
            f"bad segment {text[:80]!r} in {field!r}",
            details=[
                {
                    "field": field,
                    "reason": "a segment is 1-64 letters, digits, '_', '.', ':' or '-', "
                    "starting with a letter or digit",
                }
            ],
        )
    return text


def segment_alias(alias: str, segment: str) -> str:
    """The name of a segment's own pointer for ``alias``."""
    return f"{alias}@{segment}"


def check_segment_key(field: Any, schema: Schema | None, where: str = "segment_by") -> str:
    """A segment key: a field of the schema (when known) of a type segments can be."""
    if not isinstance(field, str) or not field:
        raise InvalidInput(
            "the segment key must be the name of an input field",
            details=[{"field": where, "reason": "expected a field name"}],
        )
    if schema is not None:
        found = next((f for f in schema.fields if f.name == field), None)
        if found is None:
            raise InvalidInput(
                f"the segment key {field!r} is not an input field",
                details=[{"field": where, "reason": f"no input field {field!r}"}],
            )
        if found.type not in SEGMENT_TYPES:
            raise InvalidInput(
                f"the segment key {field!r} is a {found.type}: segments are strings, "
                "categories or integers",
                details=[{"field": where, "reason": f"a {found.type} field cannot be a key"}],
            )
    return field


def segment_schema(
    conn: Connection, name: str, key: str | None, schema: Schema, source: str
) -> Schema:
    """The schema of a segment's pushed version. One read from the estimator (every field a
    number: nothing more is known) gives way to the schema of the model's newest version with
    the same fields; failing that, the key becomes a string field, as segment values are."""
    if source != "estimator" or key is None:
        return schema
    names = set(schema.names)
    for row in reversed(registry.list_versions(conn, name)):
        known = parse_schema(row["schema"])
        if set(known.names) == names:
            by_name = {f.name: f for f in known.fields}
            return Schema(tuple(by_name[n] for n in schema.names))
    return Schema(
        tuple(dataclasses.replace(f, type="string") if f.name == key else f for f in schema.fields)
    )


# -- the registry side -----------------------------------------------------------------------------


def set_segment_key(conn: Connection, name: str, doc: Any, *, actor: str) -> dict[str, Any]:
    """``{"field": "store"}`` (or ``{"field": null}``) as a pushed model's segment key."""
    from ..releases import consumers as releases

    if not isinstance(doc, dict) or set(doc) != {"field"}:
        raise InvalidInput(
            'the body must be {"field": "<input field>"} or {"field": null}',
            details=[{"field": "body", "reason": 'expected an object with the key "field"'}],
        )
    model = registry.model_row(conn, name)
    if model.spec is not None:
        raise Conflict(
            f"model {name!r} was made from an algorithm: its segment key is part of its spec"
        )
    field = doc["field"]
    if field is not None:
        check_segment_key(field, None, "field")
    conn.execute(models.update().where(models.c.id == model.id).values(segment_by=field))
    releases.record_event(conn, model.id, "segments_set", actor, {"field": field})
    registry.bump_generation(conn)
    return {"model": name, "field": field}


def describe(conn: Connection, name: str, live: dict[str, int]) -> dict[str, Any]:
    """A model's segment key and, per segment, its versions, its aliases and whether this
    server has it loaded (``live``: segment -> loaded version)."""
    model = registry.model_row(conn, name)
    per: dict[str, dict[str, Any]] = {}
    for row in conn.execute(
        sa.select(versions.c.version, versions.c.segment)
        .where(versions.c.model_id == model.id, versions.c.segment.is_not(None))
        .order_by(versions.c.version)
    ):
        entry = per.setdefault(row.segment, {"segment": row.segment, "versions": []})
        entry["versions"].append(row.version)
    aliases = registry.get_model(conn, name)["aliases"]
    for alias, version in aliases.items():
        base, _, segment = alias.partition("@")
        if segment:
            entry = per.setdefault(segment, {"segment": segment, "versions": []})
            entry.setdefault("aliases", {})[base] = version
    return {
        "model": name,
        "field": model.segment_by,
        "segments": [
            {"aliases": {}, **e, "live": e["segment"] in live} for _, e in sorted(per.items())
        ],
        "live": len(live),
    }


# -- bounded memory ----------------------------------------------------------------------------------


class LiveSegments:
    """The segments of one model that hold a loaded instance, least recently used first."""

    def __init__(self) -> None:
        self._order: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, segment: str) -> bool:
        return segment in self._order

    def items(self) -> list[tuple[str, Any]]:
        return list(self._order.items())

    def get(self, segment: str) -> Any:
        return self._order.get(segment)

    def versions(self) -> set[Any]:
        return set(self._order.values())

    def touch(self, segment: str, value: Any, limit: int) -> list[tuple[str, Any]]:
        """Mark ``segment`` (holding ``value``) as just used; the (segment, value) pairs to
        unload, oldest first, so that at most ``limit`` stay."""
        order = self._order
        order[segment] = value
        order.move_to_end(segment)
        out = []
        while len(order) > max(1, limit):
            out.append(order.popitem(last=False))
        return out

    def drop(self, segment: str) -> None:
        self._order.pop(segment, None)
