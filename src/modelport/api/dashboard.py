"""The dashboard at ``/``: a placeholder page until the dashboard lands."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from .. import __version__

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelport</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body><h1>modelport {version}</h1>
<p>The server is running. The dashboard (models, versions, traffic, live metrics) is coming in a
later release; until then use the API:</p>
<ul><li><a href="/docs">Interactive API documentation</a></li>
<li><a href="/openapi.json">OpenAPI document</a></li>
<li><code>modelport models</code> and <code>modelport versions NAME</code> on the command line</li></ul>
</body></html>
"""


@router.get(
    "/",
    response_class=HTMLResponse,
    include_in_schema=True,
    tags=["dashboard"],
    summary="Dashboard",
)
async def index() -> HTMLResponse:
    return HTMLResponse(_PAGE.format(version=__version__))
