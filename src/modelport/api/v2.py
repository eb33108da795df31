"""The Open Inference Protocol V2 (REST) under ``/v2``: thin handlers over the service.

Unversioned URLs route like ``/v1`` (the ``production`` alias), never "the latest version".
Every prediction lands in the ledger like any other; its ids come back in the response's
``parameters.prediction_ids`` (comma-separated). Errors use the protocol's ``{"error": "..."}``
(see :mod:`modelport.api.errors`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from .. import __version__
from ..registry.keys import Principal
from ..service.core import Service
from . import oip
from .deps import Version, json_response, principal, service

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

Svc = Annotated[Service, Depends(service)]
Who = Annotated[Principal, Depends(principal)]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": "Error",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
            }
        },
    }
    for code in (400, 401, 403, 404, 413, 503)
}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(oip.DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "row-major, nested or flat"},
    },
}
INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string", "enum": list(oip.OUTPUTS)},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "binary tensor extension: JSON header "
                    "(Inference-Header-Content-Length bytes) then raw tensors",
                }
            },
        },
    },
    "responses": {
        "200": {
            "description": "Inference response",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "model_name": {"type": "string"},
                            "model_version": {"type": "string"},
                            "id": {"type": "string"},
                            "parameters": {"type": "object"},
                            "outputs": {"type": "array", "items": _TENSOR},
                        },
                    }
                }
            },
        }
    },
}


def _ok(description: str, properties: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The documented 200 response of a route that answers a small JSON object."""
    schema = {"type": "object", "required": sorted(properties), "properties": properties}
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


_READY = _ok("Readiness", {"name": {"type": "string"}, "ready": {"type": "boolean"}})
_METADATA = _ok(
    "Model metadata",
    {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": _TENSOR},
    },
)


@router.get(
    "/health/live", summary="Server live", responses=_ok("Liveness", {"live": {"type": "boolean"}})
)
async def live() -> Response:
    return json_response({"live": True})


@router.get(
    "/health/ready",
    summary="Server ready",
    responses=_ok("Readiness", {"ready": {"type": "boolean"}}),
)
async def ready(request: Request) -> Response:
    ok = getattr(request.app.state, "service", None) is not None
    return json_response({"ready": ok}, 200 if ok else 503)


@router.get(
    "",
    summary="Server metadata",
    responses=_ok(
        "Server metadata",
        {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    ),
)
async def server_metadata() -> Response:
    return json_response(
        {"name": "modelport", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


async def metadata(svc: Service, who: Principal, name: str, version: int | None) -> dict[str, Any]:
    """A model's metadata (the version behind production, or ``version``); every version
    number for a key that may read the registry, else the one it would reach."""
    served, _ = await svc.served(who, name, version)
    versions = (
        [v["version"] for v in await svc.list_versions(who, name)]
        if who.allows("read")
        else [served.version]
    )
    return oip.model_metadata(
        name, served.version, versions, served.schema, served.loaded.flavor, served.loaded.classes
    )


async def _metadata(svc: Service, who: Principal, name: str, version: int | None) -> Response:
    return json_response(await metadata(svc, who, name, version))


@router.get(
    "/models/{name}",
    summary="Model metadata (the version behind production)",
    responses={**ERRORS, **_METADATA},
)
async def model_metadata(name: str, svc: Svc, who: Who) -> Response:
    return await _metadata(svc, who, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model metadata of a version",
    responses={**ERRORS, **_METADATA},
)
async def version_metadata(name: str, version: Version, svc: Svc, who: Who) -> Response:
    return await _metadata(svc, who, name, version)


@router.get("/models/{name}/ready", summary="Model ready", responses={**ERRORS, **_READY})
async def model_ready(name: str, svc: Svc, who: Who) -> Response:
    await svc.served(who, name)
    return json_response({"name": name, "ready": True})


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model version ready",
    responses={**ERRORS, **_READY},
)
async def version_ready(name: str, version: Version, svc: Svc, who: Who) -> Response:
    await svc.served(who, name, version)
    return json_response({"name": name, "ready": True})
