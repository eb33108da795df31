"""The ASGI application: ``create_app(settings)`` wires the service to its transports."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import PayloadTooLarge
from ..ids import request_id as new_request_id
from ..service import Service
from ..settings import Settings
from . import dashboard, errors, schemas, scoring, v1, v2

_DOC_ONLY_MODELS = (
    schemas.PredictRequest,
    schemas.PredictResponse,
    schemas.FeedbackRequest,
    schemas.PushMetadata,
    schemas.ServingSettings,
    schemas.TrafficPolicy,
    schemas.ConsumerRequest,
    schemas.ObservationsRequest,
    schemas.JobRequest,
    schemas.RunProgress,
    schemas.RunFinish,
)


class ModelportApp(FastAPI):
    """The FastAPI app, with the scoring routes answered before the framework's machinery."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = scoring.match(scope["path"])
            if hit is not None:
                service = getattr(self.state, "service", None)
                await scoring.serve(service, hit, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, service: Service | None = None, *, freeze_after_start: bool = False
) -> ModelportApp:
    """Build the app; the lifespan starts the service (store, writer, router) and stops it.

    ``freeze_after_start`` (for a serving process of its own) moves everything alive once the
    service has started, libraries and loaded models included, out of the garbage
    collector's reach, so collections only walk what requests allocate.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or Service(settings)
        app.state.service = svc
        await svc.start()
        if freeze_after_start:
            gc.collect()
            gc.freeze()
        try:
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
    app.include_router(v1.router)
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
    return app


def _scoring_operation(route: scoring.ScoringRoute) -> dict[str, Any]:
    """The OpenAPI operation of a scoring route (they are not framework routes)."""
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": t}}
        for p, t in (("name", "string"), ("version", "integer"))
        if "{" + p + "}" in route.path
    ]
    op: dict[str, Any] = {"tags": list(route.tags), "summary": route.summary, "parameters": params}
    if route.oip:
        return {**op, **v2.INFER_DOC, "responses": {**v2.ERRORS, **v2.INFER_DOC["responses"]}}

    def ref(model: type[Any]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    envelope = {"content": {"application/json": {"schema": ref(schemas.ErrorEnvelope)}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "Predictions, their ids, and probabilities for classifiers",
            "content": {"application/json": {"schema": ref(schemas.PredictResponse)}},
        }
    }
    for code in (400, 401, 403, 404, 409, 413, 422, 500, 503):
        responses[str(code)] = {"description": errors.describe_status(code), **envelope}
    body = {
        "required": True,
        "content": {"application/json": {"schema": ref(schemas.PredictRequest)}},
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
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:200]
                break
        if not request_id:
            request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        # Artifacts and observation files get the artifact limit; everything else the body one.
        is_push = scope["method"] == "POST" and scope["path"].endswith(
            ("/versions", "/observations")
        )
        limit = self.settings.max_artifact_bytes if is_push else self.settings.max_body_bytes
        header_id = (b"x-request-id", request_id.encode("latin-1"))

        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit, header_id, oip=scope["path"].startswith("/v2"))
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header_id]
            await send(message)

        await self.app(scope, limited_receive, send_with_id)


async def _too_large(send: Send, limit: int, header_id: tuple[bytes, bytes], *, oip: bool) -> None:
    message = f"the request body exceeds the limit of {limit} bytes"
    body = {"error": message} if oip else errors.error_body("payload_too_large", message)
    import orjson

    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                header_id,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
