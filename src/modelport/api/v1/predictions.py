"""The native REST API under ``/v1``: predictions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ...ids import MAX_ID
from ...timefmt import parse_time
from .. import shapes as s
from ..deps import (
    ERRORS,
    Svc,
    Who,
    doc_body,
    json_body,
    json_response,
)

router = APIRouter(prefix="/v1")


@router.get(
    "/predictions/{prediction_id}",
    response_model=s.PredictionRecord,
    responses=ERRORS,
    tags=["predictions"],
    summary="One prediction with its feedback history",
)
async def get_prediction(prediction_id: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_prediction(who, prediction_id))


@router.get(
    "/models/{name}/predictions",
    response_model=s.PredictionPage,
    responses=ERRORS,
    tags=["predictions"],
    summary="Page through a model's predictions, oldest first",
)
async def list_predictions(
    name: str,
    svc: Svc,
    who: Who,
    version: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    since: Annotated[str | None, Query(description="ISO-8601 time or epoch seconds")] = None,
    until: Annotated[str | None, Query(description="ISO-8601 time or epoch seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    page = await svc.list_predictions(
        who,
        name,
        version=version,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        limit=limit,
        cursor=cursor,
    )
    return json_response(page)


@router.post(
    "/feedback",
    response_model=s.FeedbackResponse,
    responses=ERRORS,
    tags=["predictions"],
    summary="Labels and rewards for earlier predictions",
    openapi_extra=doc_body(s.FeedbackRequest),
)
async def feedback(request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.feedback(who, await json_body(request)))
