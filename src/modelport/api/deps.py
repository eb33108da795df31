"""What every HTTP route shares: the service and the caller as dependencies, JSON bodies read
with the limits and checked against a request shape, JSON responses, the error responses
that OpenAPI lists."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Path, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import InvalidInput, InvalidRequest
from ..ids import MAX_ID
from ..registry.keys import Principal
from ..service.core import Service
from . import front, payload
from . import shapes as s

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorEnvelope} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503)
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


#: The dashboard's session cookie (set by ``POST /login``): it holds the key.
SESSION_COOKIE = "modelport_key"
#: The header the dashboard's scripts send; a cross-site form cannot set it.
DASHBOARD_HEADER = "x-modelport-dashboard"


def api_key(request: Request) -> str | None:
    """The key: a bearer token or ``X-API-Key`` (:func:`modelport.api.front.api_key`), or the
    dashboard's cookie. The cookie counts for reads, and for changes only beside the dashboard
    header, so it never authorizes a cross-site request forgery."""
    key = front.api_key(dict(request.scope["headers"]))
    if key is not None:
        return key
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and (
        request.method in ("GET", "HEAD") or request.headers.get(DASHBOARD_HEADER) == "1"
    ):
        return cookie
    return None


async def principal(request: Request) -> Principal:
    return await service(request).authenticate(api_key(request))


async def json_body(request: Request) -> Any:
    """The request's JSON document (see :func:`modelport.api.payload.loads` for what is refused)."""
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected before sending the whole body") from None
    return payload.loads(raw, service(request).settings.max_json_depth)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], doc: Any) -> M:
    """A decoded JSON body as ``model``; :class:`InvalidInput` naming every offending field."""
    if not isinstance(doc, dict):
        raise InvalidRequest(
            "the body must be a JSON object",
            details=[{"field": "body", "reason": "not an object"}],
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError, where: str = "", what: str = "") -> InvalidInput:
    """Pydantic's errors as ours: each field (under ``where``), the message led by ``what``."""
    details = [
        {"field": ".".join([*([where] if where else []), *map(str, e["loc"])]), "reason": e["msg"]}
        for e in exc.errors()
    ]
    first = f"{details[0]['field']}: {details[0]['reason']}"
    return InvalidInput(f"{what}: {first}" if what else first, details=details)


def body_of(model: type[M], *, optional: bool = False) -> Any:
    """A dependency: the JSON body read like every other (limits, depth), checked as ``model``;
    with ``optional``, an empty body is None."""

    async def read(request: Request) -> M | None:
        if optional and not await request.body():
            return None
        return validated(model, await json_body(request))

    return Depends(read)


Svc = Annotated[Service, Depends(service)]
Who = Annotated[Principal, Depends(principal)]
#: Version numbers and ids in paths: positive and within what the store can hold.
Version = Annotated[int, Path(ge=1, le=MAX_ID, description="A version number")]
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def doc_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def doc_document(key: str) -> dict[str, Any]:
    """The documented body of a route that sets (or with null removes) one model document."""
    schema = {
        "type": "object",
        "required": [key],
        "additionalProperties": False,
        "properties": {key: {"anyOf": [{"type": "object"}, {"type": "null"}]}},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
