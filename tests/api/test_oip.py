"""The Open Inference Protocol V2 with a real client (tritonclient, JSON and binary)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import IRIS_COLUMNS, RunningServer
from tests.interop import run_client


@pytest.fixture
def iris(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> RunningServer:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    mp.push("iris", iris_pipeline, train_data=iris_frame)
    return server


def _client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def _auth(server: RunningServer, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or server.admin_key}"}


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_matrix_input(
    iris: RunningServer, iris_pipeline: Any, iris_frame: Any, binary: bool
) -> None:
    client = _client(iris)
    try:
        headers = _auth(iris, iris.key("shop", "predict", "read"))
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris", headers=headers)
        meta = client.get_model_metadata("iris", headers=headers)
        assert [i["name"] for i in meta["inputs"]] == IRIS_COLUMNS
        assert meta["matrix_input"]["shape"] == [-1, 4] and meta["versions"] == ["1", "2"]
        x = iris_frame[IRIS_COLUMNS].iloc[[0, 60, 120]].to_numpy(dtype=np.float32)
        inp = triton.InferInput("input-0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("predict", binary_data=binary),
            triton.InferRequestedOutput("predict_proba", binary_data=binary),
        ]
        res = client.infer(
            "iris", inputs=[inp], outputs=outputs, request_id="req-1", headers=headers
        )
        expected = iris_pipeline.predict(
            iris_frame[IRIS_COLUMNS].iloc[[0, 60, 120]].astype(np.float32).astype(float)
        )
        got = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("predict").tolist()]
        assert got == list(expected)
        proba = res.as_numpy("predict_proba")
        assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0)
        body = res.get_response()
        assert (
            body["model_name"] == "iris" and body["model_version"] == "1" and body["id"] == "req-1"
        )
        ids = body["parameters"]["prediction_ids"].split(",")
        record = iris.client().prediction(ids[2])
        assert (
            record["version"] == 1
            and record["consumer"] == "shop"
            and record["request_id"] == "req-1"
        )
        assert record["inputs"]["petal_length"] == pytest.approx(float(x[2, 2]))
    finally:
        client.close()


def test_tritonclient_default_binary_outputs_and_versions(
    iris: RunningServer, iris_frame: Any
) -> None:
    client = _client(iris)
    try:
        headers = _auth(iris)
        inputs = []
        for name in IRIS_COLUMNS:
            col = iris_frame[name].head(5).to_numpy(dtype=np.float64)
            t = triton.InferInput(name, [5], "FP64")
            t.set_data_from_numpy(col)  # binary by default
            inputs.append(t)
        res = client.infer("iris", inputs=inputs, model_version="2", headers=headers)
        assert res.get_response()["model_version"] == "2"
        assert [v.decode() for v in res.as_numpy("predict").tolist()] == ["setosa"] * 5
        assert res.as_numpy("predict_proba").shape == (5, 3)
    finally:
        client.close()


def test_errors_in_the_protocol_shape(iris: RunningServer) -> None:
    http = iris.http()
    ok = {
        "inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    assert http.post("/v2/models/iris/infer", json=ok).status_code == 200
    cases = [
        ("/v2/models/ghost/infer", ok, 404, "ghost"),
        ("/v2/models/iris/versions/9/infer", ok, 404, "version 9"),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}
                ]
            },
            400,
            "3 columns",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [1, 2]}]},
            400,
            "needs 8 values",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 4], "datatype": "FP9", "data": [1, 2, 3, 4]}
                ]
            },
            400,
            "datatype",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [1, 4],
                        "datatype": "BYTES",
                        "data": ["a", "b", "c", "d"],
                    }
                ]
            },
            400,
            "sepal_length",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "colour", "shape": [1], "datatype": "FP64", "data": [1]}]},
            400,
            "colour",
        ),
        ("/v2/models/iris/infer", {**ok, "outputs": [{"name": "embedding"}]}, 400, "embedding"),
    ]
    for path, body, status, needle in cases:
        r = http.post(path, json=body)
        assert r.status_code == status, (path, r.text)
        assert set(r.json()) == {"error"} and needle in r.json()["error"], r.text
    assert http.post("/v2/models/iris/infer", content=b"{oops").status_code == 400
    http.post("/v1/models", json={"name": "empty"}).raise_for_status()
    # No version behind production: the caller's set-up, not an outage; the answer says what
    # to run, as /v1 does.
    for method, path in (
        ("POST", "/v2/models/empty/infer"),
        ("GET", "/v2/models/empty"),
        ("GET", "/v2/models/empty/ready"),
    ):
        r = http.request(method, path, json=ok if method == "POST" else None)
        assert r.status_code == 400, (path, r.text)
        assert "modelport promote empty VERSION" in r.json()["error"], r.text
    assert iris.http("").post("/v2/models/iris/infer", json=ok).status_code == 401
    reader = iris.http(iris.key("r", "read"))
    assert reader.post("/v2/models/iris/infer", json=ok).status_code == 403
    with pytest.raises(InferenceServerException):
        c = _client(iris)
        try:
            c.get_model_metadata("ghost", headers=_auth(iris))
        finally:
            c.close()


def test_bad_input_writes_nothing_to_the_ledger(iris: RunningServer) -> None:
    http = iris.http()
    wrong_type = {
        "inputs": [{"name": "sepal_length", "shape": [1], "datatype": "BOOL", "data": [True]}]
    }
    missing = {
        "inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [5.0]}]
    }
    for body, named in ((wrong_type, "sepal_length"), (missing, "sepal_width")):
        r = http.post("/v2/models/iris/infer", json=body)
        assert r.status_code == 400 and named in r.json()["error"], r.text
    assert iris.client().predictions("iris")["predictions"] == []


KSERVE_SCRIPT = """
import asyncio, json, sys
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, key, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
headers = {"Authorization": f"Bearer {key}"}

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        request = InferRequest(
            model_name="iris",
            request_id="kserve-1",
            infer_inputs=[
                InferInput(
                    name="input-0",
                    shape=[len(rows), len(rows[0])],
                    datatype="FP64",
                    data=[v for row in rows for v in row],
                )
            ],
        )
        live = await client.is_server_live(url)
        ready = await client.is_model_ready(url, "iris", headers=headers)
        res = await client.infer(url, request, model_name="iris", headers=headers)
        return {
            "live": live,
            "ready": ready,
            "id": res.id,
            "model_name": res.model_name,
            "prediction_ids": str(res.parameters["prediction_ids"]),
            "outputs": {o.name: list(o.data) for o in res.outputs},
        }
    finally:
        await client.close()

print(json.dumps(asyncio.run(main())))
"""


def test_kserve_rest_client_v2(iris: RunningServer, iris_pipeline: Any, iris_frame: Any) -> None:
    """KServe's own InferenceRESTClient, run from its own venv (it pins pandas<3)."""
    rows = iris_frame[IRIS_COLUMNS].iloc[[5, 75, 145]]
    res = run_client(
        "kserve", KSERVE_SCRIPT, iris.url, iris.admin_key, json.dumps(rows.to_numpy().tolist())
    )
    assert res["live"] is True and res["ready"] is True
    assert res["outputs"]["predict"] == list(iris_pipeline.predict(rows))
    assert res["id"] == "kserve-1" and res["model_name"] == "iris"
    assert len(res["prediction_ids"].split(",")) == 3
    assert len(res["outputs"]["predict_proba"]) == 9
    logged = iris.client().predictions("iris")["predictions"]
    assert len(logged) == 3 and {p["request_id"] for p in logged} == {"kserve-1"}
