"""The native REST API under ``/v1``: keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from starlette.responses import Response

from .. import shapes as s
from ..deps import (
    ERRORS,
    Id,
    Svc,
    Who,
    body_of,
    doc_body,
    json_response,
)

router = APIRouter(prefix="/v1")


@router.post(
    "/keys",
    response_model=s.KeyCreated,
    status_code=201,
    responses=ERRORS,
    tags=["keys"],
    summary="Create an API key for a consumer (admin)",
    openapi_extra=doc_body(s.KeyCreateRequest),
)
async def create_key(
    svc: Svc, who: Who, body: Annotated[s.KeyCreateRequest, body_of(s.KeyCreateRequest)]
) -> Response:
    return json_response(await svc.create_key(who, body.name, list(body.scopes)), 201)


@router.get("/keys", response_model=list[s.KeyInfo], responses=ERRORS, tags=["keys"])
async def list_keys(svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_keys(who))


@router.delete("/keys/{key_id}", response_model=s.KeyRevoked, responses=ERRORS, tags=["keys"])
async def revoke_key(key_id: Id, svc: Svc, who: Who) -> Response:
    return json_response(await svc.revoke_key(who, key_id))
