"""The native REST API under ``/v1``: thin handlers over :class:`~modelport.service.core.Service`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, Response

from .. import __version__
from ..errors import InvalidInput, InvalidRequest, PayloadTooLarge
from ..ids import MAX_ID
from ..registry.keys import Principal
from ..service.core import Service
from ..settings import Settings
from ..timefmt import parse_time
from . import payload
from . import shapes as s

router = APIRouter(prefix="/v1")

_ERRORS: dict[int | str, dict[str, Any]] = {
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
    """The key: a bearer token, ``X-API-Key``, or the dashboard's cookie. The cookie counts
    for reads, and for changes only beside the dashboard header, so it never authorizes a
    cross-site request forgery."""
    auth = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    header = request.headers.get("x-api-key")
    if header is not None:
        return header
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
        raise _invalid(exc) from None


def _invalid(exc: ValidationError, where: str = "", what: str = "") -> InvalidInput:
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


def _doc_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def _doc_document(key: str) -> dict[str, Any]:
    """The documented body of a route that sets (or with null removes) one model document."""
    schema = {
        "type": "object",
        "required": [key],
        "additionalProperties": False,
        "properties": {key: {"anyOf": [{"type": "object"}, {"type": "null"}]}},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# -- service ------------------------------------------------------------------------------------


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
    responses=_ERRORS,
)
async def settings(svc: Svc, who: Who) -> Response:
    who.require("admin")
    return json_response(svc.settings.public())


# -- predictions --------------------------------------------------------------------------------


@router.get(
    "/predictions/{prediction_id}",
    response_model=s.PredictionRecord,
    responses=_ERRORS,
    tags=["predictions"],
    summary="One prediction with its feedback history",
)
async def get_prediction(prediction_id: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_prediction(who, prediction_id))


@router.get(
    "/models/{name}/predictions",
    response_model=s.PredictionPage,
    responses=_ERRORS,
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
    responses=_ERRORS,
    tags=["predictions"],
    summary="Labels and rewards for earlier predictions",
    openapi_extra=_doc_body(s.FeedbackRequest),
)
async def feedback(request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.feedback(who, await json_body(request)))


# -- registry -----------------------------------------------------------------------------------


@router.post(
    "/models",
    response_model=s.ModelInfo,
    status_code=201,
    responses=_ERRORS,
    tags=["registry"],
    summary="Create an empty model (admin)",
    openapi_extra=_doc_body(s.CreateModel),
)
async def create_model(
    svc: Svc, who: Who, body: Annotated[s.CreateModel, body_of(s.CreateModel)]
) -> Response:
    if body.algorithm is not None:
        doc = body.model_dump(by_alias=True, exclude_none=True, exclude={"task"})
        return json_response(await svc.create_from_algorithm(who, doc), 201)
    out = await svc.create_model(who, body.name, body.task, body.description)
    if body.segment_by is not None:
        await svc.set_segments(who, body.name, {"field": body.segment_by})
        out["segment_by"] = body.segment_by
    return json_response(out, 201)


@router.get("/models", response_model=list[s.ModelInfo], responses=_ERRORS, tags=["registry"])
async def list_models(svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_models(who))


@router.get("/models/{name}", response_model=s.ModelInfo, responses=_ERRORS, tags=["registry"])
async def get_model(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_model(who, name))


@router.post(
    "/models/{name}/versions",
    response_model=s.VersionInfo,
    status_code=201,
    responses=_ERRORS,
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
        raise _invalid(exc, "metadata", "invalid push metadata") from None
    limit = svc.settings.max_artifact_bytes
    fd, tmp = tempfile.mkstemp(prefix="modelport-push-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(artifact.file, out, 1 << 20)
        if os.path.getsize(tmp) > limit:
            raise PayloadTooLarge(f"the artifact exceeds max_artifact_bytes ({limit})")
        if os.path.getsize(tmp) == 0:
            raise InvalidInput(
                "the artifact is empty", details=[{"field": "artifact", "reason": "empty file"}]
            )
        result = await svc.push(
            who, name, FilePath(tmp), meta.model_dump(by_alias=True, exclude_none=True)
        )
    finally:
        os.unlink(tmp)
    return json_response(result, 201)


@router.get(
    "/models/{name}/versions",
    response_model=list[s.VersionInfo],
    responses=_ERRORS,
    tags=["registry"],
)
async def list_versions(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_versions(who, name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=s.VersionInfo,
    responses=_ERRORS,
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
    responses=_ERRORS,
    tags=["registry"],
    summary="What a version expects as input",
)
async def get_schema(name: str, version: Version, svc: Svc, who: Who) -> Response:
    return json_response((await svc.get_version(who, name, version))["schema"])


@router.get(
    "/models/{name}/versions/{version}/artifact",
    response_class=FileResponse,
    responses={
        **_ERRORS,
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
    responses=_ERRORS,
    tags=["registry"],
    summary="A model's serving settings (batching)",
)
async def get_serving(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_serving(who, name))


@router.put(
    "/models/{name}/serving",
    response_model=s.ModelServing,
    responses=_ERRORS,
    tags=["registry"],
    summary="Set a model's serving settings (admin)",
    openapi_extra=_doc_body(s.ServingSettings),
)
async def set_serving(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_serving(who, name, await json_body(request)))


# -- the learning loop -------------------------------------------------------------------------------


@router.get(
    "/algorithms",
    response_model=list[s.Algorithm],
    responses=_ERRORS,
    tags=["learning"],
    summary="Built-in algorithms, with their parameters and defaults",
)
async def algorithms(svc: Svc, who: Who) -> Response:
    return json_response(await svc.algorithms(who))


@router.post(
    "/models/{name}/observations",
    response_model=s.ObservationsResponse,
    responses=_ERRORS,
    tags=["learning"],
    summary="Labelled rows to learn from: JSON, or a CSV/Parquet file upload (feedback scope)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ObservationsRequest"}
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
        }
    },
)
async def observations(name: str, request: Request, svc: Svc, who: Who) -> Response:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:  # closing it removes the spooled upload
            upload = form.get("file")
            if not isinstance(upload, StarletteUpload):
                raise InvalidInput(
                    "send the file in a form field named 'file'",
                    details=[{"field": "file", "reason": "missing"}],
                )
            rows, text = await _table_rows(upload)
        key = request.headers.get("idempotency-key")
        return json_response(await svc.observe(who, name, rows, "file", key, text=text))
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"observations"}:
        raise InvalidInput(
            'the body must be {"observations": [...]}',
            details=[{"field": "observations", "reason": "expected the one key 'observations'"}],
        )
    key = request.headers.get("idempotency-key")
    return json_response(await svc.observe(who, name, body["observations"], idempotency_key=key))


async def _table_rows(upload: StarletteUpload) -> tuple[list[dict[str, Any]], bool]:
    """The rows of an uploaded CSV or Parquet file (by its name), NaN as missing, and whether
    the cells are text (a CSV's: the service reads each as its field's type)."""
    import pandas as pd

    from ..inputs.schema import read_table

    filename = upload.filename or "upload.csv"
    suffix = ".parquet" if filename.lower().endswith((".parquet", ".pq")) else ".csv"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        shutil.copyfileobj(upload.file, tmp)
        tmp.flush()
        try:
            frame = read_table(tmp.name, text=suffix == ".csv")
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(
                f"cannot read {filename}: {exc}", details=[{"field": "file", "reason": str(exc)}]
            ) from None
    frame = frame.astype(object).where(pd.notna(frame), None)
    rows: list[dict[str, Any]] = frame.to_dict("records")
    return rows, suffix == ".csv"


@router.post(
    "/models/{name}/datasets",
    response_model=s.Dataset,
    status_code=201,
    responses=_ERRORS,
    tags=["learning"],
    summary="Snapshot the observations as a content-hashed Parquet dataset (admin)",
)
async def snapshot(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.snapshot(who, name), 201)


@router.get(
    "/datasets/{dataset_id}",
    response_model=s.Dataset,
    responses=_ERRORS,
    tags=["learning"],
    summary="A dataset snapshot",
)
async def dataset(dataset_id: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.dataset(who, dataset_id))


@router.post(
    "/models/{name}/jobs",
    response_model=s.Job,
    status_code=202,
    responses=_ERRORS,
    tags=["learning"],
    summary="Queue a retrain or replay job (admin); it runs in a worker process",
    openapi_extra=_doc_body(s.JobRequest),
)
async def create_job(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.create_job(who, name, await json_body(request)), 202)


@router.get(
    "/models/{name}/jobs",
    response_model=list[s.Job],
    responses=_ERRORS,
    tags=["learning"],
    summary="A model's jobs, newest first",
)
async def list_jobs(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_jobs(who, name))


@router.get(
    "/jobs/{job_id}",
    response_model=s.Job,
    responses=_ERRORS,
    tags=["learning"],
    summary="A job: status, progress, log and result",
)
async def job(job_id: Id, svc: Svc, who: Who) -> Response:
    return json_response(await svc.job(who, job_id))


@router.post(
    "/jobs/{job_id}/progress",
    response_model=s.Job,
    responses=_ERRORS,
    tags=["learning"],
    summary="Report a batch scoring run's progress (its client; the heartbeat)",
    openapi_extra=_doc_body(s.RunProgress),
)
async def report_run(job_id: Id, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.report_run(who, job_id, await json_body(request)))


@router.post(
    "/jobs/{job_id}/finish",
    response_model=s.Job,
    responses=_ERRORS,
    tags=["learning"],
    summary="End a batch scoring run with its result (its client)",
    openapi_extra=_doc_body(s.RunFinish),
)
async def finish_run(job_id: Id, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.finish_run(who, job_id, await json_body(request)))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=s.Job,
    responses=_ERRORS,
    tags=["learning"],
    summary="Cancel a queued or running job (admin)",
)
async def cancel_job(job_id: Id, svc: Svc, who: Who) -> Response:
    return json_response(await svc.cancel_job(who, job_id))


@router.get(
    "/models/{name}/health",
    response_model=dict[str, Any],
    responses=_ERRORS,
    tags=["service"],
    summary="How this server's calls of each version went: unhealthy versions and why",
)
async def version_health(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.version_health(who, name))


@router.get(
    "/models/{name}/learning",
    response_model=dict[str, Any],
    responses=_ERRORS,
    tags=["learning"],
    summary="Online learning: observations, what was learned, the prequential record",
)
async def learning_status(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.learning_status(who, name))


@router.get(
    "/models/{name}/triggers",
    response_model=dict[str, Any],
    responses=_ERRORS,
    tags=["learning"],
    summary="When the model retrains by itself",
)
async def get_triggers(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_triggers(who, name))


@router.put(
    "/models/{name}/triggers",
    response_model=dict[str, Any],
    responses=_ERRORS,
    tags=["learning"],
    summary="Set (or with null remove) the retraining triggers (admin, audited)",
    openapi_extra=_doc_document("triggers"),
)
async def set_triggers(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_triggers(who, name, await json_body(request)))


@router.get(
    "/models/{name}/segments",
    response_model=dict[str, Any],
    responses=_ERRORS,
    tags=["registry"],
    summary="A model's segment key, its segments' versions and aliases, and which are loaded",
)
async def get_segments(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_segments(who, name))


@router.put(
    "/models/{name}/segments",
    response_model=dict[str, Any],
    responses=_ERRORS,
    tags=["registry"],
    summary='Set a pushed model\'s segment key, {"field": "store"} (or null) (admin, audited)',
)
async def set_segments(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_segments(who, name, await json_body(request)))


@router.get(
    "/models/{name}/gate",
    response_model=s.GateInfo,
    responses=_ERRORS,
    tags=["learning"],
    summary="The promotion gate retrained candidates pass through",
)
async def get_gate(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_gate(who, name))


@router.put(
    "/models/{name}/gate",
    response_model=s.GateInfo,
    responses=_ERRORS,
    tags=["learning"],
    summary="Set (or with null remove) the promotion gate (admin, audited)",
    openapi_extra=_doc_document("gate"),
)
async def set_gate(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_gate(who, name, await json_body(request)))


# -- releases -------------------------------------------------------------------------------------


@router.get(
    "/models/{name}/traffic",
    response_model=s.TrafficState,
    responses=_ERRORS,
    tags=["releases"],
    summary="The traffic policy of the unversioned routes",
)
async def get_traffic(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_traffic(who, name))


@router.put(
    "/models/{name}/traffic",
    response_model=s.TrafficState,
    responses=_ERRORS,
    tags=["releases"],
    summary="Set the traffic policy: single, split, shadow, bandit or canary (admin, audited)",
    openapi_extra=_doc_body(s.TrafficPolicy),
)
async def set_traffic(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_traffic(who, name, await json_body(request)))


@router.get(
    "/models/{name}/consumers",
    response_model=list[s.ConsumerInfo],
    responses=_ERRORS,
    tags=["releases"],
    summary="Consumers with pins or adapters on this model",
)
async def list_consumers(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_consumers(who, name))


@router.get(
    "/models/{name}/consumers/{consumer}",
    response_model=s.ConsumerInfo,
    responses=_ERRORS,
    tags=["releases"],
    summary="One consumer's pin and adapter",
)
async def get_consumer(name: str, consumer: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_consumer(who, name, consumer))


@router.put(
    "/models/{name}/consumers/{consumer}",
    response_model=s.ConsumerInfo,
    responses=_ERRORS,
    tags=["releases"],
    summary="Pin a consumer to a version or alias, give it an adapter (admin, audited)",
    openapi_extra=_doc_body(s.ConsumerRequest),
)
async def set_consumer(name: str, consumer: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_consumer(who, name, consumer, await json_body(request)))


@router.delete(
    "/models/{name}/consumers/{consumer}",
    response_model=s.ConsumerRemoved,
    responses=_ERRORS,
    tags=["releases"],
    summary="Remove a consumer's pin and adapter (admin, audited)",
)
async def delete_consumer(name: str, consumer: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.delete_consumer(who, name, consumer))


@router.get(
    "/models/{name}/adapter",
    response_model=s.ModelAdapter,
    responses=_ERRORS,
    tags=["releases"],
    summary="The model-wide adapter for older payloads",
)
async def get_adapter(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_adapter(who, name))


@router.put(
    "/models/{name}/adapter",
    response_model=s.ModelAdapter,
    responses=_ERRORS,
    tags=["releases"],
    summary="Set (or with null remove) the model-wide adapter (admin, audited)",
    openapi_extra=_doc_document("adapter"),
)
async def set_adapter(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_adapter(who, name, await json_body(request)))


@router.get(
    "/models/{name}/events",
    response_model=list[s.ModelEvent],
    responses=_ERRORS,
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
    responses=_ERRORS,
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
    responses=_ERRORS,
    tags=["registry"],
    summary="Batch sizes and queue waits of a version in this process",
)
async def batching(name: str, version: Version, svc: Svc, who: Who) -> Response:
    return json_response(await svc.batch_stats(who, name, version))


@router.put(
    "/models/{name}/aliases/{alias}",
    response_model=s.AliasMove,
    responses=_ERRORS,
    tags=["registry"],
    summary="Point an alias at a version (promote; audited, admin)",
    openapi_extra=_doc_body(s.AliasMoveRequest),
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
    responses=_ERRORS,
    tags=["registry"],
    summary="Move an alias back to its previous target (audited, admin)",
    openapi_extra={
        "requestBody": {**_doc_body(s.RollbackRequest)["requestBody"], "required": False}
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
    responses=_ERRORS,
    tags=["registry"],
    summary="Every alias move of a model, newest first",
)
async def alias_history(
    name: str, svc: Svc, who: Who, alias: Annotated[str | None, Query()] = None
) -> Response:
    return json_response(await svc.alias_history(who, name, alias))


# -- monitoring ----------------------------------------------------------------------------------

_WINDOW = "A duration: seconds, or a number with s, m, h, d or w (30s, 15m, 2h, 7d)"
_SEGMENT = "Only the predictions of this segment (a segmented model)"


@router.get(
    "/models/{name}/performance",
    response_model=s.PerformanceReport,
    responses=_ERRORS,
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
    responses=_ERRORS,
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
    responses=_ERRORS,
    tags=["monitoring"],
    summary="A model's monitoring settings: drift thresholds, window, webhook",
)
async def get_monitoring(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_monitoring(who, name))


@router.put(
    "/models/{name}/monitoring",
    response_model=s.MonitoringInfo,
    responses=_ERRORS,
    tags=["monitoring"],
    summary="Set (or with null remove) the monitoring settings (admin, audited)",
)
async def set_monitoring(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_monitoring(who, name, await json_body(request)))


@router.put(
    "/models/{name}/versions/{version}/reference",
    response_model=s.ReferenceSet,
    responses=_ERRORS,
    tags=["monitoring"],
    summary="Set a version's drift reference from a window of its own traffic (admin, audited)",
)
async def set_reference(
    name: str, version: Version, request: Request, svc: Svc, who: Who
) -> Response:
    return json_response(await svc.set_reference(who, name, version, await json_body(request)))


# -- keys ----------------------------------------------------------------------------------------


@router.post(
    "/keys",
    response_model=s.KeyCreated,
    status_code=201,
    responses=_ERRORS,
    tags=["keys"],
    summary="Create an API key for a consumer (admin)",
    openapi_extra=_doc_body(s.KeyCreateRequest),
)
async def create_key(
    svc: Svc, who: Who, body: Annotated[s.KeyCreateRequest, body_of(s.KeyCreateRequest)]
) -> Response:
    return json_response(await svc.create_key(who, body.name, list(body.scopes)), 201)


@router.get("/keys", response_model=list[s.KeyInfo], responses=_ERRORS, tags=["keys"])
async def list_keys(svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_keys(who))


@router.delete("/keys/{key_id}", response_model=s.KeyRevoked, responses=_ERRORS, tags=["keys"])
async def revoke_key(key_id: Id, svc: Svc, who: Who) -> Response:
    return json_response(await svc.revoke_key(who, key_id))
