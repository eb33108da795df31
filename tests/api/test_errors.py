"""One JSON error envelope for every /v1 error path, and bad input never reaches the ledger.

Every error body under /v1 is ``{"error": {"code": str, "message": str, "details": [...]}}``;
:func:`assert_envelope` pins that shape and every test here goes through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from modelport import Model
from modelport.ledger import count_predictions
from modelport.settings import Settings
from modelport.store import Store
from modelport.store.tables import feedback
from tests.conftest import IRIS_COLUMNS, RunningServer, start_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
PREDICT = "/v1/models/iris/predict"


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message", "details": [...]}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip()
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert isinstance(detail, dict) and {"field", "reason"} <= set(detail), detail
        assert set(detail) <= {"field", "reason", "row"}, detail
        assert isinstance(detail["reason"], str) and detail["reason"]
        assert detail["field"] is None or isinstance(detail["field"], str)
        if "row" in detail:
            assert isinstance(detail["row"], int) and detail["row"] >= 0
    return dict(error)


def ledger_size(settings: Settings) -> tuple[int, int]:
    """Rows in the ledger (predictions, feedback), read straight from the store."""
    store = Store(settings.store_url)
    try:
        with store.read() as conn:
            fb = int(conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one())
            return count_predictions(conn), fb
    finally:
        store.close()


class Sizer(Model):
    """Echoes the ``size`` field: a model whose schema has ranges and categories."""

    task = "regression"

    def predict(self, X: pd.DataFrame) -> list[float]:
        return [float(v) for v in X["size"]]


SIZER_SCHEMA = {
    "fields": [
        {"name": "colour", "type": "category", "categories": ["red", "green", "blue"]},
        {"name": "size", "type": "number", "minimum": 0, "maximum": 10},
        {"name": "count", "type": "integer", "minimum": 1},
        {"name": "fragile", "type": "boolean", "required": False, "default": False},
    ]
}


@pytest.fixture
def iris(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> RunningServer:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    return server


def test_400_bodies_that_are_not_json_objects(iris: RunningServer) -> None:
    http = iris.http()
    json_routes = [
        ("POST", PREDICT),
        ("POST", "/v1/feedback"),
        ("PUT", "/v1/models/iris/aliases/production"),
        ("POST", "/v1/models"),
        ("POST", "/v1/keys"),
    ]
    headers = {"content-type": "application/json"}
    for method, url in json_routes:
        err = assert_envelope(
            http.request(method, url, content=b"{not json", headers=headers), 400, "invalid_request"
        )
        assert "not valid JSON" in err["message"], (method, url, err)
        err = assert_envelope(
            http.request(method, url, content=b"", headers=headers), 400, "invalid_request"
        )
        assert "empty" in err["message"], (method, url, err)
        err = assert_envelope(
            http.request(method, url, content=b"[1, 2]", headers=headers), 400, "invalid_request"
        )
        assert "JSON object" in err["message"], (method, url, err)
    err = assert_envelope(
        http.get("/v1/models/iris/predictions", params={"since": "yesterday"}),
        400,
        "invalid_request",
    )
    assert err["details"] == [{"field": "since", "reason": "not a time"}]
    err = assert_envelope(
        http.post("/v1/models", json={"name": "Bad Name"}), 400, "invalid_request"
    )
    assert err["details"][0]["field"] == "name"
    err = assert_envelope(
        http.put("/v1/models/iris/aliases/9lives", json={"version": 1}), 400, "invalid_request"
    )
    assert err["details"][0]["field"] == "alias"
    assert ledger_size(iris.settings) == (0, 0)


def test_401_missing_unknown_and_revoked_keys(iris: RunningServer) -> None:
    for client in (iris.http(""), iris.http("mp_not-a-key")):
        for response in (client.get("/v1/models"), client.post(PREDICT, json={"inputs": [ROW]})):
            err = assert_envelope(response, 401, "unauthorized")
            assert "API key" in err["message"]
            assert response.headers["www-authenticate"] == "Bearer"
    basic = iris.http("").get("/v1/models", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert_envelope(basic, 401, "unauthorized")

    key = iris.client().create_key("temp", ["read"])
    reader = iris.http(key["key"])
    assert reader.get("/v1/models").status_code == 200  # now cached by the server
    iris.client().revoke_key(key["id"])
    err = assert_envelope(reader.get("/v1/models"), 401, "unauthorized")
    assert "revoked" in err["message"]
    assert ledger_size(iris.settings) == (0, 0)


def test_front_door_refusals(settings: Settings) -> None:
    """403 cross_site_request, 408 request_timeout, 415 without a type, 421 host_not_allowed:
    answered before any route, in the same envelope (tests/api/test_front.py: the attacks)."""
    import socket

    running = start_server(settings.model_copy(update={"body_timeout_seconds": 0.5}))
    try:
        http = running.http()
        for path in ("/v1/models", PREDICT):
            page = http.post(path, json={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
            assert_envelope(page, 403, "cross_site_request")
            untyped = http.post(path, content=b'{"name": "x"}')
            assert_envelope(untyped, 415, "unsupported_media_type")
            rebound = http.post(path, json={"name": "x"}, headers={"Host": "evil.example"})
            assert_envelope(rebound, 421, "host_not_allowed")
            with socket.create_connection(("127.0.0.1", running.settings.port)) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {running.admin_key}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
                )
                sock.settimeout(30)
                answer = b""
                while chunk := sock.recv(65536):  # the server closes the connection
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            timed_out = httpx.Response(
                int(head.split()[1]),
                headers=[tuple(h.split(b": ", 1)) for h in head.split(b"\r\n")[1:]],
                content=body,
            )
            assert timed_out.headers["connection"] == "close"
            assert_envelope(timed_out, 408, "request_timeout")
    finally:
        running.stop()
    assert ledger_size(settings) == (0, 0)


def test_403_wrong_scope_for_each_route_family(iris: RunningServer) -> None:
    reader = iris.http(iris.key("reader", "read"))
    predictor = iris.http(iris.key("app", "predict"))
    pusher = iris.http(iris.key("ci", "push"))
    artifact = {"artifact": ("m.skops", b"PK\x03\x04")}
    cases: list[tuple[httpx.Client, str, str, dict[str, Any], str]] = [
        (reader, "POST", PREDICT, {"json": {"inputs": [ROW]}}, "predict"),
        (reader, "POST", "/v1/feedback", {"json": {"feedback": []}}, "feedback"),
        (predictor, "GET", "/v1/models", {}, "read"),
        (predictor, "GET", "/v1/models/iris/versions/1", {}, "read"),
        (predictor, "GET", "/v1/models/iris/aliases/history", {}, "read"),
        (reader, "POST", "/v1/models/iris/versions", {"files": artifact}, "push"),
        (pusher, "PUT", "/v1/models/iris/aliases/production", {"json": {"version": 1}}, "admin"),
        (pusher, "POST", "/v1/models/iris/aliases/production/rollback", {}, "admin"),
        (pusher, "POST", "/v1/models", {"json": {"name": "other"}}, "admin"),
        (pusher, "POST", "/v1/keys", {"json": {"name": "x", "scopes": ["read"]}}, "admin"),
        (pusher, "GET", "/v1/keys", {}, "admin"),
        (pusher, "DELETE", "/v1/keys/1", {}, "admin"),
        (pusher, "GET", "/v1/settings", {}, "admin"),
    ]
    for client, method, url, kwargs, scope in cases:
        err = assert_envelope(client.request(method, url, **kwargs), 403, "forbidden")
        assert f"lacks the {scope!r} scope" in err["message"], (method, url, err)
    # Predictions are not refused but scoped: a key without read sees its consumer's own only.
    assert predictor.get("/v1/models/iris/predictions").json()["predictions"] == []
    assert_envelope(predictor.get("/v1/predictions/some-id"), 404, "prediction_not_found")
    assert ledger_size(iris.settings) == (0, 0)
    assert iris.client().model("iris")["aliases"] == {"production": 1}
    assert [m["name"] for m in iris.client().models()] == ["iris"]


def test_404_unknown_things(iris: RunningServer) -> None:
    http = iris.http()
    cases = [
        (http.post("/v1/models/nope/predict", json={"inputs": [ROW]}), "model_not_found"),
        (http.post(PREDICT, json={"inputs": [ROW], "version": 9}), "version_not_found"),
        (http.get("/v1/models/nope"), "model_not_found"),
        (http.get("/v1/models/nope/versions"), "model_not_found"),
        (http.get("/v1/models/nope/predictions"), "model_not_found"),
        (http.get("/v1/models/nope/aliases/history"), "model_not_found"),
        (http.get("/v1/models/iris/versions/9"), "version_not_found"),
        (http.get("/v1/models/iris/versions/9/schema"), "version_not_found"),
        (http.get("/v1/models/iris/versions/9/batching"), "version_not_found"),
        (http.get("/v1/models/nope/versions/1/batching"), "model_not_found"),
        (http.get("/v1/predictions/0190e4a1-0000-7000-8000-000000000000"), "prediction_not_found"),
        (http.delete("/v1/keys/999"), "key_not_found"),
        (http.put("/v1/models/iris/aliases/production", json={"version": 7}), "version_not_found"),
        (http.put("/v1/models/nope/aliases/production", json={"version": 1}), "model_not_found"),
        (http.post("/v1/models/iris/aliases/staging/rollback"), "alias_not_found"),
    ]
    for response, code in cases:
        err = assert_envelope(response, 404, code)
        assert err["details"] == []
    err = assert_envelope(http.get("/v1/no/such/route"), 404, "not_found")
    assert err["message"] == "no route GET /v1/no/such/route"
    assert_envelope(iris.http("").get("/v1/nothing"), 404, "not_found")
    assert_envelope(http.delete("/v1/models"), 405, "method_not_allowed")
    # the scoring routes answer ahead of the framework, with the same shapes
    got = http.get("/v1/models/iris/predict")
    assert_envelope(got, 405, "method_not_allowed")
    assert got.headers["allow"] == "POST" and got.headers["x-request-id"]
    oip = http.put("/v2/models/iris/infer", json={})
    assert oip.status_code == 405 and "use POST" in oip.json()["error"]
    bad_version = http.post("/v2/models/iris/versions/two/infer", json={})
    assert bad_version.status_code == 400 and "version" in bad_version.json()["error"]
    assert ledger_size(iris.settings) == (0, 0)


def test_409_conflicts(iris: RunningServer) -> None:
    http = iris.http()
    err = assert_envelope(
        http.post(PREDICT, json={"inputs": [ROW], "alias": "candidate"}),
        409,
        "no_version_behind_alias",
    )
    assert "modelport promote iris VERSION --alias candidate" in err["message"]
    assert "PUT /v1/models/iris/aliases/candidate" in err["message"]
    err = assert_envelope(http.post("/v1/models", json={"name": "iris"}), 409, "conflict")
    assert "already exists" in err["message"]
    err = assert_envelope(
        http.post("/v1/models/iris/aliases/production/rollback"), 409, "nothing_to_roll_back"
    )
    assert "production" in err["message"]
    http.post("/v1/models", json={"name": "empty", "task": "regression"}).raise_for_status()
    err = assert_envelope(
        http.post("/v1/models/empty/predict", json={"inputs": [{}]}), 409, "no_version_behind_alias"
    )
    assert "PUT /v1/models/empty/aliases/production" in err["message"]
    assert ledger_size(iris.settings) == (0, 0)


def _chunks(total: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), 1 KiB at a time."""
    for _ in range(total // 1024):
        yield b" " * 1024


def test_413_bodies_over_the_limit(settings: Settings) -> None:
    from tests.api.models import FailsOnNegative

    limits = {"max_body_bytes": 2048, "max_artifact_bytes": 8192, "max_rows_per_request": 3}
    small = start_server(settings.model_copy(update=limits))
    try:
        small.client().push(
            "tiny",
            FailsOnNegative(),
            schema={"fields": [{"name": "x", "type": "number"}]},
            alias="production",
        )
        http = small.http()
        big = {"inputs": [{"x": 1.0}] * 300}
        for url in ("/v1/models/tiny/predict", "/v1/feedback", "/v1/keys"):
            err = assert_envelope(http.post(url, json=big), 413, "payload_too_large")
            assert "2048" in err["message"]
        headers = {"content-type": "application/json"}
        for method, url in [
            ("POST", "/v1/models/tiny/predict"),
            ("POST", "/v1/feedback"),
            ("PUT", "/v1/models/tiny/aliases/production"),
            ("POST", "/v1/keys"),
        ]:
            response = http.request(method, url, content=_chunks(10 * 1024), headers=headers)
            assert "content-length" not in response.request.headers
            err = assert_envelope(response, 413, "payload_too_large")
            assert "2048" in err["message"], (method, url)

        # Artifacts have their own, larger limit; it holds for chunked uploads too.
        err = assert_envelope(
            http.post("/v1/models/tiny/versions", files={"artifact": ("m.pkl", b"\x80" * 9000)}),
            413,
            "payload_too_large",
        )
        assert "8192" in err["message"]
        boundary = "modelport-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
            'filename="m.pkl"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()

        def multipart() -> Iterator[bytes]:
            yield head
            yield from _chunks(16 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        err = assert_envelope(
            http.post(
                "/v1/models/tiny/versions",
                content=multipart(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            ),
            413,
            "payload_too_large",
        )
        assert "8192" in err["message"]

        # Rows over max_rows_per_request are a 422 naming the limit.
        err = assert_envelope(
            http.post("/v1/models/tiny/predict", json={"inputs": [{"x": 1.0}] * 4}),
            422,
            "invalid_input",
        )
        assert err["details"] == [{"field": "inputs", "reason": "4 rows exceed the limit of 3"}]
        err = assert_envelope(
            http.post("/v1/models/tiny/predict", json={"columns": ["x"], "data": [[1]] * 4}),
            422,
            "invalid_input",
        )
        assert err["details"][0]["field"] == "data"
        assert http.post("/v1/models/tiny/predict", json={"inputs": [{"x": 1}] * 3}).is_success
        assert ledger_size(small.settings) == (3, 0)
        assert [v["version"] for v in small.client().versions("tiny")] == [1]
    finally:
        small.stop()


def test_422_schema_violations_name_every_field(iris: RunningServer) -> None:
    http = iris.http()
    bad = [
        ROW,
        {**ROW, "sepal_length": "long", "sepal_width": True},
        {k: v for k, v in ROW.items() if k != "petal_width"},
        {**ROW, "petal_length": None, "colour": "blue"},
        "not an object",
    ]
    err = assert_envelope(http.post(PREDICT, json={"inputs": bad}), 422, "invalid_input")
    assert err["details"] == [
        {"row": 1, "field": "sepal_length", "reason": "expected a number, got string"},
        {"row": 1, "field": "sepal_width", "reason": "expected a number, got boolean"},
        {"row": 2, "field": "petal_width", "reason": "missing"},
        {"row": 3, "field": "petal_length", "reason": "null is not allowed"},
        {"row": 3, "field": "colour", "reason": "unexpected field"},
        {"row": 4, "field": None, "reason": "each input must be a JSON object"},
    ]
    assert err["message"].startswith("input does not fit the schema: row 1, field 'sepal_length'")
    assert "(and 5 more)" in err["message"]

    # The columns + data form reports the same problems, by row.
    err = assert_envelope(
        http.post(
            PREDICT,
            json={
                "columns": [*IRIS_COLUMNS, "extra"],
                "data": [[1, 2, 3, 4, 5], [1, 2, "x", 4, 5]],
            },
        ),
        422,
        "invalid_input",
    )
    assert err["details"] == [
        {"row": 0, "field": "extra", "reason": "unexpected field"},
        {"row": 1, "field": "petal_length", "reason": "expected a number, got string"},
        {"row": 1, "field": "extra", "reason": "unexpected field"},
    ]
    assert ledger_size(iris.settings) == (0, 0)


def test_422_payload_shapes(iris: RunningServer) -> None:
    http = iris.http()
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"columns": IRIS_COLUMNS, "data": [[1, 2, 3, 4], [1, 2, 3]]}, {"row": 1, "field": None}),
        ({"columns": IRIS_COLUMNS, "data": [5]}, {"row": 0, "field": None}),
        ({"columns": "sepal_length", "data": [[1]]}, {"field": "columns"}),
        ({"columns": ["a", "a"], "data": [[1, 2]]}, {"field": "columns"}),
        ({"columns": IRIS_COLUMNS, "data": []}, {"field": "data"}),
        ({"columns": IRIS_COLUMNS}, {"field": "data"}),
        ({"inputs": [ROW], "columns": IRIS_COLUMNS, "data": [[1, 2, 3, 4]]}, {"field": "inputs"}),
        ({"inputs": []}, {"field": "inputs"}),
        ({"inputs": ROW}, {"field": "inputs"}),
        ({"rows": [ROW]}, {"field": "rows", "reason": "unexpected field"}),
        ({"inputs": [ROW], "verison": 2}, {"field": "verison", "reason": "unexpected field"}),
        ({"inputs": [ROW], "version": "one"}, {"field": "version"}),
        ({"inputs": [ROW], "version": 0}, {"field": "version"}),
        ({"inputs": [ROW], "version": True}, {"field": "version"}),
        ({"inputs": [ROW], "alias": 3}, {"field": "alias"}),
        ({"inputs": [ROW], "alias": "production", "version": 1}, {"field": "version"}),
    ]
    for body, expected in cases:
        err = assert_envelope(http.post(PREDICT, json=body), 422, "invalid_input")
        assert len(err["details"]) == 1, (body, err)
        assert expected.items() <= err["details"][0].items(), (body, err)
    # A row sent as the body itself: the answer says where rows go.
    err = assert_envelope(http.post(PREDICT, json=ROW), 422, "invalid_input")
    assert 'rows go under "inputs"' in err["message"], err
    err = assert_envelope(
        http.post(PREDICT, json={"inputs": [ROW], "verison": 2}), 422, "invalid_input"
    )
    assert "rows go under" not in err["message"], err
    assert ledger_size(iris.settings) == (0, 0)


def test_422_ranges_and_categories(server: RunningServer) -> None:
    mp = server.client()
    mp.push("sizer", Sizer(), schema=SIZER_SCHEMA, alias="production")
    http = server.http()
    good = {"colour": "red", "size": 10, "count": 1}
    assert http.post("/v1/models/sizer/predict", json={"inputs": [good]}).json()["predictions"] == [
        10.0
    ]
    rows = [
        {"colour": "purple", "size": -0.5, "count": 0},
        {"colour": "blue", "size": 10.5, "count": 2.5, "fragile": "yes"},
        {"colour": ["red"], "size": "big", "count": 3, "fragile": True},
    ]
    err = assert_envelope(
        http.post("/v1/models/sizer/predict", json={"inputs": rows}), 422, "invalid_input"
    )
    allowed = "allowed: 'red', 'green', 'blue'"
    assert err["details"] == [
        {"row": 0, "field": "colour", "reason": f"unknown category 'purple'; {allowed}"},
        {"row": 0, "field": "size", "reason": "out of range: -0.5 is below the minimum 0"},
        {"row": 0, "field": "count", "reason": "out of range: 0 is below the minimum 1"},
        {"row": 1, "field": "size", "reason": "out of range: 10.5 is above the maximum 10"},
        {"row": 1, "field": "count", "reason": "expected an integer, got 2.5"},
        {"row": 1, "field": "fragile", "reason": "expected a boolean, got string"},
        {
            "row": 2,
            "field": "colour",
            "reason": "expected one of 'red', 'green', 'blue', got array",
        },
        {"row": 2, "field": "size", "reason": "expected a number, got string"},
    ]
    assert ledger_size(server.settings) == (1, 0)


def test_422_request_bodies_of_management_routes(iris: RunningServer) -> None:
    http = iris.http()
    alias = "/v1/models/iris/aliases/production"
    cases: list[tuple[httpx.Response, str]] = [
        (http.put(alias, json={"version": 0}), "version"),
        (http.put(alias, json={"version": "two"}), "version"),
        (http.put(alias, json={}), "version"),
        (http.put(alias, json={"version": 1, "colour": "red"}), "colour"),
        (http.post(f"{alias}/rollback", json={"why": "x"}), "why"),
        (http.post("/v1/keys", json={"name": "x", "scopes": ["root"]}), "scopes.0"),
        (http.post("/v1/keys", json={"scopes": ["read"]}), "name"),
        (http.post("/v1/keys", json={"name": "x", "scopes": "read"}), "scopes"),
        (http.post("/v1/models", json={"name": "m", "task": "cooking"}), "task"),
        (http.post("/v1/models", json={"name": "m", "owner": "me"}), "owner"),
        (http.get("/v1/models/iris/predictions", params={"limit": 0}), "limit"),
        (http.get("/v1/models/iris/predictions", params={"version": "x"}), "version"),
        (http.get("/v1/models/iris/versions/one"), "version"),
        (http.get("/v1/models/iris/versions/91864320547732540358656/artifact"), "version"),
        (http.post("/v1/jobs/5722202161391771582464/progress", json={}), "job_id"),
        (http.get("/v1/models/iris/performance", params={"version": 10**22}), "version"),
        (http.delete("/v1/keys/first"), "key_id"),
    ]
    for response, field in cases:
        err = assert_envelope(response, 422, "invalid_input")
        assert err["details"][0]["field"] == field, (response.request.url, err)
        assert err["message"].startswith(f"{field}: "), err
    # An empty scope list is refused by the service, naming the field.
    err = assert_envelope(
        http.post("/v1/keys", json={"name": "x", "scopes": []}), 400, "invalid_request"
    )
    assert err["details"][0]["field"] == "scopes"
    # Serving settings are bounded above too: a huge integer is a 422, not a store error.
    for field, value in (("max_concurrent_batches", 2**80), ("cache_max_entries", 10**30)):
        err = assert_envelope(
            http.put("/v1/models/iris/serving", json={field: value}), 422, "invalid_input"
        )
        assert err["details"][0]["field"] == field and "from " in err["details"][0]["reason"], err
    assert iris.client().model("iris")["aliases"] == {"production": 1}
    assert [k["consumer"] for k in iris.client().list_keys()] == ["test-admin"]


def test_422_huge_windows_times_and_versions_name_the_parameter(iris: RunningServer) -> None:
    http = iris.http(iris.key("watcher", "read"))
    routes = ["performance", "drift", "timeline"]
    for route in routes:
        for window in ("99999999999", "1e300", "9" * 30, "inf", "nan", "-5"):
            err = assert_envelope(
                http.get(f"/v1/models/iris/{route}", params={"window": window}),
                422,
                "invalid_input",
            )
            assert err["details"][0]["field"] == "window", (route, window, err)
    for field in ("since", "until"):
        for value in ("1e300", "9" * 30, "-1"):
            r = http.get("/v1/models/iris/predictions", params={field: value})
            err = assert_envelope(r, 422, "invalid_input")
            assert err["details"][0]["field"] == field, (field, value, err)
    # The largest accepted values still answer.
    assert http.get("/v1/models/iris/performance", params={"window": "100y"}).status_code == 422
    assert http.get("/v1/models/iris/performance", params={"window": "5200w"}).status_code == 200


def test_422_bad_push_metadata(iris: RunningServer, iris_pipeline: Any) -> None:
    from modelport.flavors import serialize

    blob, _ = serialize(iris_pipeline)
    http = iris.http()
    url = "/v1/models/iris/versions"

    def push(metadata: str, artifact: bytes = blob) -> httpx.Response:
        return http.post(
            url, files={"artifact": ("m.skops", artifact)}, data={"metadata": metadata}
        )

    cases = [
        ('{"colour": 1}', "metadata.colour"),
        ('{"train_data_sha256": "abc"}', "metadata.train_data_sha256"),
        ('{"metrics": {"accuracy": "high"}}', "metadata.metrics.accuracy"),
        ('{"task": "cooking"}', "metadata.task"),
        ('{"flavor": "onnx"}', "metadata.flavor"),
        ("not json", "metadata"),
    ]
    for metadata, field in cases:
        err = assert_envelope(push(metadata), 422, "invalid_input")
        assert err["details"][0]["field"] == field, (metadata, err)
        assert err["message"].startswith("invalid push metadata"), err
    err = assert_envelope(push('{"schema": {"fields": []}}'), 422, "invalid_input")
    assert err["details"] == [{"field": "schema.fields", "reason": "expected a non-empty list"}]
    err = assert_envelope(push("{}", b""), 422, "invalid_input")
    assert err["details"] == [{"field": "artifact", "reason": "empty file"}]
    err = assert_envelope(push("{}", b"garbage"), 422, "artifact_rejected")
    assert err["details"][0]["field"] == "artifact"
    no_file = http.post(url, files={"metadata": (None, "{}")})  # a form field, no file part
    err = assert_envelope(no_file, 422, "invalid_input")
    assert err["details"][0]["field"] == "artifact"
    # A URL-encoded form cannot carry the file at all: not a type a push reads.
    err = assert_envelope(http.post(url, data={"metadata": "{}"}), 415, "unsupported_media_type")
    assert "multipart/form-data" in err["message"]
    err = assert_envelope(push('{"alias": "9lives"}'), 400, "invalid_request")
    assert err["details"][0]["field"] == "alias"
    assert [v["version"] for v in iris.client().versions("iris")] == [1]


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
    err = assert_envelope(
        http.post("/v1/models/fragile/predict", json={"inputs": [{"x": -1}]}), 500, "model_failed"
    )
    assert "ValueError: negative input" in err["message"]
    assert http.get("/v1/health").status_code == 200
    assert http.post("/v1/models/fragile/predict", json={"inputs": [{"x": 2}]}).status_code == 200
    assert ledger_size(server.settings) == (2, 0)
