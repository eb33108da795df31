"""The ASGI application: ``create_app(settings)`` wires the service to its transports."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidRequest, ModelportError
from ..ids import MAX_ID
from ..monitoring.metrics import CONTENT_TYPE
from ..service.core import Service
from ..settings import Settings
from . import dashboard, errors, front, grpc, scoring, shapes, v1, v2
from .deps import ERRORS, api_key

_DOC_ONLY_MODELS = (
    shapes.CreateModel,
    shapes.AliasMoveRequest,
    shapes.RollbackRequest,
    shapes.KeyCreateRequest,
    shapes.PredictRequest,
    shapes.PredictResponse,
    shapes.FeedbackRequest,
    shapes.PushMetadata,
    shapes.ServingSettings,
    shapes.TrafficPolicy,
    shapes.ConsumerRequest,
    shapes.ObservationsRequest,
    shapes.JobRequest,
    shapes.RunProgress,
    shapes.RunFinish,
)


metrics_router = APIRouter()


@metrics_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "The Prometheus text format",
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
        **ERRORS,
    },
    tags=["service"],
    summary="Prometheus metrics (read key unless metrics_public)",
)
async def prometheus_metrics(request: Request) -> Response:
    svc: Service = request.app.state.service
    if not svc.settings.metrics_public:
        who = await svc.authenticate(api_key(request))
        who.require("read")
    body = await asyncio.to_thread(svc.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)


class ModelportApp(FastAPI):
    """The FastAPI app, with the scoring routes answered before the framework's machinery;
    every HTTP request passes the front door (:mod:`modelport.api.front`) first."""

    front: front.FrontDoor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.front.check(scope)
            if refused is not None:
                oip = scope["path"].startswith("/v2")
                await _refuse(send, refused, front.request_id(dict(scope["headers"])), oip=oip)
                return
            receive = self.front.timed(receive)
            hit = scoring.match(scope["path"])
            if hit is not None:
                service = getattr(self.state, "service", None)
                await scoring.serve(service, hit, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    service: Service | None = None,
    *,
    freeze_after_start: bool = False,
    connections: Callable[[], int] | None = None,
) -> ModelportApp:
    """Build the app; the lifespan starts the service (store, writer, router) and stops it.

    ``freeze_after_start`` (for a serving process of its own) moves everything alive once the
    service has started, libraries and loaded models included, out of the garbage
    collector's reach, so collections only walk what requests allocate.
    ``connections``: how many connections the HTTP server holds open (``modelport serve``
    counts them); with it, a request that is all the process serves is scored and committed
    on the event loop's thread (see ``inline_when_alone``).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or Service(settings)
        if connections is not None and settings.inline_when_alone and settings.grpc_port is None:
            svc.engine.open_connections = connections  # gRPC's connections are not counted
        app.state.service = svc
        await svc.start()
        try:
            # gRPC is stopped (drained) before the service; the port it bound is the app's.
            async with grpc.serving(svc, settings) as app.state.grpc_port:
                if freeze_after_start:
                    gc.collect()
                    gc.freeze()
                yield
        finally:
            await svc.stop()

    app = ModelportApp(
        title="modelport",
        version=__version__,
        description=(
            "Serve, version, log and learn. Every prediction gets an id and is committed to the "
            "ledger before the answer goes out; feedback joins it later. Authenticate with "
            "`Authorization: Bearer <key>` or `X-API-Key: <key>`."
        ),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(metrics_router)
    for router in v1.ROUTERS:
        app.include_router(router)
    app.include_router(v2.router)
    app.include_router(dashboard.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in _DOC_ONLY_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            for route in scoring.ROUTES:
                doc["paths"][route.path] = {"post": _scoring_operation(route)}
            doc["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            doc["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RequestGuard, settings=settings)
    app.front = front.FrontDoor(settings)
    return app


def _scoring_operation(route: scoring.ScoringRoute) -> dict[str, Any]:
    """The OpenAPI operation of a scoring route (they are not framework routes)."""
    version = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    params = [
        {"name": p, "in": "path", "required": True, "schema": t}
        for p, t in (("name", {"type": "string"}), ("version", version))
        if "{" + p + "}" in route.path
    ]
    op: dict[str, Any] = {"tags": list(route.tags), "summary": route.summary, "parameters": params}
    if route.oip:
        return {**op, **v2.INFER_DOC, "responses": {**v2.ERRORS, **v2.INFER_DOC["responses"]}}

    def ref(model: type[Any]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    envelope = {"content": {"application/json": {"schema": ref(shapes.ErrorEnvelope)}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "Predictions, their ids, and probabilities for classifiers",
            "content": {"application/json": {"schema": ref(shapes.PredictResponse)}},
        }
    }
    for code in (400, 401, 403, 404, 409, 413, 422, 500, 503):
        responses[str(code)] = {"description": errors.describe_status(code), **envelope}
    body = {
        "required": True,
        "content": {"application/json": {"schema": ref(shapes.PredictRequest)}},
    }
    return {**op, "requestBody": body, "responses": responses}


class RequestGuard:
    """Pure ASGI middleware: request ids (``X-Request-ID``) and the body size limits.

    Bodies are counted as they arrive, so a chunked upload without Content-Length is held to
    the same limit. Artifact uploads get ``max_artifact_bytes``; everything else
    ``max_body_bytes``.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        header_id = front.request_id(headers)
        scope.setdefault("state", {})["request_id"] = header_id[1].decode("latin-1")
        # Uploads (artifacts, observation files) get the artifact limit; other bodies, JSON
        # observations included, the body one.
        is_upload = (
            scope["method"] == "POST"
            and scope["path"].endswith(("/versions", "/observations"))
            and headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        )
        limit = self.settings.max_artifact_bytes if is_upload else self.settings.max_body_bytes
        try:
            if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
                raise InvalidRequest(
                    "the URL has a NUL character (%00)",
                    details=[{"field": "url", "reason": "NUL character"}],
                )
            front.check_length(headers, limit)
            front.check_content_type(scope["method"], scope["path"], headers)
        except ModelportError as exc:
            await _refuse(send, exc, header_id, oip=scope["path"].startswith("/v2"))
            return

        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header_id]
            await send(message)

        try:
            await self.app(scope, front.limited(receive, limit), send_with_id)
        finally:
            _count_http(scope, status)


def _count_http(scope: Scope, status: int) -> None:
    """Count a request by its route's path template (bounded), not its path."""
    service = getattr(scope["app"].state, "service", None) if "app" in scope else None
    if service is None:
        return
    route = scope.get("route")
    template = getattr(route, "path", None) or "_unmatched"
    method = scope["method"] if scope["method"] in _METHODS else "_other"
    service.metrics.http.child(method, template, str(status)).inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def _refuse(
    send: Send, exc: ModelportError, header_id: tuple[bytes, bytes], *, oip: bool
) -> None:
    """Answer with one of our errors before the request reaches a route."""
    status, data, more = errors.render(exc, oip=oip)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in more.items()),
                header_id,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
