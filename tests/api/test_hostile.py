"""Hostile input on every kind of route: each gets a clear 4xx naming the problem, never a 5xx,
and the server keeps serving afterwards.

The limits are settings (``max_body_bytes``, ``max_artifact_bytes``, ``max_json_depth``,
``max_rows_per_request``); the server here runs with small ones so the tests stay quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelport.settings import Settings
from tests.conftest import IRIS_COLUMNS, RunningServer, start_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
INFER = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}
LIMITS = {
    "max_body_bytes": 256 * 1024,
    "max_artifact_bytes": 1024 * 1024,
    "max_rows_per_request": 50,
}

#: JSON routes of each kind: (method, url, a good body). Scoring (native and OIP), pydantic-
#: checked bodies, bodies checked by the service, and the learning loop's.
JSON_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/models/iris/predict", {"inputs": [ROW]}),
    ("POST", "/v2/models/iris/infer", INFER),
    ("POST", "/v2/models/iris/versions/1/infer", INFER),
    ("POST", "/v1/feedback", {"feedback": [{"prediction_id": "x", "label": "setosa"}]}),
    ("POST", "/v1/keys", {"name": "someone", "scopes": ["read"]}),
    ("POST", "/v1/models", {"name": "other"}),
    ("PUT", "/v1/models/iris/aliases/candidate", {"version": 1}),
    ("PUT", "/v1/models/iris/traffic", {"policy": "single", "target": {"alias": "production"}}),
    ("PUT", "/v1/models/iris/consumers/shop", {"pin": {"version": 1}}),
    ("PUT", "/v1/models/iris/serving", {"max_batch_rows": 64}),
    ("PUT", "/v1/models/iris/adapter", {"adapter": None}),
    ("POST", "/v1/models/online/observations", {"observations": [{"x": 1.0, "y": 2.0}]}),
    ("POST", "/v1/models/online/jobs", {"type": "retrain"}),
    ("PUT", "/v1/models/online/triggers", {"triggers": None}),
    ("PUT", "/v1/models/online/gate", {"gate": None}),
]


@pytest.fixture
def hostile(settings: Settings, iris_pipeline: Any, iris_frame: Any) -> Iterator[RunningServer]:
    running = start_server(settings.model_copy(update={**LIMITS, "job_workers": 0}))
    mp = running.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, target="species", alias="production")
    mp.create_from_algorithm(
        "online",
        "online_linear_regression",
        schema={"fields": [{"name": "x", "type": "number"}]},
        target="y",
    )
    yield running
    assert_still_serving(running)
    running.stop()


def assert_still_serving(running: RunningServer) -> None:
    http = running.http()
    assert http.get("/v1/health").status_code == 200
    scored = http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
    assert scored.status_code == 200, scored.text
    assert http.post("/v2/models/iris/infer", json=INFER).status_code == 200


def problem(response: httpx.Response, status: int | tuple[int, ...], *words: str) -> str:
    """The error message of a refused request, checked: its status, its shape, its words."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.request.url, response.text)
    body = response.json()
    if response.request.url.path.startswith("/v2"):
        assert set(body) == {"error"}, body
        message: str = body["error"]
    else:
        assert set(body["error"]) == {"code", "message", "details"}, body
        message = body["error"]["message"]
    said = (message + " " + response.text).lower()  # the message, or the field details
    for word in words:
        assert word.lower() in said, (response.request.url, message, word)
    return message


def send(
    http: httpx.Client, method: str, url: str, content: bytes, **headers: str
) -> httpx.Response:
    return http.request(
        method, url, content=content, headers={"Content-Type": "application/json", **headers}
    )


def test_every_json_route_accepts_its_good_body(hostile: RunningServer) -> None:
    # The baseline the other tests break: each body below is fine as it is.
    http = hostile.http()
    for method, url, body in JSON_ROUTES:
        response = http.request(method, url, json=body)
        assert response.status_code < 500, (url, response.text)
        if "feedback" not in url and "/jobs" not in url:
            assert response.status_code < 300, (url, response.text)


def test_oversized_bodies_are_413_with_or_without_a_length(hostile: RunningServer) -> None:
    http = hostile.http()
    big = b'{"inputs": [' + b" " * LIMITS["max_body_bytes"] + b"]}"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    for method, url, _ in JSON_ROUTES:
        problem(
            send(http, method, url, big), 413, "exceeds the limit", str(LIMITS["max_body_bytes"])
        )
        # Chunked, no Content-Length: counted as it arrives.
        chunked = http.request(
            method, url, content=chunks(), headers={"Content-Type": "application/json"}
        )
        problem(chunked, 413, "exceeds the limit")
    # An artifact beyond max_artifact_bytes.
    artifact = b"x" * (LIMITS["max_artifact_bytes"] + 1)
    pushed = http.post("/v1/models/iris/versions", files={"artifact": ("m.skops", artifact)})
    problem(pushed, 413, "exceeds", str(LIMITS["max_artifact_bytes"]))


def test_deep_nesting_is_a_400_naming_the_limit(hostile: RunningServer) -> None:
    http = hostile.http()
    limit = hostile.settings.max_json_depth
    for depth in (100_000, 1025, limit + 1):
        deep = b"[" * depth + b"]" * depth
        for method, url, _ in JSON_ROUTES:
            # As the whole body, and as a value inside an otherwise good one.
            problem(send(http, method, url, deep), 400, "deeper than max_json_depth")
            inner = b'{"inputs": [{"sepal_length": ' + deep + b"}]}"
            problem(send(http, method, url, inner), 400, "deeper than max_json_depth")
    # Just within the limit is fine as JSON (the value is then wrong for its field: 4xx).
    ok = b"[" * (limit - 3) + b"]" * (limit - 3)
    within = send(
        http, "POST", "/v1/models/iris/predict", b'{"inputs": [{"sepal_length": ' + ok + b"}]}"
    )
    problem(within, 422, "sepal_length")


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan", b"inf"]
)
def test_non_json_numbers_are_400(hostile: RunningServer, literal: bytes) -> None:
    http = hostile.http()
    for method, url, _ in JSON_ROUTES:
        body = b'{"inputs": [{"sepal_length": ' + literal + b'}], "version": ' + literal + b"}"
        problem(send(http, method, url, body), 400, "not valid JSON")
    oip = (
        b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ['
        + literal
        + b", 1, 1, 1]}]}"
    )
    problem(send(http, "POST", "/v2/models/iris/infer", oip), 400, "not valid JSON")


def test_huge_numbers_get_a_4xx_where_they_do_not_fit(hostile: RunningServer) -> None:
    http = hostile.http()
    huge = 10**30
    # A number field takes any number JSON has (big integers become doubles); ids and versions
    # must fit the store.
    scored = http.post("/v1/models/iris/predict", json={"inputs": [{**ROW, "sepal_length": huge}]})
    assert scored.status_code == 200, scored.text
    for response, field in [
        (http.post("/v1/models/iris/predict", json={"inputs": [ROW], "version": huge}), "version"),
        (http.put("/v1/models/iris/aliases/x", json={"version": huge}), "version"),
        (http.put("/v1/models/iris/consumers/shop", json={"pin": {"version": huge}}), "pin"),
        (http.post("/v1/models/iris/jobs", json={"type": "replay", "version": 2**31}), "version"),
        (http.get(f"/v1/models/iris/versions/{huge}"), "version"),
        (http.get(f"/v1/jobs/{2**31}"), "job_id"),
        (http.delete(f"/v1/keys/{2**31}"), "key_id"),
        (http.get("/v1/models/iris/experiment?revision=2147483648"), "revision"),
        (http.get(f"/v1/models/iris/predictions?version={huge}"), "version"),
        (http.post(f"/v1/models/iris/versions/{huge}/predict", json={"inputs": [ROW]}), "route"),
    ]:
        if field == "route":
            problem(response, 404, "no route")
        else:
            assert 400 <= response.status_code < 500, response.text
            assert field in response.text, response.text
    problem(http.post(f"/v2/models/iris/versions/{2**31}/infer", json=INFER), 400, "version")
    problem(http.get(f"/v2/models/iris/versions/{2**31}"), 400, "version")
    for datatype, value in [("FP32", 1e300), ("INT8", 1000), ("UINT8", -1), ("INT64", 2**63)]:
        tensor = {**INFER["inputs"][0], "datatype": datatype, "data": [value, 1, 1, 1]}
        problem(
            http.post("/v2/models/iris/infer", json={"inputs": [tensor]}),
            400,
            f"does not fit {datatype}",
        )


def test_huge_batches_are_refused_naming_the_limit(hostile: RunningServer) -> None:
    http = hostile.http()
    limit = LIMITS["max_rows_per_request"]
    over = http.post("/v1/models/iris/predict", json={"inputs": [ROW] * (limit + 1)})
    problem(over, 422, "too many rows", str(limit))
    columns = {"columns": IRIS_COLUMNS, "data": [list(ROW.values())] * (limit + 1)}
    problem(http.post("/v1/models/iris/predict", json=columns), 422, "too many rows", str(limit))
    tensor = {**INFER["inputs"][0], "shape": [limit + 1, 4], "data": [1.0] * 4 * (limit + 1)}
    problem(
        http.post("/v2/models/iris/infer", json={"inputs": [tensor]}),
        400,
        "too many rows",
        str(limit),
    )
    # A shape claiming more elements than any request may carry is refused before its data.
    claim = {**INFER["inputs"][0], "shape": [10**12, 10**12], "data": [1.0]}
    problem(http.post("/v2/models/iris/infer", json={"inputs": [claim]}), 400, "exceed the limit")
    assert http.post("/v1/models/iris/predict", json={"inputs": [ROW] * limit}).status_code == 200


def test_content_types(hostile: RunningServer) -> None:
    http = hostile.http()
    for method, url, body in JSON_ROUTES:
        import json

        raw = json.dumps(body).encode()
        for wrong in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
            problem(
                send(http, method, url, raw, **{"Content-Type": wrong}), 415, "content-type", wrong
            )
        # Form data (what `curl -F` sends) is not JSON either; the upload routes take it.
        form = http.request(method, url, files={"file": ("a.json", raw)})
        if url.endswith("/observations"):
            assert form.status_code < 500, form.text
        else:
            problem(form, 415, "multipart/form-data")
        # JSON with a charset or as a +json type is JSON.
        for fine in ("application/json; charset=utf-8", "application/vnd.api+json"):
            response = send(http, method, url, raw, **{"Content-Type": fine})
            assert response.status_code != 415 and response.status_code < 500, response.text
        # A body without a Content-Type is what a web page may send anywhere unasked: a 415,
        # except on /v2 inference, where tritonclient sends its JSON that way.
        bare = http.request(method, url, content=raw)
        assert "content-type" not in bare.request.headers
        if url.startswith("/v2"):
            assert bare.status_code != 415 and bare.status_code < 500, bare.text
        else:
            problem(bare, 415, "no content-type", "application/json")
    # The binary tensor extension sends octet-stream to /v2 only.
    binary = send(
        http,
        "POST",
        "/v1/models/iris/predict",
        b"{}",
        **{"Content-Type": "application/octet-stream"},
    )
    problem(binary, 415, "application/octet-stream")


def test_bad_bytes_empty_bodies_and_wrong_shapes(hostile: RunningServer) -> None:
    http = hostile.http()
    for method, url, _ in JSON_ROUTES:
        problem(send(http, method, url, b""), 400, "empty")
        problem(send(http, method, url, b'{"inputs": "\xff\xfe"}'), 400, "not valid JSON", "UTF-8")
        problem(send(http, method, url, b"\xef\xbb\xbf{}"), 400, "not valid JSON")  # a BOM
        problem(send(http, method, url, b'{"inputs": [1, 2'), 400, "not valid JSON")
        problem(send(http, method, url, b"{} {}"), 400, "not valid JSON")
        for not_an_object in (b"[]", b"null", b"3", b'"text"', b"true"):
            refused = send(http, method, url, not_an_object)
            problem(refused, (400, 422), "object" if "observations" not in url else "observations")


def test_wrong_types_at_every_level_name_the_field(hostile: RunningServer) -> None:
    http = hostile.http()
    predict = "/v1/models/iris/predict"
    cases: list[tuple[Any, str]] = [
        ({"inputs": {"sepal_length": 1}}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [[1, 2, 3, 4]]}, "object"),
        ({"inputs": [{**ROW, "sepal_length": "long"}]}, "sepal_length"),
        ({"inputs": [{**ROW, "sepal_length": [1]}]}, "sepal_length"),
        ({"inputs": [{**ROW, "sepal_length": {"a": 1}}]}, "sepal_length"),
        ({"inputs": [{**ROW, "sepal_length": True}]}, "sepal_length"),
        ({"inputs": [{**ROW, "petal": 1}]}, "petal"),  # an unknown field in a row
        ({"inputs": [ROW], "colour": "red"}, "colour"),  # an unknown field in the body
        ({"inputs": [ROW], "version": "1"}, "version"),
        ({"inputs": [ROW], "alias": 3}, "alias"),
        ({"columns": "sepal_length", "data": [[1]]}, "columns"),
        ({"columns": IRIS_COLUMNS, "data": [[1, 2]]}, "row 0"),
    ]
    for body, field in cases:
        problem(http.post(predict, json=body), 422, field)
    oip = "/v2/models/iris/infer"
    tensor = INFER["inputs"][0]
    oip_cases: list[tuple[Any, str]] = [
        ({"inputs": {}}, "inputs"),
        ({"inputs": [tensor], "id": 5}, "id"),
        ({"inputs": [tensor], "id": "x" * 201}, "longer than 200"),
        ({"inputs": [tensor], "parameters": []}, "parameters"),
        ({"inputs": ["x"]}, "object"),
        ({"inputs": [{**tensor, "name": 1}]}, "name"),
        ({"inputs": [{**tensor, "datatype": "FP128"}]}, "datatype"),
        ({"inputs": [{**tensor, "shape": [1, -4]}]}, "shape"),
        ({"inputs": [{**tensor, "shape": "1,4"}]}, "shape"),
        ({"inputs": [{**tensor, "data": ["a", "b", "c", "d"]}]}, "numbers"),
        ({"inputs": [{**tensor, "data": [1, 2, 3]}]}, "needs 4 values"),
        ({"inputs": [{**tensor, "datatype": "BOOL"}]}, "true or false"),
        ({"inputs": [tensor], "outputs": [{"name": "nope"}]}, "nope"),
    ]
    for body, words in oip_cases:
        problem(http.post(oip, json=body), 400, words)
    # Bodies checked by their schema name the field, unknown fields included.
    problem(http.post("/v1/keys", json={"name": 3, "scopes": ["read"]}), 422, "name")
    problem(http.post("/v1/keys", json={"name": "a", "scopes": "read"}), 422, "scopes")
    problem(
        http.post("/v1/keys", json={"name": "a", "scopes": ["read"], "admin": True}), 422, "admin"
    )
    problem(http.put("/v1/models/iris/aliases/x", json={"version": [1]}), 422, "version")
    problem(http.post("/v1/models", json={"name": "m", "task": {"a": 1}}), 422, "task")
    problem(http.post("/v1/models", json={"name": "m\n"}), 400, "name")  # no line breaks
    problem(http.post("/v1/keys", json={"name": "a\n", "scopes": ["read"]}), 400, "name")
    problem(http.put("/v1/models/iris/aliases/x%0A", json={"version": 1}), 400, "alias")
    problem(
        http.put("/v1/models/iris/serving", json={"max_batch_rows": "many"}), 422, "max_batch_rows"
    )
    problem(http.put("/v1/models/iris/traffic", json={"policy": "split", "arms": 3}), 422, "arms")
    problem(http.put("/v1/models/iris/consumers/shop", json={"pin": [1]}), 422, "pin")
    problem(http.post("/v1/feedback", json={"feedback": {"prediction_id": "x"}}), 422, "feedback")
    obs = http.post("/v1/models/online/observations", json={"observations": [{"x": "one", "y": 1}]})
    problem(obs, 422, "x")


def test_duplicate_keys_keep_the_last(hostile: RunningServer) -> None:
    # JSON leaves duplicate names to the reader; modelport's (like Python's) keeps the last.
    http = hostile.http()
    body = (
        b'{"inputs": [{"sepal_length": "x"}], "inputs": ['
        + httpx.Request("GET", "/", json=ROW).content
        + b"]}"
    )
    assert send(http, "POST", "/v1/models/iris/predict", body).status_code == 200
    made = send(
        http, "POST", "/v1/keys", b'{"name": "first", "name": "second", "scopes": ["read"]}'
    )
    assert made.status_code == 201 and made.json()["consumer"] == "second"


def test_malformed_uploads(hostile: RunningServer) -> None:
    http = hostile.http()
    for url in ("/v1/models/iris/versions", "/v1/models/online/observations"):
        broken = send(
            http,
            "POST",
            url,
            b"--xyz\r\nnot a part",
            **{"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        problem(broken, (400, 422), "")
        no_boundary = send(http, "POST", url, b"abc", **{"Content-Type": "multipart/form-data"})
        problem(no_boundary, (400, 422), "")
    for name, data in [("o.csv", b"\xff\xfe\x00garbage"), ("o.parquet", b"PAR1nope")]:
        upload = http.post("/v1/models/online/observations", files={"file": (name, data)})
        problem(upload, 422, f"cannot read {name}")
        assert upload.json()["error"]["details"][0]["field"] == "file"
    metadata = http.post(
        "/v1/models/iris/versions",
        files={"artifact": ("m.skops", b"abc")},
        data={"metadata": "[" * 5000},
    )
    problem(metadata, 422, "metadata")


def test_nul_characters_are_refused_on_every_store(hostile: RunningServer) -> None:
    # PostgreSQL text cannot hold NUL: refused at the edge, the same on SQLite.
    http = hostile.http()
    for method, url, _ in JSON_ROUTES:
        nul = send(
            http, method, url, b'{"inputs": [{"sepal_length": "a\\u0000b"}], "name": "\\u0000"}'
        )
        problem(nul, 400, "NUL")
    for url in (
        "/v1/models/a%00b",
        "/v1/models/iris/consumers/a%00b",
        "/v1/datasets/%00",
        "/v1/models/iris/aliases/history?alias=a%00b",
    ):
        problem(http.get(url), 400, "NUL")
    problem(http.put("/v1/models/iris/aliases/a%00b", json={"version": 1}), 400, "NUL")
    # A form field is no JSON body: the store's refusal is still bad input, not a 5xx.
    from modelport.flavors import serialize

    blob, _ = serialize(_fitted())
    pushed = http.post(
        "/v1/models/iris/versions",
        files={"artifact": ("m.skops", blob)},
        data={
            "metadata": '{"description": "a\\u0000b", "schema": {"fields": [{"name": "x", "type": "number"}]}}'
        },
    )
    assert pushed.status_code < 500, pushed.text
    if pushed.status_code >= 400:
        problem(pushed, 422, "cannot be stored")


def _fitted() -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
