"""The native REST API under ``/v1``: the learning loop."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.responses import Response

from ...errors import InvalidInput
from .. import shapes as s
from ..deps import (
    ERRORS,
    Id,
    Svc,
    Who,
    doc_body,
    doc_document,
    json_body,
    json_response,
)

router = APIRouter(prefix="/v1")


@router.get(
    "/algorithms",
    response_model=list[s.Algorithm],
    responses=ERRORS,
    tags=["learning"],
    summary="Built-in algorithms, with their parameters and defaults",
)
async def algorithms(svc: Svc, who: Who) -> Response:
    return json_response(await svc.algorithms(who))


@router.post(
    "/models/{name}/observations",
    response_model=s.ObservationsResponse,
    responses=ERRORS,
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

    from ...inputs.inference import read_table

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
    responses=ERRORS,
    tags=["learning"],
    summary="Snapshot the observations as a content-hashed Parquet dataset (admin)",
)
async def snapshot(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.snapshot(who, name), 201)


@router.get(
    "/datasets/{dataset_id}",
    response_model=s.Dataset,
    responses=ERRORS,
    tags=["learning"],
    summary="A dataset snapshot",
)
async def dataset(dataset_id: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.dataset(who, dataset_id))


@router.post(
    "/models/{name}/jobs",
    response_model=s.Job,
    status_code=202,
    responses=ERRORS,
    tags=["learning"],
    summary="Queue a retrain or replay job (admin); it runs in a worker process",
    openapi_extra=doc_body(s.JobRequest),
)
async def create_job(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.create_job(who, name, await json_body(request)), 202)


@router.get(
    "/models/{name}/jobs",
    response_model=list[s.Job],
    responses=ERRORS,
    tags=["learning"],
    summary="A model's jobs, newest first",
)
async def list_jobs(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.list_jobs(who, name))


@router.get(
    "/jobs/{job_id}",
    response_model=s.Job,
    responses=ERRORS,
    tags=["learning"],
    summary="A job: status, progress, log and result",
)
async def job(job_id: Id, svc: Svc, who: Who) -> Response:
    return json_response(await svc.job(who, job_id))


@router.post(
    "/jobs/{job_id}/progress",
    response_model=s.Job,
    responses=ERRORS,
    tags=["learning"],
    summary="Report a batch scoring run's progress (its client; the heartbeat)",
    openapi_extra=doc_body(s.RunProgress),
)
async def report_run(job_id: Id, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.report_run(who, job_id, await json_body(request)))


@router.post(
    "/jobs/{job_id}/finish",
    response_model=s.Job,
    responses=ERRORS,
    tags=["learning"],
    summary="End a batch scoring run with its result (its client)",
    openapi_extra=doc_body(s.RunFinish),
)
async def finish_run(job_id: Id, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.finish_run(who, job_id, await json_body(request)))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=s.Job,
    responses=ERRORS,
    tags=["learning"],
    summary="Cancel a queued or running job (admin)",
)
async def cancel_job(job_id: Id, svc: Svc, who: Who) -> Response:
    return json_response(await svc.cancel_job(who, job_id))


@router.get(
    "/models/{name}/health",
    response_model=dict[str, Any],
    responses=ERRORS,
    tags=["service"],
    summary="How this server's calls of each version went: unhealthy versions and why",
)
async def version_health(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.version_health(who, name))


@router.get(
    "/models/{name}/learning",
    response_model=dict[str, Any],
    responses=ERRORS,
    tags=["learning"],
    summary="Online learning: observations, what was learned, the prequential record",
)
async def learning_status(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.learning_status(who, name))


@router.get(
    "/models/{name}/triggers",
    response_model=dict[str, Any],
    responses=ERRORS,
    tags=["learning"],
    summary="When the model retrains by itself",
)
async def get_triggers(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_triggers(who, name))


@router.put(
    "/models/{name}/triggers",
    response_model=dict[str, Any],
    responses=ERRORS,
    tags=["learning"],
    summary="Set (or with null remove) the retraining triggers (admin, audited)",
    openapi_extra=doc_document("triggers"),
)
async def set_triggers(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_triggers(who, name, await json_body(request)))


@router.get(
    "/models/{name}/segments",
    response_model=dict[str, Any],
    responses=ERRORS,
    tags=["registry"],
    summary="A model's segment key, its segments' versions and aliases, and which are loaded",
)
async def get_segments(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_segments(who, name))


@router.put(
    "/models/{name}/segments",
    response_model=dict[str, Any],
    responses=ERRORS,
    tags=["registry"],
    summary='Set a pushed model\'s segment key, {"field": "store"} (or null) (admin, audited)',
)
async def set_segments(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_segments(who, name, await json_body(request)))


@router.get(
    "/models/{name}/gate",
    response_model=s.GateInfo,
    responses=ERRORS,
    tags=["learning"],
    summary="The promotion gate retrained candidates pass through",
)
async def get_gate(name: str, svc: Svc, who: Who) -> Response:
    return json_response(await svc.get_gate(who, name))


@router.put(
    "/models/{name}/gate",
    response_model=s.GateInfo,
    responses=ERRORS,
    tags=["learning"],
    summary="Set (or with null remove) the promotion gate (admin, audited)",
    openapi_extra=doc_document("gate"),
)
async def set_gate(name: str, request: Request, svc: Svc, who: Who) -> Response:
    return json_response(await svc.set_gate(who, name, await json_body(request)))
