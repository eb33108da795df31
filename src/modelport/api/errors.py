"""Error bodies, built here and only here: the ``/v1`` envelope and the ``/v2`` protocol shape.

``/v2`` (Open Inference Protocol) errors are ``{"error": "..."}`` with 400 for bad input and
for a model with no version behind its alias (the message says which command promotes one: it
is the caller's set-up, not an outage), 404 for an unknown model or version, 503 when the
server or the store cannot serve.


Every ``/v1`` error body is ``{"error": {"code": str, "message": str, "details": [...]}}``;
``details`` lists field-level problems (``field``, ``reason``, and ``row`` where rows apply).
"""

from __future__ import annotations

import http
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import ModelportError, RequestTimeout

log = logging.getLogger("modelport.api")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "host_not_allowed",
    422: "invalid_input",
    500: "internal_error",
    503: "unavailable",
}


def describe_status(status: int) -> str:
    """The standard reason phrase of an HTTP status, for documentation."""
    return http.HTTPStatus(status).phrase


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The envelope every /v1 error uses."""
    return {"error": {"code": code, "message": message, "details": details or []}}


def error_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The Open Inference Protocol's error shape for /v2: ``{"error": "..."}``."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def oip_status(exc: ModelportError) -> int:
    """The HTTP status of an error on the Open Inference Protocol routes."""
    if exc.status_code in (409, 422):
        return 400  # bad input: the protocol's status for it
    return exc.status_code


def _is_oip(request: Request) -> bool:
    return request.url.path.startswith("/v2")


def render(exc: ModelportError, *, oip: bool) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and extra headers of one of our errors: the /v1 envelope or the /v2 shape."""
    # A body that stopped arriving leaves the connection in the middle of it: close it.
    headers = {"Connection": "close"} if isinstance(exc, RequestTimeout) else {}
    if oip:
        return oip_status(exc), orjson.dumps({"error": exc.message}), headers
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = orjson.dumps(error_body(exc.code, exc.message, exc.details))
    return exc.status_code, body, headers


def render_unexpected(exc: BaseException, *, oip: bool) -> tuple[int, bytes]:
    """A 500 that names the exception type only (details stay in the server log)."""
    message = f"internal error: {type(exc).__name__}"
    body = {"error": message} if oip else error_body("internal_error", message)
    return 500, orjson.dumps(body)


def _modelport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelportError)
    status, body, headers = render(exc, oip=_is_oip(request))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if _is_oip(request):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("path", "query"))
        return _oip_error(400, f"{where}: {first.get('msg', 'invalid request')}")
    body_problem = _body_problem(exc.errors())
    if body_problem:
        # As on the routes that read their JSON themselves: a body that is not a JSON object
        # is a malformed request (400), not a field-level problem.
        return error_response(
            400,
            error_body(
                "invalid_request", body_problem, [{"field": "body", "reason": body_problem}]
            ),
        )
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.append({"field": ".".join(loc) or None, "reason": err.get("msg", "invalid")})
    first = details[0] if details else {"field": None, "reason": "invalid request"}
    message = f"{first['field']}: {first['reason']}" if first["field"] else str(first["reason"])
    return error_response(422, error_body("invalid_input", message, details))


def _body_problem(errors: Sequence[Any]) -> str:
    """Why the body as a whole is unusable (not JSON, empty, not an object), else ''."""
    for err in errors:
        if err.get("type") == "json_invalid":
            return f"the body is not valid JSON: {err.get('ctx', {}).get('error', 'decode error')}"
        if tuple(err.get("loc", ())) == ("body",):
            if err.get("type") == "missing":
                return "the request body is empty; send a JSON object"
            return "the body must be a JSON object (Content-Type: application/json)"
    return ""


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ModelportError):
        # FastAPI turns any error raised while it reads a body into a 400; ours (the body
        # size limit, counted as the body arrives) keep their own status.
        return _modelport_error(request, exc.__cause__)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message: str = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    if _is_oip(request):
        return _oip_error(exc.status_code, message, getattr(exc, "headers", None))
    return error_response(exc.status_code, error_body(code, message), getattr(exc, "headers", None))


def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    status, body = render_unexpected(exc, oip=_is_oip(request))
    return Response(body, status_code=status, media_type="application/json")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ModelportError, _modelport_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
