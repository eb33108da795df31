"""/openapi.json documents every route of the app, each response with a schema."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute

from modelport.api import scoring
from modelport.api.app import create_app
from modelport.settings import Settings
from tests.conftest import RunningServer


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, including those of included routers (kept whole by newer FastAPI)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def _resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        assert part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return dict(node)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_route_is_documented_with_schemas(server: RunningServer, settings: Settings) -> None:
    doc = server.http("").get("/openapi.json").json()
    routes = [r for r in _api_routes(create_app(settings).routes) if r.include_in_schema]
    operations = {(m, r.path_format) for r in routes for m in r.methods or ()}
    # the scoring routes are answered ahead of the framework: documented from their own table
    operations |= {("POST", r.path) for r in scoring.ROUTES}
    assert len(operations) >= 30
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert operations == documented

    for method, path in sorted(operations):
        op = doc["paths"][path][method.lower()]
        assert op.get("summary"), f"{method} {path} has no summary"
        assert any(code.startswith("2") for code in op["responses"]), (method, path)
        for code, response in op["responses"].items():
            content = response.get("content")
            assert content, f"{method} {path} {code} documents no content"
            for media, body in content.items():
                assert body.get("schema"), f"{method} {path} {code} {media} has no schema"
        if path.startswith("/v1/") and path != "/v1/health":
            error = op["responses"]["401"]["content"]["application/json"]["schema"]
            assert _resolve(doc, error["$ref"])["required"] == ["error"]

    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]
    body = _resolve(doc, predict["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert {"inputs", "columns", "data", "version", "alias"} == set(body["properties"])
    assert body["additionalProperties"] is False
    push = doc["paths"]["/v1/models/{name}/versions"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in push
    refs = set(_refs(doc))
    assert "#/components/schemas/ErrorEnvelope" in refs
    for ref in refs:
        _resolve(doc, ref)  # every reference points at something
    assert {"bearer", "apiKey"} <= set(doc["components"]["securitySchemes"])
