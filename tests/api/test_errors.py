"""One JSON error envelope for every /v1 error path, and bad input never reaches the ledger."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import IRIS_COLUMNS, RunningServer, start_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message", "details": [...]}}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert {"field", "reason"} <= set(detail)
    return error


@pytest.fixture
def iris(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> RunningServer:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    return server


def _ledger_size(server: RunningServer) -> int:
    return len(server.client().predictions("iris", limit=1000)["predictions"])


def test_400_malformed_bodies(iris: RunningServer) -> None:
    http = iris.http()
    url = "/v1/models/iris/predict"
    assert_envelope(http.post(url, content=b"{not json"), 400, "invalid_request")
    assert_envelope(http.post(url, content=b""), 400, "invalid_request")
    assert_envelope(http.post(url, content=b"[1, 2]"), 400, "invalid_request")
    assert_envelope(http.post("/v1/feedback", content=b"nope"), 400, "invalid_request")
    assert _ledger_size(iris) == 0


def test_401_missing_unknown_and_revoked_keys(iris: RunningServer) -> None:
    anon = iris.http("")
    err = assert_envelope(anon.get("/v1/models"), 401, "unauthorized")
    assert "API key" in err["message"]
    assert anon.get("/v1/models").headers["www-authenticate"] == "Bearer"
    assert_envelope(iris.http("mp_wrong").get("/v1/models"), 401, "unauthorized")
    key = iris.client().create_key("temp", ["read"])
    assert iris.http(key["key"]).get("/v1/models").status_code == 200
    iris.client().revoke_key(key["id"])
    assert_envelope(iris.http(key["key"]).get("/v1/models"), 401, "unauthorized")


def test_403_wrong_scope(iris: RunningServer) -> None:
    reader = iris.http(iris.key("reader", "read"))
    predictor = iris.http(iris.key("app", "predict"))
    assert_envelope(
        reader.post("/v1/models/iris/predict", json={"inputs": [ROW]}), 403, "forbidden"
    )
    assert_envelope(
        reader.put("/v1/models/iris/aliases/production", json={"version": 1}), 403, "forbidden"
    )
    assert_envelope(reader.post("/v1/feedback", json={"feedback": []}), 403, "forbidden")
    assert_envelope(predictor.get("/v1/models"), 403, "forbidden")
    assert_envelope(
        predictor.post("/v1/keys", json={"name": "x", "scopes": ["read"]}), 403, "forbidden"
    )
    assert_envelope(predictor.get("/v1/settings"), 403, "forbidden")


def test_404_unknown_things(iris: RunningServer) -> None:
    http = iris.http()
    assert_envelope(
        http.post("/v1/models/nope/predict", json={"inputs": [ROW]}), 404, "model_not_found"
    )
    assert_envelope(
        http.post("/v1/models/iris/predict", json={"inputs": [ROW], "version": 9}),
        404,
        "version_not_found",
    )
    assert_envelope(http.get("/v1/models/iris/versions/9"), 404, "version_not_found")
    assert_envelope(http.get("/v1/models/nope"), 404, "model_not_found")
    assert_envelope(http.get("/v1/predictions/0000"), 404, "prediction_not_found")
    assert_envelope(http.get("/v1/no/such/route"), 404, "not_found")
    assert_envelope(http.delete("/v1/keys/999"), 404, "key_not_found")
    assert_envelope(
        http.put("/v1/models/iris/aliases/production", json={"version": 7}),
        404,
        "version_not_found",
    )
    assert_envelope(http.post("/v1/models/iris/aliases/staging/rollback"), 404, "alias_not_found")
    assert_envelope(http.delete("/v1/models"), 405, "method_not_allowed")


def test_409_conflicts(iris: RunningServer) -> None:
    http = iris.http()
    err = assert_envelope(
        http.post("/v1/models/iris/predict", json={"inputs": [ROW], "alias": "candidate"}),
        409,
        "no_version_behind_alias",
    )
    assert "modelport promote iris" in err["message"]
    assert_envelope(http.post("/v1/models", json={"name": "iris"}), 409, "conflict")
    assert_envelope(
        http.post("/v1/models/iris/aliases/production/rollback"), 409, "nothing_to_roll_back"
    )
    http.post("/v1/models", json={"name": "empty", "task": "regression"}).raise_for_status()
    err = assert_envelope(
        http.post("/v1/models/empty/predict", json={"inputs": [{}]}), 409, "no_version_behind_alias"
    )
    assert "PUT /v1/models/empty/aliases/production" in err["message"]


def test_413_bodies_over_the_limit(settings: Any) -> None:
    small = start_server(settings.model_copy(update={"max_body_bytes": 2048}))
    try:
        http = small.http()
        big = json.dumps({"inputs": [ROW] * 100}).encode()
        assert_envelope(http.post("/v1/models/x/predict", content=big), 413, "payload_too_large")

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1024

        assert_envelope(
            http.post("/v1/models/x/predict", content=chunks()), 413, "payload_too_large"
        )
    finally:
        small.stop()


def test_422_schema_violations_name_every_field(iris: RunningServer) -> None:
    http = iris.http()
    bad = [
        ROW,
        {**ROW, "sepal_length": "long"},
        {k: v for k, v in ROW.items() if k != "petal_width"},
        {**ROW, "petal_length": None, "colour": "blue"},
    ]
    err = assert_envelope(
        http.post("/v1/models/iris/predict", json={"inputs": bad}), 422, "invalid_input"
    )
    assert {(d["row"], d["field"], d["reason"]) for d in err["details"]} == {
        (1, "sepal_length", "expected a number, got string"),
        (2, "petal_width", "missing"),
        (3, "petal_length", "null is not allowed"),
        (3, "colour", "unexpected field"),
    }
    err = assert_envelope(
        http.post("/v1/models/iris/predict", json={"columns": IRIS_COLUMNS, "data": [[1, 2, 3]]}),
        422,
        "invalid_input",
    )
    assert err["details"][0]["row"] == 0
    assert_envelope(
        http.post("/v1/models/iris/predict", json={"inputs": [ROW], "version": "one"}),
        422,
        "invalid_input",
    )
    assert_envelope(
        http.post("/v1/models/iris/predict", json={"inputs": [ROW] * 10_001}), 422, "invalid_input"
    )
    assert _ledger_size(iris) == 0


def test_422_ranges_and_categories(server: RunningServer, iris_pipeline: Any) -> None:
    schema = {
        "fields": [{"name": c, "type": "number", "minimum": 0, "maximum": 10} for c in IRIS_COLUMNS]
    }
    server.client().push("ranged", iris_pipeline, schema=schema, alias="production")
    http = server.http()
    err = assert_envelope(
        http.post("/v1/models/ranged/predict", json={"inputs": [{**ROW, "sepal_length": 11}]}),
        422,
        "invalid_input",
    )
    assert err["details"] == [
        {"row": 0, "field": "sepal_length", "reason": "out of range: 11.0 is above the maximum 10"}
    ]


def test_422_request_bodies_of_management_routes(iris: RunningServer) -> None:
    http = iris.http()
    err = assert_envelope(
        http.put("/v1/models/iris/aliases/production", json={"version": 0}), 422, "invalid_input"
    )
    assert err["details"][0]["field"] == "version"
    err = assert_envelope(
        http.post("/v1/keys", json={"name": "x", "scopes": ["root"]}), 422, "invalid_input"
    )
    assert err["details"][0]["field"].startswith("scopes")
    err = assert_envelope(
        http.post("/v1/models", json={"name": "Bad Name"}), 400, "invalid_request"
    )
    assert err["details"][0]["field"] == "name"
    files = {"artifact": ("m.bin", b"garbage")}
    err = assert_envelope(
        http.post("/v1/models/x/versions", files=files, data={"metadata": '{"colour": 1}'}),
        422,
        "invalid_input",
    )
    assert err["details"][0]["field"] == "metadata.colour"
    err = assert_envelope(http.post("/v1/models/x/versions", files=files), 422, "artifact_rejected")
    assert err["details"][0]["field"] == "artifact"
    err = assert_envelope(
        http.get("/v1/models/iris/predictions", params={"since": "yesterday"}),
        400,
        "invalid_request",
    )
    assert err["details"][0]["field"] == "since"


def test_model_failure_is_its_own_error(server: RunningServer) -> None:
    from tests.api.models import FailsOnNegative

    server.client().push(
        "fragile",
        FailsOnNegative(),
        schema={"fields": [{"name": "x", "type": "number"}]},
        alias="production",
    )
    http = server.http()
    assert http.post("/v1/models/fragile/predict", json={"inputs": [{"x": 1}]}).status_code == 200
    assert_envelope(
        http.post("/v1/models/fragile/predict", json={"inputs": [{"x": -1}]}), 500, "model_failed"
    )
    assert http.get("/v1/health").status_code == 200
