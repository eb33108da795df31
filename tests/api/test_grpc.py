"""The Open Inference Protocol over gRPC, with real clients: tritonclient.grpc (raw tensors),
a plain grpcio stub (typed contents, every RPC) and Triton's own generated stub."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from modelport.api.grpc import grpc_predict_v2_pb2 as pb
from modelport.api.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from modelport.settings import Settings
from tests.conftest import IRIS_COLUMNS, RunningServer, start_server


@pytest.fixture
def iris(settings: Settings, iris_pipeline: Any, iris_frame: Any) -> Iterator[RunningServer]:
    """A server with gRPC on; iris v1 (production) and v2, both the same pipeline."""
    running = start_server(settings.model_copy(update={"grpc_port": 0}))
    try:
        mp = running.client()
        mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        mp.push("iris", iris_pipeline, train_data=iris_frame)
        yield running
    finally:
        running.stop()


def _target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.grpc_port}"


def _auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


@pytest.fixture
def stub(iris: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(_target(iris)) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _rows(iris_frame: Any, index: list[int]) -> Any:
    return iris_frame[IRIS_COLUMNS].iloc[index]


def _typed_request(rows: Any, **fields: Any) -> pb.ModelInferRequest:
    """A request with one FP64 [n, 4] input in typed contents."""
    request = pb.ModelInferRequest(model_name="iris", **fields)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.to_numpy().ravel().tolist())
    return request


def test_tritonclient_grpc_raw_tensors(
    iris: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    client = triton.InferenceServerClient(url=_target(iris))
    try:
        key = iris.key("shop", "predict", "read")
        headers = {"authorization": f"Bearer {key}"}
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris", headers=headers)
        assert client.is_model_ready("iris", "2", headers=headers)
        meta = client.get_model_metadata("iris", headers=headers, as_json=True)
        assert [i["name"] for i in meta["inputs"]] == IRIS_COLUMNS
        assert meta["versions"] == ["1", "2"] and meta["platform"].startswith("modelport_")
        assert client.get_server_metadata(as_json=True)["name"] == "modelport"

        x = _rows(iris_frame, [0, 60, 120]).to_numpy(dtype=np.float32)
        inp = triton.InferInput("input-0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outputs = [
            triton.InferRequestedOutput("predict"),
            triton.InferRequestedOutput("predict_proba"),
        ]
        res = client.infer("iris", [inp], outputs=outputs, request_id="req-1", headers=headers)
        expected = iris_pipeline.predict(
            _rows(iris_frame, [0, 60, 120]).astype(np.float32).astype(float)
        )
        assert [v.decode() for v in res.as_numpy("predict").tolist()] == list(expected)
        proba = res.as_numpy("predict_proba")
        assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0)
        body = res.get_response(as_json=True)
        assert body["model_name"] == "iris" and body["model_version"] == "1"
        assert body["id"] == "req-1"
        ids = body["parameters"]["prediction_ids"]["string_param"].split(",")
        record = iris.client().prediction(ids[2])
        assert record["version"] == 1 and record["consumer"] == "shop"
        assert record["request_id"] == "req-1"
        assert record["inputs"]["petal_length"] == pytest.approx(float(x[2, 2]))

        # One input per field, a version asked for, outputs not named: all of them, raw.
        inputs = []
        for name in IRIS_COLUMNS:
            t = triton.InferInput(name, [5], "FP64")
            t.set_data_from_numpy(iris_frame[name].head(5).to_numpy(dtype=np.float64))
            inputs.append(t)
        res = client.infer("iris", inputs, model_version="2", headers=headers)
        assert res.get_response().model_version == "2"
        assert [v.decode() for v in res.as_numpy("predict").tolist()] == ["setosa"] * 5
        assert res.as_numpy("predict_proba").shape == (5, 3)
    finally:
        client.close()


def test_every_rpc_with_a_plain_stub_and_typed_contents(
    iris: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub, iris_pipeline: Any, iris_frame: Any
) -> None:
    auth = _auth(iris.admin_key)
    assert stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert stub.ServerReady(pb.ServerReadyRequest()).ready is True
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "modelport" and server.version
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris"), metadata=auth).ready is True
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris", version="2"), metadata=auth)
    assert meta.name == "iris" and list(meta.versions) == ["1", "2"]
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        (c, "FP64", [-1]) for c in IRIS_COLUMNS
    ]
    assert [o.name for o in meta.outputs] == ["predict", "predict_proba"]

    rows = _rows(iris_frame, [1, 70, 140])
    reply = stub.ModelInfer(_typed_request(rows, id="typed-1"), metadata=auth)
    assert reply.model_name == "iris" and reply.model_version == "1" and reply.id == "typed-1"
    assert not reply.raw_output_contents  # typed in, typed out
    predict, proba = reply.outputs
    assert predict.name == "predict" and predict.datatype == "BYTES" and list(predict.shape) == [3]
    assert [v.decode() for v in predict.contents.bytes_contents] == list(
        iris_pipeline.predict(rows)
    )
    assert proba.datatype == "FP64" and list(proba.shape) == [3, 3]
    assert np.allclose(
        np.array(proba.contents.fp64_contents).reshape(3, 3), iris_pipeline.predict_proba(rows)
    )
    assert proba.parameters["classes"].string_param == '["setosa","versicolor","virginica"]'
    ids = reply.parameters["prediction_ids"].string_param.split(",")
    assert len(ids) == 3 and iris.client().prediction(ids[0])["request_id"] == "typed-1"

    # Asked for raw outputs with typed inputs: every output raw, in order.
    request = _typed_request(rows)
    request.parameters["binary_data_output"].bool_param = True
    request.outputs.add(name="predict_proba")
    reply = stub.ModelInfer(request, metadata=auth)
    assert [o.name for o in reply.outputs] == ["predict_proba"]
    got = np.frombuffer(reply.raw_output_contents[0], dtype="<f8").reshape(3, 3)
    assert np.allclose(got, iris_pipeline.predict_proba(rows))

    # Raw inputs answer raw, unless the request says otherwise (as text here).
    raw = pb.ModelInferRequest(
        model_name="iris", raw_input_contents=[rows.to_numpy(dtype="<f4").tobytes()]
    )
    raw.inputs.add(name="input-0", datatype="FP32", shape=[3, 4])
    reply = stub.ModelInfer(raw, metadata=auth)
    assert len(reply.raw_output_contents) == 2 and not reply.outputs[0].contents.bytes_contents
    raw.parameters["binary_data_output"].string_param = "false"
    reply = stub.ModelInfer(raw, metadata=auth)
    assert not reply.raw_output_contents
    assert [v.decode() for v in reply.outputs[0].contents.bytes_contents] == list(
        iris_pipeline.predict(rows.astype("float32").astype(float))
    )


def test_tritons_own_generated_stub_reads_and_writes_the_same_messages(
    iris: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    """Triton's grpc_service.proto (shipped in tritonclient) against our definition."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    rows = _rows(iris_frame, [2, 72])
    request = service_pb2.ModelInferRequest(model_name="iris", model_version="2")
    for name in IRIS_COLUMNS:
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[2])
        tensor.contents.fp32_contents.extend(rows[name].tolist())
    with grpc.insecure_channel(_target(iris)) as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=_auth(iris.admin_key)
        )
    assert reply.model_version == "2"
    assert [v.decode() for v in reply.outputs[0].contents.bytes_contents] == list(
        iris_pipeline.predict(rows)
    )
    assert reply.parameters["prediction_ids"].string_param.count(",") == 1


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_errors_are_status_codes_with_the_rest_message(
    iris: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub, iris_frame: Any
) -> None:
    auth = _auth(iris.admin_key)
    rows = _rows(iris_frame, [0])
    http = iris.http()

    def rest_error(body: dict[str, Any], path: str = "/v2/models/iris/infer") -> str:
        r = http.post(path, json=body)
        assert r.status_code == 400, r.text
        return str(r.json()["error"])

    # Three columns for a four-field schema: the same message as REST, naming the input.
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 3])
    tensor.contents.fp64_contents.extend([1.0, 2.0, 3.0])
    code, message = _code(lambda: stub.ModelInfer(request, metadata=auth))
    rest = rest_error(
        {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message == rest and "input-0" in message

    # A field of the wrong type, one missing: named.
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(
        name="sepal_length", datatype="BOOL", shape=[1]
    ).contents.bool_contents.append(True)
    code, message = _code(lambda: stub.ModelInfer(request, metadata=auth))
    rest = rest_error(
        {"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "BOOL", "data": [True]}]}
    )
    assert (
        code == grpc.StatusCode.INVALID_ARGUMENT and message == rest and "sepal_length" in message
    )

    # Values in the wrong contents field for the datatype, and too few of them.
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp32_contents.extend(
        [1, 2, 3, 4]
    )
    code, message = _code(lambda: stub.ModelInfer(request, metadata=auth))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "input 'input-0': shape [1, 4] needs 4 values, fp64_contents has 0"

    # A value out of its datatype's range, text that is not UTF-8: named.
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(
        name="sepal_length", datatype="INT8", shape=[1]
    ).contents.int_contents.append(1000)
    code, message = _code(lambda: stub.ModelInfer(request, metadata=auth))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "input 'sepal_length': 1000 does not fit INT8 (-128 to 127)"
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="species", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"\xff"
    )
    code, message = _code(lambda: stub.ModelInfer(request, metadata=auth))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "species" in message and "UTF-8" in message

    # Raw bytes that do not hold the shape.
    request = pb.ModelInferRequest(model_name="iris", raw_input_contents=[b"\x00" * 8])
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    code, message = _code(lambda: stub.ModelInfer(request, metadata=auth))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input-0" in message

    unknown = _typed_request(rows)
    unknown.model_name = "ghost"
    code, message = _code(lambda: stub.ModelInfer(unknown, metadata=auth))
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in message
    code, message = _code(
        lambda: stub.ModelInfer(_typed_request(rows, model_version="9"), metadata=auth)
    )
    assert code == grpc.StatusCode.NOT_FOUND and "9" in message
    code, message = _code(
        lambda: stub.ModelInfer(_typed_request(rows, model_version="x"), metadata=auth)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "version" in message
    wrong_output = _typed_request(rows)
    wrong_output.outputs.add(name="embedding")
    code, message = _code(lambda: stub.ModelInfer(wrong_output, metadata=auth))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "embedding" in message

    # Keys: none, unknown, one without the scope.
    code, _ = _code(lambda: stub.ModelInfer(_typed_request(rows)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = _code(lambda: stub.ModelInfer(_typed_request(rows), metadata=_auth("nope")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = _code(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="iris")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    reader = _auth(iris.key("r", "read"))
    code, message = _code(lambda: stub.ModelInfer(_typed_request(rows), metadata=reader))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "predict" in message
    # The other header REST reads works too.
    assert stub.ModelInfer(_typed_request(rows), metadata=[("x-api-key", iris.admin_key)]).outputs

    # No version behind production: the caller's set-up, with the command to run.
    http.post("/v1/models", json={"name": "empty"}).raise_for_status()
    empty = _typed_request(rows)
    empty.model_name = "empty"
    code, message = _code(lambda: stub.ModelInfer(empty, metadata=auth))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "modelport promote empty VERSION" in message

    # Nothing bad reached the ledger: only the one good call above.
    assert len(iris.client().predictions("iris")["predictions"]) == 1

    # tritonclient sees them as exceptions with the status.
    client = triton.InferenceServerClient(url=_target(iris))
    try:
        with pytest.raises(InferenceServerException, match="ghost"):
            client.get_model_metadata(
                "ghost", headers={"authorization": f"Bearer {iris.admin_key}"}
            )
    finally:
        client.close()


def test_malformed_and_oversized_messages_are_refused_and_the_server_goes_on(
    settings: Settings, iris_pipeline: Any, iris_frame: Any
) -> None:
    running = start_server(settings.model_copy(update={"grpc_port": 0, "max_body_bytes": 4096}))
    try:
        running.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        auth = _auth(running.admin_key)
        with grpc.insecure_channel(_target(running)) as channel:
            raw_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            code, message = _code(lambda: raw_infer(b"\xff\xff\xff", metadata=auth))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "inference.ModelInferRequest" in message
            big = _typed_request(_rows(iris_frame, list(range(150))))
            assert big.ByteSize() > 4096
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            code, _ = _code(lambda: stub.ModelInfer(big, metadata=auth))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            unknown = channel.unary_unary("/inference.GRPCInferenceService/ModelStreamInfer")
            code, _ = _code(lambda: unknown(b"", metadata=auth))
            assert code == grpc.StatusCode.UNIMPLEMENTED
            # Still serving.
            reply = stub.ModelInfer(_typed_request(_rows(iris_frame, [0])), metadata=auth)
            assert reply.outputs[0].contents.bytes_contents == [b"setosa"]
    finally:
        running.stop()


def test_a_pinned_consumer_and_a_ledger_row_per_call(
    iris: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub, iris_frame: Any
) -> None:
    mp = iris.client()
    mp.pin("iris", "legacy", version=2)
    legacy = _auth(iris.key("legacy", "predict"))
    rows = _rows(iris_frame, [3, 4])
    for i in range(3):
        reply = stub.ModelInfer(_typed_request(rows, id=f"call-{i}"), metadata=legacy)
        assert reply.model_version == "2"  # the pin, not production (1)
    # An explicit version wins over the pin, as on REST; without an id, the x-request-id
    # metadata is the ledger's request id.
    with_id = [*legacy, ("x-request-id", "from-metadata")]
    reply = stub.ModelInfer(_typed_request(rows, model_version="1"), metadata=with_id)
    assert reply.model_version == "1" and reply.id == ""
    logged = mp.predictions("iris")["predictions"]
    assert len(logged) == 8  # 4 calls of 2 rows, each call one ledger row of 2 predictions
    by_request: dict[str, set[int]] = {}
    for p in logged:
        assert p["consumer"] == "legacy"
        by_request.setdefault(p["request_id"], set()).add(p["version"])
    assert by_request == {**{f"call-{i}": {2} for i in range(3)}, "from-metadata": {1}}

    metrics = iris.http().get("/metrics").text
    assert (
        'modelport_rpc_requests_total{code="OK",method="ModelInfer",protocol="grpc"} 4.0' in metrics
    )
    assert 'modelport_rows_total{arm="",consumer="legacy",model="iris",version="2"} 6.0' in metrics


def test_grpc_and_rest_calls_share_the_batcher(
    iris: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub, iris_frame: Any
) -> None:
    """Concurrent gRPC and REST requests to one version join the same batcher."""
    auth = _auth(iris.admin_key)
    rows = _rows(iris_frame, [0])
    errors: list[BaseException] = []

    def grpc_calls() -> None:
        try:
            futures = [
                stub.ModelInfer.future(_typed_request(rows), metadata=auth) for _ in range(20)
            ]
            for f in futures:
                f.result()
        except BaseException as exc:
            errors.append(exc)

    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [1, 4],
                "datatype": "FP64",
                "data": rows.to_numpy().ravel().tolist(),
            }
        ]
    }
    thread = threading.Thread(target=grpc_calls)
    thread.start()
    with httpx.Client(
        base_url=iris.url, headers={"Authorization": f"Bearer {iris.admin_key}"}
    ) as http:
        for _ in range(20):
            assert http.post("/v2/models/iris/infer", json=body).status_code == 200
    thread.join(timeout=60)
    assert not errors
    stats = iris.http().get("/v1/models/iris/versions/1/batching").json()
    assert stats["requests"] == 40 and stats["rows"] == 40


def test_shutdown_lets_a_call_in_flight_finish(settings: Settings) -> None:
    import pandas as pd

    from tests.api.models import Sleeper

    running = start_server(settings.model_copy(update={"grpc_port": 0}))
    try:
        running.client().push(
            "slow", Sleeper(1.5), train_data=pd.DataFrame({"x": [1.0, 2.0]}), alias="production"
        )
        request = pb.ModelInferRequest(model_name="slow")
        request.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.append(
            500.0
        )
        with grpc.insecure_channel(_target(running)) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            future = stub.ModelInfer.future(request, metadata=_auth(running.admin_key))
            time.sleep(0.5)  # the call is in the model
            running.server.should_exit = True
            reply = future.result(timeout=30)
        assert list(reply.outputs[0].contents.fp64_contents) == [1000.0]
    finally:
        running.stop()


def _grpc_example(doc: str) -> str:
    """The ```python block of ``doc`` that uses tritonclient.grpc."""
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    found = [b for b in blocks if "tritonclient.grpc" in b]
    assert len(found) == 1, f"{doc} should have one tritonclient.grpc example"
    return found[0]


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_the_docs_grpc_example_runs_as_written(iris: RunningServer, doc: str) -> None:
    code = _grpc_example(doc)
    assert "127.0.0.1:8001" in code
    done = subprocess.run(
        [sys.executable, "-c", code.replace("127.0.0.1:8001", _target(iris))],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MODELPORT_KEY": iris.admin_key},
    )
    assert done.returncode == 0, done.stderr
    predicted, ids = done.stdout.splitlines()
    assert predicted == "[b'setosa']"
    assert iris.client().prediction(ids)["request_id"] == "req-1"


def test_serve_grpc_port_drains_a_call_on_sigterm(tmp_path: Path, store_url: str) -> None:
    """``modelport serve --grpc-port``: a call in flight when SIGTERM arrives is answered and
    in the ledger; the process exits 0; the port is loopback's."""
    import pandas as pd

    from modelport import Client
    from tests.api.models import Sleeper
    from tests.conftest import make_key
    from tests.procs import ServerProcess

    proc = ServerProcess(tmp_path / "home", store_url, grpc=True)
    settings = Settings(home=tmp_path / "home", store=store_url)
    key = make_key(settings, "admin", ["admin"])
    proc.start()
    try:
        with Client(proc.url, key) as mp:
            frame = pd.DataFrame({"x": [1.0, 2.0]})
            mp.push("slow", Sleeper(2.0), train_data=frame, alias="production")
        request = pb.ModelInferRequest(model_name="slow", id="last-call")
        request.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.append(500)
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(pb.ServerLiveRequest()).live
            future = stub.ModelInfer.future(request, metadata=_auth(key))
            time.sleep(0.7)  # in the model
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            reply = future.result(timeout=60)
        assert list(reply.outputs[0].contents.fp64_contents) == [1000.0]
        assert proc.proc.wait(timeout=60) == 0
        prediction_id = reply.parameters["prediction_ids"].string_param
    finally:
        proc.kill()
    # Committed before the answer: a server started again finds it.
    proc.start()
    try:
        with Client(proc.url, key) as mp:
            assert mp.prediction(prediction_id)["request_id"] == "last-call"
    finally:
        proc.kill()


def test_serve_port_0_prints_the_ports_the_system_chose(tmp_path: Path, store_url: str) -> None:
    """``modelport serve --port 0 --grpc-port 0``: the ports it prints are the ones it serves."""
    import re

    from tests.procs import cli_env

    out = tmp_path / "out.log"
    command = [sys.executable, "-m", "modelport.cli", "serve", "--port", "0", "--grpc-port", "0"]
    command += ["--home", str(tmp_path / "home"), "--store", store_url]
    with out.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=cli_env())
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"gRPC .* on 127\.0\.0\.1:\d+\n", out.read_text()):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        text = out.read_text()
        lines = ("modelport listening on http://", "gRPC (Open Inference Protocol) on ")
        found = [re.search(re.escape(line) + r"127\.0\.0\.1:(\d+)", text) for line in lines]
        assert all(found), text
        http_port, grpc_port = (int(match[1]) for match in found if match)
        assert 0 not in (http_port, grpc_port) and http_port != grpc_port
        health = httpx.get(f"http://127.0.0.1:{http_port}/v1/health", timeout=10).json()
        assert health["pid"] == proc.pid
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_grpc_port_taken_fails_the_start(tmp_path: Path, store_url: str) -> None:
    from tests.procs import ServerProcess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ServerProcess(tmp_path / "home", store_url, args=["--grpc-port", str(port)])
        with pytest.raises(RuntimeError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            proc.start(timeout=180)  # a loaded machine; it exits long before
        proc.kill()


KSERVE_GRPC_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

target, key, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
metadata = [("authorization", f"Bearer {key}")]

def text(values):
    return [v.decode() if isinstance(v, bytes) else v for v in values]

def plain(parameter):
    return getattr(parameter, "string_param", parameter)

async def main():
    client = InferenceGRPCClient(url=target, timeout=30)
    try:
        live = await client.is_server_live()
        ready = await client.is_model_ready("iris", headers=metadata)
        typed = InferRequest(
            model_name="iris",
            request_id="kserve-typed",
            infer_inputs=[
                InferInput(
                    name="input-0",
                    shape=[len(rows), len(rows[0])],
                    datatype="FP64",
                    data=[v for row in rows for v in row],
                )
            ],
        )
        res = await client.infer(typed, headers=metadata)
        raw_input = InferInput(name="input-0", shape=[len(rows), len(rows[0])], datatype="FP32")
        raw_input.set_data_from_numpy(np.array(rows, dtype=np.float32), binary_data=True)
        raw = InferRequest(model_name="iris", request_id="kserve-raw", infer_inputs=[raw_input])
        res_raw = await client.infer(raw, headers=metadata)
        return {
            "live": live,
            "ready": ready,
            "typed": {
                "id": res.id,
                "model_version": res.model_version,
                "prediction_ids": plain(res.parameters["prediction_ids"]),
                "outputs": {o.name: text(o.data) for o in res.outputs},
            },
            "raw": {
                "id": res_raw.id,
                "outputs": {
                    o.name: text(o.as_numpy().ravel().tolist()) for o in res_raw.outputs
                },
            },
        }
    finally:
        await client.close()

print(json.dumps(asyncio.run(main())))
"""


def test_kserve_grpc_client(iris: RunningServer, iris_pipeline: Any, iris_frame: Any) -> None:
    """KServe's own InferenceGRPCClient (typed and raw tensors), from its own venv."""
    from tests.interop import run_client

    rows = _rows(iris_frame, [5, 75, 145])
    res = run_client(
        "kserve",
        KSERVE_GRPC_SCRIPT,
        _target(iris),
        iris.admin_key,
        json.dumps(rows.to_numpy().tolist()),
    )
    expected = list(iris_pipeline.predict(rows))
    assert res["live"] is True and res["ready"] is True
    typed = res["typed"]
    assert typed["id"] == "kserve-typed" and typed["model_version"] == "1"
    assert typed["outputs"]["predict"] == expected
    assert len(typed["outputs"]["predict_proba"]) == 9
    assert len(typed["prediction_ids"].split(",")) == 3
    assert res["raw"]["id"] == "kserve-raw" and res["raw"]["outputs"]["predict"] == expected
    logged = iris.client().predictions("iris")["predictions"]
    assert sorted(p["request_id"] for p in logged) == ["kserve-raw"] * 3 + ["kserve-typed"] * 3


def test_a_split_policy_routes_grpc_calls_sticky_by_the_unit_metadata(
    iris: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub, iris_frame: Any
) -> None:
    iris.client().set_traffic(
        "iris",
        {
            "policy": "split",
            "arms": [
                {"name": "a", "version": 1, "weight": 50},
                {"name": "b", "version": 2, "weight": 50},
            ],
            "unit": {"header": "X-Unit-ID"},
        },
    )
    rows = _rows(iris_frame, [0])
    seen: dict[str, set[str]] = {}
    for unit in [f"user-{i}" for i in range(12)] * 3:
        metadata = [*_auth(iris.admin_key), ("x-unit-id", unit)]
        reply = stub.ModelInfer(_typed_request(rows), metadata=metadata)
        seen.setdefault(unit, set()).add(reply.model_version)
    assert all(len(versions) == 1 for versions in seen.values()), seen  # sticky per unit
    assert set().union(*seen.values()) == {"1", "2"}  # both arms take traffic
    logged = iris.client().predictions("iris", limit=100)["predictions"]
    assert len(logged) == 36 and {p["arm"] for p in logged} == {"a", "b"}
