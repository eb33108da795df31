"""/openapi.json covers every route with request and response schemas."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from modelport.api import dashboard, v1, v2
from tests.conftest import RunningServer


def _resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_route_is_documented_with_schemas(server: RunningServer) -> None:
    doc = server.http("").get("/openapi.json").json()
    routes = [
        r
        for r in [*v1.router.routes, *v2.router.routes, *dashboard.router.routes]
        if isinstance(r, APIRoute)
    ]
    assert len(routes) >= 20
    for route in routes:
        for method in route.methods:
            op = doc["paths"][route.path_format][method.lower()]
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert ok, f"{method} {route.path_format} documents no success response"
            if route.path_format.startswith("/v1/") and route.path_format != "/v1/health":
                assert "422" in op["responses"] or "401" in op["responses"]
    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert "inputs" in _resolve(doc, body["$ref"])["properties"]
    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference points at something
    assert (
        "multipart/form-data"
        in doc["paths"]["/v1/models/{name}/versions"]["post"]["requestBody"]["content"]
    )
