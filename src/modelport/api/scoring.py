"""The scoring routes, as plain ASGI: native predict and Open Inference Protocol inference.

    POST /v1/models/{name}/predict
    POST /v2/models/{name}/infer
    POST /v2/models/{name}/versions/{version}/infer

They carry nearly all of a server's traffic, so the app hands them over before the web
framework's middleware, routing and dependency injection run (measured: those cost more per
request than scoring a batched row). What the framework would have done, they do here, once:
request ids (``X-Request-ID``, echoed or made), the key (checked before a byte of the body is
read, so an anonymous body costs nothing), the body limit counted as bytes arrive, and the error
shapes of :mod:`modelport.api.errors`. Business rules stay in the service (the
``Idempotency-Key`` of a native predict is only handed over: see ``Engine.predict``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import orjson
from starlette.types import Receive, Scope, Send

from ..errors import ModelportError
from ..monitoring.metrics import UNKNOWN
from ..serving.payloads import RawBody
from . import errors, front, oip, payload

if TYPE_CHECKING:
    from ..registry.keys import Principal
    from ..service.core import Service

log = logging.getLogger("modelport.api")

_JSON = b"application/json"


@dataclass
class Call:
    """One scoring request: what the route needs from the HTTP layer."""

    service: Service
    name: str
    version: int | None
    request_id: str
    who: Principal
    body: bytes
    headers: dict[bytes, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoringRoute:
    """A scoring route: its path, how it answers, and its OpenAPI operation."""

    path: str
    oip: bool
    handler: Callable[[Call], Awaitable[tuple[bytes, list[tuple[bytes, bytes]]]]]
    summary: str
    tags: tuple[str, ...]


async def predict(call: Call) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """``POST /v1/models/{name}/predict``: records or columns/data in, predictions and ids out."""
    svc = call.service
    unit = call.headers.get(b"x-unit-id")
    key = call.headers.get(b"idempotency-key")
    result = await svc.engine.predict(
        call.who,
        call.name,
        RawBody(call.body, partial(payload.loads, max_depth=svc.settings.max_json_depth)),
        call.request_id,
        unit.decode("latin-1") if unit else None,
        None if key is None else key.decode("latin-1"),
    )
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), [(b"content-type", _JSON)]


async def infer(call: Call) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: tensors in and out (JSON or binary)."""
    svc = call.service
    header_length = call.headers.get(b"inference-header-content-length")
    doc, binary = oip.split_body(
        call.body,
        None if header_length is None else header_length.decode("latin-1"),
        svc.settings.max_json_depth,
    )
    max_rows = svc.settings.max_rows_per_request
    request = oip.parse_request(doc, binary, max_elements=max_rows * 1024)
    unit = call.headers.get(b"x-unit-id")
    scored = await svc.engine.score(
        call.who,
        call.name,
        oip.InferPayload(request, max_rows, unit.decode("latin-1") if unit else None),
        version=call.version,
        alias=None,
        request_id=request.id or call.request_id,
    )
    content, json_length = oip.response(
        model=call.name,
        version=scored.version,
        request=request,
        predictions=scored.predictions,
        probabilities=scored.probabilities,
        classes=scored.served.loaded.classes,
        prediction_ids=scored.ids,
    )
    if json_length is None:
        return content, [(b"content-type", _JSON)]
    return content, [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(json_length).encode()),
    ]


ROUTES = (
    ScoringRoute(
        "/v1/models/{name}/predict",
        False,
        predict,
        "Score rows with the version behind an alias (default production) or a version",
        ("predictions",),
    ),
    ScoringRoute(
        "/v2/models/{name}/infer",
        True,
        infer,
        "Inference (production alias)",
        ("open inference protocol v2",),
    ),
    ScoringRoute(
        "/v2/models/{name}/versions/{version}/infer",
        True,
        infer,
        "Inference on a version",
        ("open inference protocol v2",),
    ),
)
_PREDICT, _INFER, _INFER_VERSION = ROUTES


def match(path: str) -> tuple[ScoringRoute, str, str | None] | None:
    """The scoring route a path names, with its model name and version text; None otherwise."""
    parts = path.split("/")
    if len(parts) == 5 and parts[2] == "models" and parts[3]:
        if parts[1] == "v1" and parts[4] == "predict":
            return _PREDICT, parts[3], None
        if parts[1] == "v2" and parts[4] == "infer":
            return _INFER, parts[3], None
    elif (
        len(parts) == 7
        and parts[1] == "v2"
        and parts[2] == "models"
        and parts[3]
        and parts[4] == "versions"
        and parts[6] == "infer"
    ):
        return _INFER_VERSION, parts[3], parts[5]
    return None


async def serve(
    service: Service | None,
    hit: tuple[ScoringRoute, str, str | None],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Answer one scoring request; every failure becomes the route's error shape."""
    route, name, version_text = hit
    headers = dict(scope["headers"])
    header_id = front.request_id(headers)
    request_id = header_id[1].decode("latin-1")
    extra = [header_id]
    try:
        if scope["method"] != "POST":
            allow = [(b"content-type", _JSON), (b"allow", b"POST"), *extra]
            await _send(send, 405, _method_not_allowed(scope, route), allow)
            return
        if service is None:
            raise _not_ready()
        service.metrics.inflight.inc()
        front.check_content_type(scope["method"], scope["path"], headers, tensors=route.oip)
        version = oip.version_number(version_text)
        who = await service.authenticate(front.api_key(headers))
        body = await front.read_body(receive, headers, service.settings.max_body_bytes)
        call = Call(service, name, version, request_id, who, body, headers)
        body, content_headers = await route.handler(call)
        await _send(send, 200, body, [*content_headers, *extra])
    except ModelportError as exc:
        status, body, more = errors.render(exc, oip=route.oip)
        if service is not None:
            _count_refused(service, name, exc.version, status)
        more_headers = [(k.lower().encode(), v.encode()) for k, v in more.items()]
        await _send(send, status, body, [(b"content-type", _JSON), *more_headers, *extra])
    except front.Disconnected:
        return  # nobody to answer
    except Exception as exc:
        log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
        status, body = errors.render_unexpected(exc, oip=route.oip)
        if service is not None:
            _count_refused(service, name, None, status)
        await _send(send, status, body, [(b"content-type", _JSON), *extra])
    finally:
        if service is not None and scope["method"] == "POST":
            service.metrics.inflight.dec()


def _count_refused(service: Service, name: str, version: int | None, status: int) -> None:
    """Count an error answer; a name the registry does not know is not a label value."""
    model = name if name in service.router.models else UNKNOWN
    service.metrics.refused(model, version, "", status)


def _not_ready() -> ModelportError:
    from ..errors import StoreUnavailable

    return StoreUnavailable("the server is starting or stopping")


def _method_not_allowed(scope: Scope, route: ScoringRoute) -> bytes:
    message = f"{scope['method']} is not allowed on {scope['path']}; use POST"
    if route.oip:
        return orjson.dumps({"error": message})
    return orjson.dumps(errors.error_body("method_not_allowed", message))


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
