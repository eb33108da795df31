"""A push: an artifact checked (loaded, its schema found, a smoke prediction made, the
consumers' recent payloads tried against the schema) and added as a new immutable version.

Nothing is stored unless every check passes. Formats that run code when loaded need an admin
key, and a server without keys refuses them unless told otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from sqlalchemy.engine import Connection

from .. import flavors
from ..errors import (
    ArtifactRejected,
    Conflict,
    Incompatible,
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
)
from ..flavors.base import example_table
from ..inputs.schema import Field, Schema, parse_schema
from ..monitoring import drift
from ..releases import compatibility
from ..releases.consumers import Release
from ..serving import segments
from ..serving.prediction_cache import is_deterministic
from ..serving.routing import Served
from . import models as registry

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .keys import Principal

#: How a server without keys refuses a push that runs code when loaded.
_NO_AUTH_REFUSAL = flavors.Refusal(
    "this server runs without keys (--no-auth), so anyone who can reach it could push one, a "
    "web page open in your browser included: serve with API keys, or restart with "
    "--dangerously-allow-code-without-auth if you accept that",
    "{flavor} artifacts are refused by a server without keys",
)


async def push(
    runtime: Runtime, principal: Principal, name: str, artifact: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    """Check an artifact (load, schema, smoke prediction) and add it as a new version.

    Nothing is stored unless every check passes. Formats that run code when loaded need an
    admin key, and a server without keys refuses them unless told otherwise; the ``push``
    scope may push skops files only.
    """
    principal.require("push")
    check_artifact_size(artifact, runtime.settings.max_artifact_bytes)
    registry.check_model_name(name)
    if meta.get("alias") is not None:
        principal.require("admin")
        registry.check_alias_name(meta["alias"])
    if meta.get("task") is not None:
        registry.check_task(meta["task"])
    segment = meta.get("segment")
    if segment is not None:
        segment = segments.segment_of(segment, "segment")
        key = (runtime.router.models.get(name) or {}).get("segment_by")
        if key is None:
            await asyncio.to_thread(runtime.router.refresh)
            key = (runtime.router.models.get(name) or {}).get("segment_by")
        if key is None:
            raise Conflict(
                f"model {name!r} has no segment key: set one first "
                f'(PUT /v1/models/{name}/segments with {{"field": "<input field>"}})'
            )
    flavor = str(meta.get("flavor") or await asyncio.to_thread(flavors.detect_flavor, artifact))
    trust, refusal = principal.allows("admin"), flavors.ADMIN_ONLY
    if runtime.settings.no_auth and not runtime.settings.dangerously_allow_code_without_auth:
        # Without keys everyone is an admin, a web page in the user's browser included.
        trust, refusal = False, _NO_AUTH_REFUSAL
    loaded = await asyncio.to_thread(
        functools.partial(flavors.load, trust_code=trust, refusal=refusal), flavor, artifact
    )
    schema, schema_source = _schema_for(
        meta.get("schema"), loaded, narrow=bool(meta.get("schema_from_train_data"))
    )
    if segment is not None:
        schema = await runtime.read(
            functools.partial(
                segments.segment_schema, name=name, key=key, schema=schema, source=schema_source
            )
        )
        segments.check_segment_key(key, schema, "schema")
    compat = await runtime.read(
        functools.partial(
            _compatibility,
            name=name,
            schema=schema,
            release=runtime.router.releases.get(name),
        )
    )
    if meta.get("strict") and not compat["compatible"]:
        failing = [c for c in compat["consumers"] if c["rows_rejected"]]
        raise Incompatible(
            "the new schema would reject recent payloads of "
            + ", ".join(repr(c["consumer"]) for c in failing)
            + " (give them an adapter, or push without strict)",
            details=[
                {
                    "field": f"consumer:{c['consumer']}",
                    "reason": f"{c['rows_rejected']} of {c['rows_checked']} rows rejected: "
                    + "; ".join(f"{r['field']}: {r['reason']}" for r in c["reasons"]),
                }
                for c in failing
            ],
        )
    try:
        smoke = example_table(schema)
        preds, probas = await asyncio.to_thread(loaded.predict_with_proba, smoke)
        preds = preds.tolist() if isinstance(preds, np.ndarray) else preds
        orjson.dumps({"p": preds, "q": probas}, option=orjson.OPT_SERIALIZE_NUMPY)
    except Exception as exc:
        raise ArtifactRejected(
            f"the smoke prediction failed on a row that fits the schema: "
            f"{type(exc).__name__}: {exc}",
            details=[{"field": "artifact", "reason": f"smoke prediction failed: {exc}"}],
        ) from exc

    def put() -> tuple[str, int]:
        with open(artifact, "rb") as fh:
            return runtime.artifacts.put(fh)

    sha, size = await asyncio.to_thread(put)
    await asyncio.to_thread(runtime.router.cache.keep, flavor, sha, loaded)
    described = await asyncio.to_thread(flavors.describe_object, loaded.obj)
    env = meta.get("environment") or {}
    lineage = {
        "created_by": principal.consumer,
        "python": env.get("python") or flavors.libraries_for(flavor)["python"],
        "libraries": env.get("libraries") or flavors.libraries_for(flavor, loaded.obj),
        "server_libraries": flavors.libraries_for(flavor, loaded.obj),
        "code_commit": meta.get("commit"),
        "train_data_sha256": meta.get("train_data_sha256"),
        "hyperparameters": meta.get("params") or described["hyperparameters"],
        "learned": described["learned"],
        "metrics": meta.get("metrics") or {},
        "schema_source": schema_source,
    }
    if meta.get("deterministic") is not None:
        lineage["deterministic"] = bool(meta["deterministic"])
    task = meta.get("task") or loaded.task
    stats = meta.get("train_stats")
    if isinstance(stats, dict) and isinstance(stats.get("fields"), dict):
        keep = set(schema.names)
        stats = {**stats, "fields": {k: v for k, v in stats["fields"].items() if k in keep}}
    reference = await asyncio.to_thread(
        drift.reference_from_sample, meta.get("reference_sample"), schema, loaded
    )

    def write(conn: Connection) -> int:
        model = registry.ensure_model(
            conn,
            name,
            task=task,
            description=meta.get("description") or "",
            actor=principal.consumer,
        )
        number = registry.insert_version(
            conn,
            model.id,
            sha256=sha,
            size_bytes=size,
            flavor=flavor,
            input_schema=schema.to_dict(),
            train_stats=stats,
            lineage=lineage,
            description=meta.get("version_description") or "",
            reference=reference,
            segment=segment,
        )
        if meta.get("alias"):
            registry.set_alias(
                conn,
                name,
                segments.segment_alias(meta["alias"], segment) if segment else meta["alias"],
                number,
                actor=principal.consumer,
                reason="set at push",
            )
        return number

    number = await runtime.writer.run(write)
    deterministic = is_deterministic(lineage, loaded.custom_code)
    runtime.router.add(
        Served(name, number, task, schema, loaded, deterministic=deterministic, segment=segment)
    )
    await asyncio.to_thread(runtime.router.refresh)
    out = await runtime.read(lambda c: registry.get_version(c, name, number))
    return {**out, "compatibility": compat}


def check_artifact_size(artifact: Path, limit: int) -> None:
    """An artifact is neither empty nor over ``max_artifact_bytes``."""
    size = os.path.getsize(artifact)
    if size > limit:
        raise PayloadTooLarge(f"the artifact exceeds max_artifact_bytes ({limit})")
    if size == 0:
        raise InvalidInput(
            "the artifact is empty", details=[{"field": "artifact", "reason": "empty file"}]
        )


def _compatibility(
    conn: Connection, *, name: str, schema: Schema, release: Release | None
) -> dict[str, Any]:
    """The push's compatibility report, for the version number the push will most likely get."""
    try:
        version = 1 + max(v["version"] for v in registry.list_versions(conn, name))
    except (ModelNotFound, ValueError):
        return {"since": None, "compatible": True, "consumers": []}  # a new model: no traffic
    return compatibility.check(conn, name, schema, version, release)


def _schema_for(given: Any, loaded: flavors.LoadedModel, *, narrow: bool) -> tuple[Schema, str]:
    """The version's schema: as given, from an MLflow signature, or from the estimator's features.

    With ``narrow`` (a schema inferred from all training-data columns), only the estimator's
    own input columns are kept, in its order; the target and other extra columns drop out.
    """
    features = getattr(loaded.obj, "feature_names_in_", None)
    if given is not None:
        schema = parse_schema(given)
        if narrow and features is not None:
            by_name = {f.name: f for f in schema.fields}
            missing = [str(n) for n in features if str(n) not in by_name]
            if missing:
                raise InvalidInput(
                    f"the training data lacks the model's input column(s): {', '.join(missing)}",
                    details=[{"field": n, "reason": "not in the training data"} for n in missing],
                )
            return Schema(tuple(by_name[str(n)] for n in features)), "train_data"
        return schema, "train_data" if narrow else "given"
    if isinstance(loaded.extra.get("schema"), Schema):
        return loaded.extra["schema"], "signature"
    if features is not None:
        return Schema(tuple(Field(str(n), "number") for n in features)), "estimator"
    width = getattr(loaded.obj, "n_features_in_", None)
    if isinstance(width, int) and width > 0:
        return Schema(tuple(Field(f"x{i}", "number") for i in range(width))), "estimator"
    raise InvalidInput(
        "no input schema: give one (--schema FILE), or training data to infer it from "
        "(--train-data FILE)",
        details=[{"field": "schema", "reason": "missing and cannot be derived from the artifact"}],
    )
