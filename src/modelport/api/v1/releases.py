"""The native REST API under ``/v1``: releases."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ...ids import MAX_ID
from .. import shapes as s
from ..deps import (
    ERRORS,
    Svc,
    Version,
    Who,
    body_of,
    doc_body,
    doc_document,
    json_body,
    json_response,
)

router = APIRouter(prefix="/v1")


@router.get(
    "/models/{name}/traffic",
    response_model=s.TrafficState,
    responses=ERRORS,
    tags=["releases"],
    summary="The traffic policy of the unversioned routes",
)
async def get_traffic(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_traffic(who, name))


@router.put(
    "/models/{name}/traffic",
    response_model=s.TrafficState,
    responses=ERRORS,
    tags=["releases"],
    summary="Set the traffic policy: single, split, shadow, bandit or canary (admin, audited)",
    openapi_extra=doc_body(s.TrafficPolicy),
)
async def set_traffic(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_traffic(who, name, await json_body(request)))


@router.get(
    "/models/{name}/consumers",
    response_model=list[s.ConsumerInfo],
    responses=ERRORS,
    tags=["releases"],
    summary="Consumers with pins or adapters on this model",
)
async def list_consumers(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_consumers(who, name))


@router.get(
    "/models/{name}/consumers/{consumer}",
    response_model=s.ConsumerInfo,
    responses=ERRORS,
    tags=["releases"],
    summary="One consumer's pin and adapter",
)
async def get_consumer(name: str, consumer: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_consumer(who, name, consumer))


@router.put(
    "/models/{name}/consumers/{consumer}",
    response_model=s.ConsumerInfo,
    responses=ERRORS,
    tags=["releases"],
    summary="Pin a consumer to a version or alias, give it an adapter (admin, audited)",
    openapi_extra=doc_body(s.ConsumerRequest),
)
async def set_consumer(name: str, consumer: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_consumer(who, name, consumer, await json_body(request)))


@router.delete(
    "/models/{name}/consumers/{consumer}",
    response_model=s.ConsumerRemoved,
    responses=ERRORS,
    tags=["releases"],
    summary="Remove a consumer's pin and adapter (admin, audited)",
)
async def delete_consumer(name: str, consumer: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.delete_consumer(who, name, consumer))


@router.get(
    "/models/{name}/adapter",
    response_model=s.ModelAdapter,
    responses=ERRORS,
    tags=["releases"],
    summary="The model-wide adapter for older payloads",
)
async def get_adapter(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_adapter(who, name))


@router.put(
    "/models/{name}/adapter",
    response_model=s.ModelAdapter,
    responses=ERRORS,
    tags=["releases"],
    summary="Set (or with null remove) the model-wide adapter (admin, audited)",
    openapi_extra=doc_document("adapter"),
)
async def set_adapter(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_adapter(who, name, await json_body(request)))


@router.get(
    "/models/{name}/events",
    response_model=list[s.ModelEvent],
    responses=ERRORS,
    tags=["releases"],
    summary="Release events, newest first: policies, pins, adapters, automatic actions, aliases",
)
async def events(
    name: str, svc: Svc, who: Who, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> Response:
    return json_response(await svc.events(who, name, limit))


@router.get(
    "/models/{name}/experiment",
    response_model=s.ExperimentReport,
    responses=ERRORS,
    tags=["releases"],
    summary="Per arm: traffic, feedback, the metric with its interval, the difference to control",
)
async def experiment(
    name: str,
    svc: Svc,
    who: Who,
    metric: Annotated[
        Literal["accuracy", "mean_reward", "rmse"] | None,
        Query(description="Default: mean_reward for reward bandits, else by the model's task"),
    ] = None,
    revision: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Default: the current one")
    ] = None,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
) -> Response:
    return json_response(
        await svc.experiment(who, name, metric=metric, revision=revision, alpha=alpha)
    )


@router.get(
    "/models/{name}/versions/{version}/batching",
    response_model=s.BatchingStats,
    responses=ERRORS,
    tags=["registry"],
    summary="Batch sizes and queue waits of a version in this process",
)
async def batching(name: str, version: Version, svc: Svc, who: Who) -> Response:
    return json_response(await svc.batch_stats(who, name, version))


@router.put(
    "/models/{name}/aliases/{alias}",
    response_model=s.AliasMove,
    responses=ERRORS,
    tags=["registry"],
    summary="Point an alias at a version (promote; audited, admin)",
    openapi_extra=doc_body(s.AliasMoveRequest),
)
async def set_alias(
    name: str,
    alias: str,
    svc: Svc,
    who: Who,
    body: Annotated[s.AliasMoveRequest, body_of(s.AliasMoveRequest)],
) -> Response:
    return json_response(await svc.set_alias(who, name, alias, body.version, body.reason))


@router.post(
    "/models/{name}/aliases/{alias}/rollback",
    response_model=s.AliasMove,
    responses=ERRORS,
    tags=["registry"],
    summary="Move an alias back to its previous target (audited, admin)",
    openapi_extra={
        "requestBody": {**doc_body(s.RollbackRequest)["requestBody"], "required": False}
    },
)
async def rollback(
    name: str,
    alias: str,
    svc: Svc,
    who: Who,
    body: Annotated[s.RollbackRequest | None, body_of(s.RollbackRequest, optional=True)],
) -> Response:
    return json_response(await svc.rollback(who, name, alias, body.reason if body else ""))


@router.get(
    "/models/{name}/aliases/history",
    response_model=list[s.AliasEvent],
    responses=ERRORS,
    tags=["registry"],
    summary="Every alias move of a model, newest first",
)
async def alias_history(
    name: str, svc: Svc, who: Who, alias: Annotated[str | None, Query()] = None
) -> Response:
    return json_response(await svc.alias_history(who, name, alias))
