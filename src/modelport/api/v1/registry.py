"""The native REST API under ``/v1``: registry."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import ValidationError
from starlette.responses import FileResponse, Response

from .. import shapes as s
from ..deps import (
    ERRORS,
    Svc,
    Version,
    Who,
    body_of,
    doc_body,
    invalid,
    json_body,
    json_response,
)

router = APIRouter(prefix="/v1")


@router.post(
    "/models",
    response_model=s.ModelInfo,
    status_code=201,
    responses=ERRORS,
    tags=["registry"],
    summary="Create an empty model (admin)",
    openapi_extra=doc_body(s.CreateModel),
)
async def create_model(
    svc: Svc, who: Who, body: Annotated[s.CreateModel, body_of(s.CreateModel)]
) -> Response:
    if body.algorithm is not None:
        doc = body.model_dump(by_alias=True, exclude_none=True, exclude={"task"})
        return json_response(await svc.create_from_algorithm(who, doc), 201)
    out = await svc.create_model(who, body.name, body.task, body.description, body.segment_by)
    return json_response(out, 201)


@router.get("/models", response_model=list[s.ModelInfo], responses=ERRORS, tags=["registry"])
async def list_models(svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_models(who))


@router.get("/models/{name}", response_model=s.ModelInfo, responses=ERRORS, tags=["registry"])
async def get_model(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_model(who, name))


@router.post(
    "/models/{name}/versions",
    response_model=s.VersionInfo,
    status_code=201,
    responses=ERRORS,
    tags=["registry"],
    summary="Push an artifact as a new immutable version",
    description=(
        "Multipart form: `artifact` (the file: skops, joblib/pickle, or a zipped MLflow model) "
        "and `metadata` (a JSON object, see PushMetadata). Pickle-based formats run code when "
        "loaded and need an admin key; the `push` scope may push skops files only. The artifact "
        "is loaded and smoke-tested on a row that fits the schema before anything is stored."
    ),
)
async def push(
    name: str,
    svc: Svc,
    who: Who,
    artifact: Annotated[UploadFile, File(description="The model artifact")],
    metadata: Annotated[str, Form(description="JSON object, see PushMetadata")] = "{}",
) -> Response:
    who.require("push")
    try:
        meta = s.PushMetadata.model_validate_json(metadata)
    except ValidationError as exc:
        raise invalid(exc, "metadata", "invalid push metadata") from None
    fd, tmp = tempfile.mkstemp(prefix="modelport-push-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(artifact.file, out, 1 << 20)
        result = await svc.push(
            who, name, FilePath(tmp), meta.model_dump(by_alias=True, exclude_none=True)
        )
    finally:
        os.unlink(tmp)
    return json_response(result, 201)


@router.get(
    "/models/{name}/versions",
    response_model=list[s.VersionInfo],
    responses=ERRORS,
    tags=["registry"],
)
async def list_versions(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_versions(who, name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=s.VersionInfo,
    responses=ERRORS,
    tags=["registry"],
    summary="A version with its schema and lineage",
)
async def get_version(
    name: str,
    version: Version,
    svc: Svc,
    who: Who,
    stats: Annotated[bool, Query(description="Include training-data statistics")] = False,
) -> Response:
    return json_response(await svc.get_version(who, name, version, stats=stats))


@router.get(
    "/models/{name}/versions/{version}/schema",
    response_model=s.InputSchema,
    responses=ERRORS,
    tags=["registry"],
    summary="What a version expects as input",
)
async def get_schema(name: str, version: Version, svc: Svc, who: Who) -> Response:
    return json_response((await svc.get_version(who, name, version))["schema"])


@router.get(
    "/models/{name}/versions/{version}/artifact",
    response_class=FileResponse,
    responses={
        **ERRORS,
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
    },
    tags=["registry"],
    summary="A version's artifact, for batch scoring (predict and read scopes)",
)
async def get_artifact(name: str, version: Version, svc: Svc, who: Who) -> Response:
    path, sha256 = await svc.artifact(who, name, version)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{name}-{version}.artifact",
        headers={"X-Artifact-SHA256": sha256},
    )


@router.get(
    "/models/{name}/serving",
    response_model=s.ModelServing,
    responses=ERRORS,
    tags=["registry"],
    summary="A model's serving settings (batching)",
)
async def get_serving(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_serving(who, name))


@router.put(
    "/models/{name}/serving",
    response_model=s.ModelServing,
    responses=ERRORS,
    tags=["registry"],
    summary="Set a model's serving settings (admin)",
    openapi_extra=doc_body(s.ServingSettings),
)
async def set_serving(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_serving(who, name, await json_body(request)))
