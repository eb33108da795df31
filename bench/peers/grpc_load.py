"""The gRPC load generator: a Python asyncio client (grpcio's ``grpc.aio``) pinned to its own CPU.

Debian has no gRPC load generator (no ``ghz``), so this one sends the same serialized
``ModelInferRequest`` bytes over one channel (one HTTP/2 connection) with ``concurrency`` calls
in flight, for a bounded time, and prints one JSON line with wrk's fields (``requests``,
``duration_us``, ``socket_errors``: UNAVAILABLE and DEADLINE_EXCEEDED, ``non2xx``: any other
status, ``p50_us``, ``p99_us``), so :func:`peers.load.summarize` reads both. The request is
serialized once and the answer is not parsed: the client's CPU goes to the calls only.
Messages are the protocol's own (modelport's generated module; the wire format is the
published one, so it serves any server).

    python -m peers.grpc_load TARGET METHOD BODY_FILE METADATA_JSON CONCURRENCY SECONDS
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import load, procs

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: Large enough for any answer of the benchmark (100-row requests and their answers).
OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def request(model: str, rows: list[list[float]]) -> bytes:
    """A ``ModelInferRequest``: one FP64 ``[n, k]`` input ``input-0`` in typed contents."""
    from modelport.api.grpc import grpc_predict_v2_pb2 as pb

    msg = pb.ModelInferRequest(model_name=model)
    tensor = msg.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), len(rows[0])])
    tensor.contents.fp64_contents.extend(v for row in rows for v in row)
    return bytes(msg.SerializeToString())


def predictions(answer: bytes) -> list[Any]:
    """The ``predict`` output of a ``ModelInferResponse``, typed or raw."""
    import numpy as np

    from modelport.api.grpc import grpc_predict_v2_pb2 as pb
    from modelport.api.grpc.tensors import CONTENTS
    from modelport.api.oip import NUMPY_TYPES

    msg = pb.ModelInferResponse.FromString(answer)
    for i, out in enumerate(msg.outputs):
        if out.name != "predict":
            continue
        if msg.raw_output_contents:
            return np.frombuffer(msg.raw_output_contents[i], NUMPY_TYPES[out.datatype]).tolist()
        return list(getattr(out.contents, CONTENTS[out.datatype]))
    raise KeyError("predict")


def metadata(headers: dict[str, str]) -> list[tuple[str, str]]:
    """HTTP headers as gRPC metadata (lowercase keys)."""
    return [(k.lower(), v) for k, v in headers.items()]


def call(target: str, body: bytes, headers: dict[str, str], timeout: float = 30) -> bytes:
    """One ``ModelInfer`` call; its answer (grpc.RpcError on a status other than OK)."""
    import grpc

    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        infer = channel.unary_unary(MODEL_INFER)
        return bytes(infer(body, metadata=metadata(headers), timeout=timeout))


def wait_ok(
    proc: subprocess.Popen[bytes],
    target: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
) -> None:
    """Call every 50 ms until a call answers OK; RuntimeError when the server process exits
    first or the deadline passes (naming the last status)."""
    import grpc

    last = "no answer"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"exited during start-up (code {code})")
        try:
            call(target, body, headers, timeout=5)
            return
        except grpc.RpcError as exc:
            last = f"{exc.code().name}: {(exc.details() or '')[:150]}"  # type: ignore[attr-defined]
        time.sleep(0.05)
    raise RuntimeError(f"not ready in time (last: {last})")


def run(
    target: str, body_file: Path, headers: dict[str, str], concurrency: int, seconds: int
) -> dict[str, Any]:
    """One bounded run of this generator in a process pinned to the load CPU (the disk
    settled first, as for wrk)."""
    procs.settle_disk()
    here = Path(__file__).resolve().parent.parent
    cmd = [
        *procs.pin(procs.LOAD_CPU),
        sys.executable,
        "-m",
        "peers.grpc_load",
        target,
        MODEL_INFER,
        str(body_file),
        json.dumps(metadata(headers)),
        str(concurrency),
        str(seconds),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, cwd=here)
    line = next((x for x in done.stdout.splitlines() if x.startswith("{")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"grpc_load failed (exit {done.returncode}): {' '.join(tail)}"[:300])
    return load.summarize(json.loads(line))


async def drive(
    target: str,
    method: str,
    body: bytes,
    md: list[tuple[str, str]],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """``concurrency`` callers, each calling again as soon as its call returns, until time."""
    import grpc

    transport = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0, "transport": 0}
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        infer = channel.unary_unary(method)
        await channel.channel_ready()
        clock = time.perf_counter
        stop_at = clock() + seconds

        async def caller() -> None:
            while clock() < stop_at:
                sent = clock()
                try:
                    await infer(body, metadata=md, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    counts["transport" if exc.code() in transport else "failed"] += 1
                    continue
                latencies.append(clock() - sent)
                counts["ok"] += 1

        started = clock()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        duration = clock() - started
    latencies.sort()

    def percentile(p: float) -> int:
        if not latencies:
            return 0
        return int(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6)

    return {
        "requests": counts["ok"] + counts["failed"],
        "duration_us": int(duration * 1e6),
        "socket_errors": counts["transport"],
        "non2xx": counts["failed"],
        "p50_us": percentile(50),
        "p99_us": percentile(99),
    }


def main() -> None:
    target, method, body_file, md, concurrency, seconds = sys.argv[1:7]
    pairs = [(str(k), str(v)) for k, v in json.loads(md)]
    result = asyncio.run(
        drive(target, method, Path(body_file).read_bytes(), pairs, int(concurrency), float(seconds))
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
