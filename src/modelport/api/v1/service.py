"""The native REST API under ``/v1``: service."""

from __future__ import annotations

import os

from fastapi import APIRouter
from starlette.responses import Response

from ... import __version__
from ...settings import Settings
from .. import shapes as s
from ..deps import (
    ERRORS,
    Svc,
    Who,
    json_response,
)

router = APIRouter(prefix="/v1")


@router.get("/health", response_model=s.Health, tags=["service"], summary="Liveness")
async def health(svc: Svc) -> Response:
    return json_response(
        {"status": "ok", "version": __version__, "store": svc.store.dialect, "pid": os.getpid()}
    )


@router.get(
    "/settings",
    response_model=Settings,
    tags=["service"],
    summary="Effective settings (admin)",
    responses=ERRORS,
)
async def settings(svc: Svc, who: Who) -> Response:
    who.require("admin")
    return json_response(svc.settings.public())
