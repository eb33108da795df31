"""The native REST API under ``/v1``: monitoring."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ...ids import MAX_ID
from .. import shapes as s
from ..deps import (
    ERRORS,
    Svc,
    Version,
    Who,
    json_body,
    json_response,
)

router = APIRouter(prefix="/v1")


_WINDOW = "A duration: seconds, or a number with s, m, h, d or w (30s, 15m, 2h, 7d)"
_SEGMENT = "Only the predictions of this segment (a segmented model)"


@router.get(
    "/models/{name}/performance",
    response_model=s.PerformanceReport,
    responses=ERRORS,
    tags=["monitoring"],
    summary="Live metrics per version from feedback labels, over a window in time buckets",
)
async def performance(
    name: str,
    svc: Svc,
    who: Who,
    window: Annotated[str, Query(description=_WINDOW)] = "24h",
    version: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    buckets: Annotated[int, Query(ge=1, le=1000)] = 24,
    consumer: Annotated[str | None, Query(description="Only this consumer's predictions")] = None,
    segment: Annotated[str | None, Query(description=_SEGMENT)] = None,
) -> Response:
    return json_response(
        await svc.performance(
            who,
            name,
            window=window,
            version=version,
            buckets=buckets,
            consumer=consumer,
            segment=segment,
        )
    )


@router.get(
    "/models/{name}/drift",
    response_model=s.DriftReport,
    responses=ERRORS,
    tags=["monitoring"],
    summary="Per version: the window's inputs and predictions against the version's reference",
)
async def drift(
    name: str,
    svc: Svc,
    who: Who,
    window: Annotated[str | None, Query(description=_WINDOW + "; default: the model's")] = None,
    version: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    segment: Annotated[str | None, Query(description=_SEGMENT)] = None,
) -> Response:
    return json_response(
        await svc.drift(who, name, window=window, version=version, segment=segment)
    )


@router.get(
    "/models/{name}/monitoring",
    response_model=s.MonitoringInfo,
    responses=ERRORS,
    tags=["monitoring"],
    summary="A model's monitoring settings: drift thresholds, window, webhook",
)
async def get_monitoring(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_monitoring(who, name))


@router.put(
    "/models/{name}/monitoring",
    response_model=s.MonitoringInfo,
    responses=ERRORS,
    tags=["monitoring"],
    summary="Set (or with null remove) the monitoring settings (admin, audited)",
)
async def set_monitoring(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_monitoring(who, name, await json_body(request)))


@router.put(
    "/models/{name}/versions/{version}/reference",
    response_model=s.ReferenceSet,
    responses=ERRORS,
    tags=["monitoring"],
    summary="Set a version's drift reference from a window of its own traffic (admin, audited)",
)
async def set_reference(
    name: str, version: Version, request: Request, svc: Svc, who: Who
) -> Response:
    return json_response(await svc.set_reference(who, name, version, await json_body(request)))
