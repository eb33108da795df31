"""`modelport stream` against the real Redis and NATS JetStream on loopback and a real server.

Each test uses streams, subjects and groups of its own and removes them afterwards. Kafka has
no broker on this machine's loopback: its backend is not exercised here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
import redis

from modelport.streams.worker import StreamJob, StreamWorker
from tests.conftest import IRIS_COLUMNS, POSTGRES_URL, RunningServer, free_port, needs, reachable

REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
WAIT = 60.0  # seconds any one wait below may take at most


needs_redis = needs("Redis on 127.0.0.1:6379", reachable(6379))
needs_nats = needs("NATS with JetStream on 127.0.0.1:4222", reachable(4222))


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def names() -> Iterator[str]:
    """A prefix of names of this test's own; its Redis keys are removed afterwards."""
    prefix = f"mp-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(f"{prefix}*"))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


@pytest.fixture
def iris(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> RunningServer:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    return server


def iris_records(iris_frame: Any, n: int) -> list[dict[str, Any]]:
    rows = iris_frame[IRIS_COLUMNS].sample(n, replace=True, random_state=7)
    return [{"ref": f"r{i}", **row} for i, row in enumerate(rows.to_dict("records"))]


def start_worker(server: RunningServer, *args: str) -> subprocess.Popen[bytes]:
    """A ``modelport stream`` process; its log goes to a file (a pipe nobody reads fills up)."""
    command = [sys.executable, "-m", "modelport.cli", "stream", *args]
    command += ["--url", server.url, "--key", server.admin_key]
    fd, path = tempfile.mkstemp(suffix=".log")
    try:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=fd)
    finally:
        os.close(fd)
    proc.log_path = path  # type: ignore[attr-defined]
    return proc


def _log(proc: subprocess.Popen[bytes]) -> str:
    path = Path(proc.log_path)  # type: ignore[attr-defined]
    text = path.read_text(errors="replace")
    path.unlink()
    return text


def stop_worker(proc: subprocess.Popen[bytes]) -> str:
    """Stop a worker as an operator would (SIGTERM); its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return _log(proc)


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no goodbye, a batch in hand neither published nor acknowledged."""
    proc.kill()
    proc.wait(timeout=WAIT)
    _log(proc)


def ledger(server: RunningServer, model: str) -> list[dict[str, Any]]:
    page = server.http().get(f"/v1/models/{model}/predictions", params={"limit": 1000}).json()
    return list(page["predictions"])


# -- Redis --------------------------------------------------------------------------------------


def xadd_all(stream: str, payloads: Sequence[bytes]) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        pipe = r.pipeline()
        for p in payloads:
            pipe.xadd(stream, {"data": p})
        pipe.execute()
    finally:
        r.close()


def xread_docs(stream: str) -> list[dict[str, Any]]:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        return [orjson.loads(fields[b"data"]) for _, fields in r.xrange(stream)]
    finally:
        r.close()


def group_done(stream: str, group: str) -> bool:
    """Whether the group has every entry delivered and acknowledged."""
    r = redis.Redis.from_url(REDIS_URL)
    try:
        for g in r.xinfo_groups(stream):
            if g["name"].decode() == group:
                return bool(g["pending"] == 0 and g["lag"] == 0)
        return False
    finally:
        r.close()


@needs_redis
def test_redis_records_are_scored_like_direct_predictions(
    iris: RunningServer, iris_frame: Any, iris_pipeline: Any, names: str
) -> None:
    records = iris_records(iris_frame, 40)
    xadd_all(f"{names}:in", [orjson.dumps(r) for r in records])
    port = free_port()
    worker = start_worker(
        iris,
        "iris",
        *("--broker", REDIS_URL, "--input", f"{names}:in", "--output", f"{names}:out"),
        *("--id-field", "ref", "--batch", "7", "--metrics-port", str(port)),
    )
    try:
        wait_for("all results", lambda: len(xread_docs(f"{names}:out")) == len(records))
        wait_for("the group to be drained", lambda: group_done(f"{names}:in", "modelport"))

        def metrics() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.TransportError:
                return ""

        wait_for("the lag metric", lambda: "modelport_stream_lag 0.0" in metrics())
        text = metrics()
        assert f'modelport_stream_processed_total{{outcome="scored"}} {len(records)}.0' in text
        assert "modelport_stream_pending 0.0" in text
    finally:
        err = stop_worker(worker)
    assert worker.returncode == 0, err
    out = xread_docs(f"{names}:out")
    expected = iris_pipeline.predict(
        iris_frame[IRIS_COLUMNS].sample(40, replace=True, random_state=7)
    )
    by_ref = {doc["id"]: doc for doc in out}
    assert [by_ref[f"r{i}"]["prediction"] for i in range(40)] == list(expected)
    assert all(doc["model"] == "iris" and doc["version"] == 1 for doc in out)
    assert len({doc["record_id"] for doc in out}) == 40
    assert all(doc["record_id"].startswith(f"redis:{names}:in:") for doc in out)
    # The ledger has each prediction once, under the record's stream id as request id.
    rows = ledger(iris, "iris")
    assert sorted(r["request_id"] for r in rows) == sorted(doc["record_id"] for doc in out)
    assert {r["id"] for r in rows} == {doc["prediction_id"] for doc in out}
    assert xread_docs(f"{names}:in:dead") == []


@needs_redis
def test_a_killed_worker_leaves_exactly_one_result_per_record(
    iris: RunningServer, iris_frame: Any, names: str
) -> None:
    n = 300
    xadd_all(f"{names}:in", [orjson.dumps(r) for r in iris_records(iris_frame, n)])
    common = ("--broker", REDIS_URL, "--input", f"{names}:in", "--output", f"{names}:out")
    common += ("--id-field", "ref")
    first = start_worker(
        iris, "iris", *common, "--consumer", "one", "--batch", "5", "--concurrency", "2"
    )
    try:
        wait_for("some results", lambda: len(xread_docs(f"{names}:out")) >= 20)
    finally:
        kill_worker(first)
    assert len(xread_docs(f"{names}:out")) < n, "the worker finished before it was killed"
    # A second consumer takes over what the first left pending (XAUTOCLAIM) and the rest.
    second = start_worker(iris, "iris", *common, "--consumer", "two", "--claim-idle", "0.5")
    try:
        wait_for("the group to be drained", lambda: group_done(f"{names}:in", "modelport"))
    finally:
        err = stop_worker(second)
    assert second.returncode == 0, err
    out = xread_docs(f"{names}:out")
    assert len(out) == n
    assert len({doc["record_id"] for doc in out}) == n
    rows = ledger(iris, "iris")
    assert len(rows) == n
    assert {r["request_id"] for r in rows} == {doc["record_id"] for doc in out}
    assert {r["id"] for r in rows} == {doc["prediction_id"] for doc in out}


class _Crash(Exception):
    """The worker "dies" after scoring, before publishing (injected at the sink boundary)."""


class _CrashingSink:
    async def publish(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        raise _Crash


@needs_redis
def test_records_scored_but_never_acked_are_not_scored_again(
    iris: RunningServer, iris_frame: Any, names: str
) -> None:
    from modelport.streams.brokers import RedisBroker

    xadd_all(f"{names}:in", [orjson.dumps(r) for r in iris_records(iris_frame, 12)])

    async def consume(consumer: str, crash: bool) -> None:
        broker = RedisBroker(REDIS_URL)
        headers = {"Authorization": f"Bearer {iris.admin_key}"}
        try:
            source = await broker.source(f"{names}:in", "g", consumer, claim_idle_seconds=0)
            sink = _CrashingSink() if crash else await broker.sink(f"{names}:out")
            dead = await broker.sink(f"{names}:dead")
            job = StreamJob("iris", id_field="ref")
            async with httpx.AsyncClient(base_url=iris.url, headers=headers) as http:
                worker = StreamWorker(job, source, http, sink=sink, dead_letter=dead)
                await worker.process(await source.read(100, 1.0))
        finally:
            await broker.close()

    with pytest.raises(_Crash):
        asyncio.run(consume("a", crash=True))
    assert len(ledger(iris, "iris")) == 12  # scored and logged, not published, not acked
    asyncio.run(consume("b", crash=False))  # takes over a's pending records
    out = xread_docs(f"{names}:out")
    assert len(out) == 12
    rows = ledger(iris, "iris")
    assert len(rows) == 12  # the server answered the redelivered records from the ledger
    assert {r["id"] for r in rows} == {doc["prediction_id"] for doc in out}
    assert group_done(f"{names}:in", "g")


@needs_redis
def test_poisoned_records_are_dead_lettered_and_the_rest_flow(
    iris: RunningServer, iris_frame: Any, iris_pipeline: Any, names: str
) -> None:
    good = iris_records(iris_frame, 4)
    payloads = [
        orjson.dumps(good[0]),
        b"{not json",
        orjson.dumps({**good[1], "sepal_length": "wide"}),
        orjson.dumps([1, 2, 3]),
        orjson.dumps({**good[2], "model": "no-such-model"}),
        orjson.dumps(good[3]),
    ]
    xadd_all(f"{names}:in", payloads)
    worker = start_worker(
        iris,
        "iris",
        *("--broker", REDIS_URL, "--input", f"{names}:in", "--output", f"{names}:out"),
        *("--id-field", "ref", "--model-field", "model"),
    )
    try:
        wait_for("the group to be drained", lambda: group_done(f"{names}:in", "modelport"))
    finally:
        err = stop_worker(worker)
    assert worker.returncode == 0, err
    out = xread_docs(f"{names}:out")
    assert sorted(doc["id"] for doc in out) == ["r0", "r3"]
    dead = xread_docs(f"{names}:in:dead")
    assert [d["payload"] for d in dead] == [p.decode() for p in payloads[1:5]]
    kinds = [(d["kind"], d["status"]) for d in dead]
    assert kinds[:2] == [("not_json", None), ("invalid_input", 422)]
    assert kinds[2] == ("not_object", None)
    assert kinds[3][1] == 404 and "no-such-model" in dead[3]["reason"]
    assert dead[1]["details"][0]["field"] == "sepal_length"
    assert len(ledger(iris, "iris")) == 2


@needs_redis
def test_results_go_to_a_database_table_once_per_record(
    iris: RunningServer, iris_frame: Any, iris_pipeline: Any, names: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from modelport.store import normalize_url
    from modelport.streams.worker import TableSink

    db = POSTGRES_URL or f"sqlite:///{tmp_path / 'results.db'}"
    table = names.replace("-", "_")
    records = iris_records(iris_frame, 25)
    xadd_all(f"{names}:in", [orjson.dumps(r) for r in records])
    args = ("--broker", REDIS_URL, "--input", f"{names}:in", "--db", db, "--table", table)
    worker = start_worker(iris, "iris", *args, "--id-field", "ref", "--batch", "10")
    engine = sa.create_engine(normalize_url(db))
    try:
        wait_for("the group to be drained", lambda: group_done(f"{names}:in", "modelport"))
        err = stop_worker(worker)
        assert worker.returncode == 0, err
        sink = TableSink(db, table)  # the table exists: this opens it, typed
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sink.table)).mappings().all()
        assert len(rows) == 25
        sample = iris_frame[IRIS_COLUMNS].sample(25, replace=True, random_state=7)
        expected = iris_pipeline.predict(sample)
        by_key = {r["key"]: r for r in rows}
        assert [by_key[f"r{i}"]["prediction"] for i in range(25)] == list(expected)
        assert {r["prediction_id"] for r in rows} == {r["id"] for r in ledger(iris, "iris")}
        # Writing the same record ids again changes nothing.
        again = [(r["record_id"], {"model": "iris", "prediction": "changed"}) for r in rows]
        asyncio.run(sink.publish(again))
        sink.close()
        with engine.connect() as conn:
            count = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
            changed = conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE prediction_id IS NULL")
            ).scalar()
        assert (count, changed) == (25, 0)
    finally:
        if worker.poll() is None:
            stop_worker(worker)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


@needs_redis
def test_learning_mode_feeds_each_record_once_as_an_observation(
    server: RunningServer, names: str
) -> None:
    mp = server.client()
    mp.create_from_algorithm(
        "trend",
        "online_linear_regression",
        schema={"fields": [{"name": "x", "type": "number"}]},
        target="y",
    )
    rows = [{"x": float(x), "y": 2.0 * x} for x in range(30)]
    xadd_all(f"{names}:in", [orjson.dumps(r) for r in rows] + [orjson.dumps({"x": 1.0})])
    worker = start_worker(
        server,
        "trend",
        *("--broker", REDIS_URL, "--input", f"{names}:in", "--output", f"{names}:out"),
        "--learn",
    )
    try:
        wait_for("the group to be drained", lambda: group_done(f"{names}:in", "modelport"))
    finally:
        err = stop_worker(worker)
    assert worker.returncode == 0, err
    status = server.http().get("/v1/models/trend/learning").json()
    assert status["observations"] == 30
    out = xread_docs(f"{names}:out")
    assert len({doc["observation_id"] for doc in out}) == 30
    dead = xread_docs(f"{names}:in:dead")
    assert len(dead) == 1 and dead[0]["status"] == 422
    assert dead[0]["details"][0]["field"] == "y"


# -- NATS JetStream -----------------------------------------------------------------------------


async def _nats(action: Callable[[Any], Any]) -> Any:
    nc = await nats.connect(NATS_URL)
    try:
        return await action(nc.jetstream())
    finally:
        await nc.drain()


async def _nats_docs(subject: str, stream: str, expected: int) -> list[dict[str, Any]]:
    """The messages on ``subject`` (an ephemeral consumer reads them): once ``expected`` have
    come (or the wait is over), whatever else is there."""

    async def read(js: Any) -> list[dict[str, Any]]:
        sub = await js.pull_subscribe(subject, stream=stream)
        docs: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT
        while True:
            enough = len(docs) >= expected or time.monotonic() > deadline
            try:
                msgs = await sub.fetch(100, timeout=1.0)
            except asyncio.TimeoutError:  # nats-py raises it, or its subclass, when none came
                if enough:
                    break
                continue
            docs += [orjson.loads(m.data) for m in msgs]
            for m in msgs:
                await m.ack()
        await sub.unsubscribe()
        return docs

    docs: list[dict[str, Any]] = await _nats(read)
    return docs


@pytest.fixture
def jetstream() -> Iterator[str]:
    """A JetStream stream of this test's own (its subjects: NAME.>), deleted afterwards."""
    name = f"mptest{uuid.uuid4().hex[:10]}"

    async def create(js: Any) -> None:
        await js.add_stream(name=name, subjects=[f"{name}.>"])

    async def delete(js: Any) -> None:
        await js.delete_stream(name)

    asyncio.run(_nats(create))
    yield name
    asyncio.run(_nats(delete))


def _nats_publish(subject: str, payloads: Sequence[bytes]) -> None:
    async def publish(js: Any) -> None:
        for p in payloads:
            await js.publish(subject, p)

    asyncio.run(_nats(publish))


def _nats_drained(stream: str, durable: str) -> bool:
    async def info(js: Any) -> Any:
        return await js.consumer_info(stream, durable)

    try:
        got = asyncio.run(_nats(info))
    except Exception:
        return False
    return bool(got.num_pending == 0 and got.num_ack_pending == 0)


@needs_nats
def test_nats_kill_and_restart_scores_every_record_once(
    iris: RunningServer, iris_frame: Any, iris_pipeline: Any, jetstream: str
) -> None:
    n = 200
    records = iris_records(iris_frame, n)
    _nats_publish(f"{jetstream}.in", [orjson.dumps(r) for r in records])
    args = ("--broker", NATS_URL, "--input", f"{jetstream}.in", "--output", f"{jetstream}.out")
    opts = ("--id-field", "ref", "--ack-wait", "1", "--group", "scorer")
    first = start_worker(iris, "iris", *args, *opts, "--batch", "5", "--concurrency", "2")
    try:
        wait_for("some results", lambda: len(ledger(iris, "iris")) >= 20)
    finally:
        kill_worker(first)
    assert len(ledger(iris, "iris")) < n, "the worker finished before it was killed"
    second = start_worker(iris, "iris", *args, *opts)
    try:
        wait_for("the consumer to be drained", lambda: _nats_drained(jetstream, "scorer"))
    finally:
        err = stop_worker(second)
    assert second.returncode == 0, err
    out = asyncio.run(_nats_docs(f"{jetstream}.out", jetstream, n))
    assert len(out) == n
    assert len({doc["record_id"] for doc in out}) == n
    expected = iris_pipeline.predict(
        iris_frame[IRIS_COLUMNS].sample(n, replace=True, random_state=7)
    )
    by_ref = {doc["id"]: doc["prediction"] for doc in out}
    assert [by_ref[f"r{i}"] for i in range(n)] == list(expected)
    rows = ledger(iris, "iris")
    assert len(rows) == n
    assert {r["id"] for r in rows} == {doc["prediction_id"] for doc in out}


@needs_nats
def test_nats_poisoned_record_is_dead_lettered(
    iris: RunningServer, iris_frame: Any, jetstream: str
) -> None:
    good = iris_records(iris_frame, 2)
    payloads = [orjson.dumps(good[0]), b"\xff\xfe not json", orjson.dumps(good[1])]
    _nats_publish(f"{jetstream}.in", payloads)
    args = ("--broker", NATS_URL, "--input", f"{jetstream}.in", "--output", f"{jetstream}.out")
    worker = start_worker(iris, "iris", *args, "--id-field", "ref")
    try:
        wait_for("the consumer to be drained", lambda: _nats_drained(jetstream, "modelport"))
    finally:
        err = stop_worker(worker)
    assert worker.returncode == 0, err
    out = asyncio.run(_nats_docs(f"{jetstream}.out", jetstream, 2))
    assert sorted(doc["id"] for doc in out) == ["r0", "r1"]
    dead = asyncio.run(_nats_docs(f"{jetstream}.in.dead", jetstream, 1))
    assert len(dead) == 1 and dead[0]["kind"] == "not_json"
    assert dead[0]["record_id"] == f"nats:{jetstream}:2"


@needs_redis
def test_a_worker_refused_by_the_server_stops_with_one_line(
    iris: RunningServer, names: str
) -> None:
    xadd_all(f"{names}:in", [b'{"sepal_length": 1}'])
    command = [sys.executable, "-m", "modelport.cli", "stream", "iris", "--broker", REDIS_URL]
    command += ["--input", f"{names}:in", "--url", iris.url, "--key", "wrong"]
    done = subprocess.run(command, capture_output=True, timeout=WAIT, env=os.environ.copy())
    assert done.returncode == 1
    assert b"refused the key (401)" in done.stderr
    assert xread_docs(f"{names}:in:dead") == []  # nothing dead-lettered, nothing acked


@needs_redis
def test_an_unavailable_server_is_retried_not_dead_lettered(
    iris: RunningServer, iris_frame: Any, names: str
) -> None:
    """The server answers 503 and then refuses connections before it comes back (a fake
    transport in front of the real server, injected into the worker's HTTP client)."""
    from modelport.streams.brokers import RedisBroker
    from modelport.streams.worker import StreamMetrics

    xadd_all(f"{names}:in", [orjson.dumps(r) for r in iris_records(iris_frame, 5)])
    failures = [
        httpx.Response(503, json={"error": {"code": "unavailable", "message": "down"}}),
        httpx.ConnectError("connection refused"),
        httpx.Response(503, json={"error": {"code": "unavailable", "message": "down"}}),
    ]
    headers = {"Authorization": f"Bearer {iris.admin_key}"}

    async def consume() -> StreamMetrics:
        real = httpx.AsyncClient(base_url=iris.url, headers=headers)

        async def flaky(request: httpx.Request) -> httpx.Response:
            if failures:
                failure = failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            forwarded = await real.send(
                real.build_request(
                    request.method,
                    request.url.path,
                    content=request.content,
                    headers=dict(request.headers),
                )
            )
            await forwarded.aread()
            return httpx.Response(forwarded.status_code, content=forwarded.content)

        broker = RedisBroker(REDIS_URL)
        metrics = StreamMetrics()
        try:
            source = await broker.source(f"{names}:in", "g", "a")
            sink, dead = await broker.sink(f"{names}:out"), await broker.sink(f"{names}:dead")
            transport = httpx.MockTransport(flaky)
            async with httpx.AsyncClient(base_url=iris.url, transport=transport) as http:
                job = StreamJob("iris", id_field="ref", concurrency=1)
                worker = StreamWorker(
                    job, source, http, sink=sink, dead_letter=dead, metrics=metrics
                )
                await worker.process(await source.read(100, 1.0))
        finally:
            await broker.close()
            await real.aclose()
        return metrics

    metrics = asyncio.run(consume())
    assert failures == []
    assert sorted(doc["id"] for doc in xread_docs(f"{names}:out")) == [f"r{i}" for i in range(5)]
    assert xread_docs(f"{names}:dead") == []
    retried = metrics.registry.get_sample_value(
        "modelport_stream_retried_total", {"what": "server"}
    )
    assert retried == 3
    assert len(ledger(iris, "iris")) == 5


def test_brokers_are_chosen_by_url_and_an_unknown_one_is_one_line(tmp_path: Path) -> None:
    from modelport.streams.brokers import KafkaBroker, NatsBroker, RedisBroker, open_broker

    assert isinstance(open_broker("redis://127.0.0.1:6379/0"), RedisBroker)
    assert isinstance(open_broker("nats://127.0.0.1:4222"), NatsBroker)
    kafka = open_broker("kafka://127.0.0.1:9092,127.0.0.2:9092")
    assert isinstance(kafka, KafkaBroker) and kafka.bootstrap == "127.0.0.1:9092,127.0.0.2:9092"
    command = [sys.executable, "-m", "modelport.cli", "stream", "iris"]
    done = subprocess.run(
        [*command, "--broker", "amqp://127.0.0.1", "--input", "x"],
        capture_output=True,
        timeout=WAIT,
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1].startswith("error: unknown broker")


@needs_nats
def test_a_subject_no_stream_holds_is_one_line() -> None:
    subject = f"mptest{uuid.uuid4().hex[:10]}.nowhere"
    command = [sys.executable, "-m", "modelport.cli", "stream", "iris", "--broker", NATS_URL]
    done = subprocess.run([*command, "--input", subject], capture_output=True, timeout=WAIT)
    assert done.returncode == 1
    assert "no JetStream stream holds the subject" in done.stderr.decode()
