"""The dashboard at ``/``: HTML pages, their static assets, and the read endpoints behind them.

Every asset is served from the package (``api/static``): no CDN, no network at run time. Reading
needs a ``read`` key: ``POST /login`` checks it and keeps it in an HttpOnly, SameSite=Strict
cookie, which the API accepts for reads, and for changes only beside the header the
dashboard's scripts send (see :func:`modelport.api.deps.api_key`). The page's scripts call the
same ``/v1`` API as every other client; what changes things is shown to admin keys only, and
the API refuses it to others anyway.
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from .. import __version__
from ..errors import ModelportError, NotFound
from ..registry.keys import Principal
from ..timefmt import parse_window
from .deps import ERRORS, SESSION_COOKIE, Svc, Who, json_response, service

router = APIRouter()

STATIC = Path(__file__).with_name("static")
#: Sent with every page: scripts, styles, images and requests from this server only.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/static/uPlot.min.css">
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body>
<header class="top"><a class="brand" href="/">modelport</a>
<span class="muted">{version}</span><span class="spacer"></span>{who}</header>
<main id="app">{body}</main>
{scripts}
</body></html>
"""

_LOGIN = """<section class="login">
<h1>Sign in</h1>
<p>Enter an API key with the <code>read</code> scope. An <code>admin</code> key may also promote
and roll back aliases.</p>
{error}
<form method="post" action="/login" id="login-form">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</section>"""


def _page(
    title: str, body: str, *, who: str = "", scripts: str = "", status: int = 200
) -> Response:
    text = _SHELL.format(
        title=html.escape(title), version=__version__, who=who, body=body, scripts=scripts
    )
    return HTMLResponse(
        text,
        status_code=status,
        headers={
            "Content-Security-Policy": _CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _login_page(error: str = "", status: int = 200) -> Response:
    shown = (
        f'<p class="error" id="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    )
    return _page("modelport: sign in", _LOGIN.format(error=shown), status=status)


async def _session(request: Request) -> Principal | None:
    """The principal of the session cookie (any principal with no_auth), or None."""
    svc = service(request)
    try:
        principal = await svc.authenticate(request.cookies.get(SESSION_COOKIE))
    except ModelportError:
        return None
    return principal if principal.allows("read") else None


@router.get(
    "/",
    response_class=HTMLResponse,
    tags=["dashboard"],
    summary="Dashboard (the sign-in form without a session)",
)
async def index(request: Request) -> Response:
    principal = await _session(request)
    if principal is None:
        return _login_page()
    logout = "" if service(request).settings.no_auth else '<a href="/logout">Sign out</a>'
    who = f'<span class="who">{html.escape(principal.consumer)}</span>{logout}'
    body = '<p class="muted" id="loading">Loading…</p>'
    scripts = (
        '<script src="/static/uPlot.iife.min.js"></script>\n'
        '<script src="/static/dashboard.js"></script>'
    )
    return _page("modelport", body, who=who, scripts=scripts)


@router.post("/login", include_in_schema=False)
async def login(request: Request, key: Annotated[str, Form()] = "") -> Response:
    """Check the key (it needs the read scope) and keep it in the session cookie."""
    svc = service(request)
    try:
        principal = await svc.authenticate(key.strip() or None)
    except ModelportError:
        return _login_page("That key is unknown or revoked.", status=401)
    if not principal.allows("read"):
        return _login_page(
            f"That key (consumer {principal.consumer!r}) lacks the read scope.", status=403
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        key.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.get("/login", include_in_schema=False)
async def login_form(request: Request) -> Response:
    if await _session(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page()


@router.get("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    """A file of the dashboard's assets (a flat folder: no paths)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no dashboard asset named {name!r}")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        media = "text/javascript"
    return FileResponse(
        path,
        media_type=media,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# -- read endpoints the dashboard draws from -----------------------------------------------------


class Whoami(BaseModel):
    consumer: str
    scopes: list[str]
    admin: bool = Field(description="Whether the key may change things (promote, roll back)")
    no_auth: bool


class LatencyFigures(BaseModel):
    mean: float
    p50: float | None
    p95: float | None
    max: float
    sampled: int = Field(description="Requests of this bucket in the percentile sample")


class TimelinePoint(BaseModel):
    start: str
    end: str
    requests: int
    rows: int
    errors: int
    latency_ms: LatencyFigures | None


class TimelineVersion(BaseModel):
    version: int
    requests: int
    rows: int
    errors: int
    series: list[TimelinePoint]


class Timeline(BaseModel):
    model: str
    window: dict[str, Any]
    bucket_seconds: float
    buckets: int
    latency_percentiles: dict[str, Any] = Field(
        description="How p50 and p95 were estimated: over the newest requests of the window"
    )
    versions: list[TimelineVersion]


class FitPoint(BaseModel):
    x: float
    y: float
    time: str | None = None
    source: str | None = None


class FitView(BaseModel):
    model: str
    version: int
    alias: str | None
    field: str
    points: list[FitPoint]
    line: list[FitPoint]


class RecentPredictions(BaseModel):
    model: str
    predictions: list[dict[str, Any]]


@router.get(
    "/v1/whoami",
    response_model=Whoami,
    responses=ERRORS,
    tags=["dashboard"],
    summary="The caller: consumer and scopes (read)",
)
async def whoami(svc: Svc, who: Who) -> Response:
    who.require("read")
    return json_response(
        {
            "consumer": who.consumer,
            "scopes": sorted(who.scopes),
            "admin": who.allows("admin"),
            "no_auth": svc.settings.no_auth,
        }
    )


@router.get(
    "/v1/models/{name}/timeline",
    response_model=Timeline,
    responses=ERRORS,
    tags=["dashboard"],
    summary="Requests, rows, errors and latency per version and time bucket",
)
async def timeline(
    name: str,
    svc: Svc,
    who: Who,
    window: Annotated[str, Query(description="90 (seconds), 15m, 2h, 7d")] = "1h",
    buckets: Annotated[int, Query(ge=1, le=1000)] = 60,
    segment: Annotated[str | None, Query(description="Only this segment's requests")] = None,
) -> Response:
    seconds = parse_window(window, "window")
    return json_response(
        await svc.timeline(who, name, seconds=seconds, buckets=buckets, segment=segment)
    )


@router.get(
    "/v1/models/{name}/recent",
    response_model=RecentPredictions,
    responses=ERRORS,
    tags=["dashboard"],
    summary="The newest predictions, newest first, with their current feedback",
)
async def recent(
    name: str, svc: Svc, who: Who, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> Response:
    return json_response(await svc.recent_predictions(who, name, limit))


@router.get(
    "/v1/models/{name}/fit",
    response_model=FitView,
    responses=ERRORS,
    tags=["dashboard"],
    summary="One-input regression: the last labelled points and the production line over them",
)
async def fit(
    name: str, svc: Svc, who: Who, points: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response:
    return json_response(await svc.fit_view(who, name, points))
