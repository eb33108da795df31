"""Streams: score records arriving on a message stream, or learn from them, without loss.

A :class:`StreamWorker` reads batches of records from a :class:`Source` (a Redis stream's
consumer group, a NATS JetStream durable consumer, a Kafka consumer group: see
:mod:`modelport.streams.brokers`), sends each to a modelport server over HTTP (predict, or
observations with ``learn``), publishes the results to a :class:`Sink` (an output stream, or a
database table: :class:`TableSink`), sends bad records to a dead-letter sink with the reason,
and only then acknowledges the batch.

Delivery is at least once from the stream and exactly once in effect: each request carries the
record's stream id as its ``Idempotency-Key``, so a record read again after a crash gets the
answer the server stored the first time (no second prediction, no second observation), and
sinks write each record id once. Transient failures (the server answering 429/5xx, a refused
connection, a broker or database hiccup) are retried with backoff; they never dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import orjson

from ..errors import StreamError

log = logging.getLogger("modelport.streams")
T = TypeVar("T")

#: Statuses that mean "try again later" rather than "this record is bad".
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses that mean the worker itself is misconfigured: it stops rather than dead-letter all.
_FATAL = frozenset({401, 403})
#: What the bodies the worker posts are (a body without a Content-Type is refused).
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Record:
    """One record read from a stream: its id there, its payload, and what acking it needs."""

    id: str
    payload: bytes | None
    token: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Lag:
    """How far behind a consumer is: records not yet delivered, delivered but not acked."""

    behind: int | None
    pending: int | None


class Source(Protocol):
    async def read(self, count: int, wait_seconds: float) -> list[Record]:
        """Up to ``count`` records, waiting up to ``wait_seconds`` for the first."""

    async def ack(self, records: Sequence[Record]) -> None:
        """Mark records done: they are not delivered again."""

    async def lag(self) -> Lag: ...

    async def close(self) -> None: ...


class Sink(Protocol):
    async def publish(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Write (record id, document) pairs; the same record id twice leaves one result."""


class Transient(Exception):
    """A failure worth retrying: the record is not at fault."""


class _Stopped(Exception):
    """The worker was stopped while a step was waiting to be retried."""


class TableSink:
    """Results as rows of a database table (created when missing), one per record id:
    the record id is the primary key and a repeat is ignored (ON CONFLICT DO NOTHING)."""

    def __init__(self, url: str, table: str) -> None:
        import sqlalchemy as sa

        from ..store import normalize_url

        self.engine = sa.create_engine(normalize_url(url), pool_pre_ping=True)
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("record_id", sa.String(300), primary_key=True),
            sa.Column("key", sa.String(200), nullable=True),  # the record's own id field
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("version", sa.Integer, nullable=True),
            sa.Column("prediction_id", sa.String(36), nullable=True),
            sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("probabilities", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("observation_id", sa.BigInteger, nullable=True),
            sa.Column("ts", sa.Float, nullable=False),
        )
        self.table.create(self.engine, checkfirst=True)

    def _insert(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        import sqlalchemy as sa

        now = time.time()
        rows = [
            {
                "record_id": rid,
                "key": None if doc.get("id") is None else str(doc["id"]),
                "model": doc["model"],
                "version": doc.get("version"),
                "prediction_id": doc.get("prediction_id"),
                "prediction": doc.get("prediction"),
                "probabilities": doc.get("probabilities"),
                "observation_id": doc.get("observation_id"),
                "ts": now,
            }
            for rid, doc in items
        ]
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect in ("postgresql", "sqlite"):
                from sqlalchemy.dialects import postgresql, sqlite

                insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
                conn.execute(insert(self.table).on_conflict_do_nothing(), rows)
                return
            known = set(
                conn.execute(
                    sa.select(self.table.c.record_id).where(
                        self.table.c.record_id.in_([r["record_id"] for r in rows])
                    )
                ).scalars()
            )
            fresh = [r for r in rows if r["record_id"] not in known]
            if fresh:
                conn.execute(self.table.insert(), fresh)

    async def publish(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        import sqlalchemy.exc

        try:
            await asyncio.to_thread(self._insert, items)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
            raise Transient(f"database: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()


class StreamMetrics:
    """The worker's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.processed = Counter(
            "modelport_stream_processed",
            "Records handled and acknowledged, by outcome (scored, learned, dead_lettered)",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "modelport_stream_dead_lettered",
            "Records sent to the dead-letter stream, by reason kind",
            ["reason"],
            registry=self.registry,
        )
        self.retried = Counter(
            "modelport_stream_retried",
            "Retries after transient failures, by what failed (server, sink)",
            ["what"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "modelport_stream_lag",
            "Records in the stream not yet delivered to the consumer group",
            registry=self.registry,
        )
        self.pending = Gauge(
            "modelport_stream_pending",
            "Records delivered to the consumer group and not yet acknowledged",
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Expose the metrics at ``http://host:port/metrics``; the server, to shut down."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


@dataclass
class StreamJob:
    """What a worker does with each record."""

    model: str
    learn: bool = False
    id_field: str | None = None  # a field carried to the result, not sent to the model
    unit_field: str | None = None  # sent as X-Unit-ID (sticky arms), not as an input
    model_field: str | None = None  # a record may name its model here
    batch: int = 100
    concurrency: int = 16
    wait_seconds: float = 1.0
    max_backoff_seconds: float = 5.0


@dataclass
class _Outcome:
    record: Record
    result: dict[str, Any] | None = None
    dead: dict[str, Any] | None = None


class StreamWorker:
    """Consume a source until stopped: score or learn, publish, dead-letter, acknowledge."""

    def __init__(
        self,
        job: StreamJob,
        source: Source,
        http: httpx.AsyncClient,
        *,
        sink: Sink | None,
        dead_letter: Sink,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.job, self.source, self.http = job, source, http
        self.sink, self.dead_letter = sink, dead_letter
        self.metrics = metrics or StreamMetrics()
        self.stopping = asyncio.Event()
        self._lag_at = 0.0

    async def run(self) -> None:
        """Process batches until :attr:`stopping` is set (the batch in hand is finished)."""
        job = self.job
        try:
            while not self.stopping.is_set():
                records = await self._retry(
                    "source", lambda: self.source.read(job.batch, job.wait_seconds)
                )
                if records:
                    await self.process(records)
                await self._update_lag()
        except _Stopped:
            return

    async def process(self, records: Sequence[Record]) -> None:
        """Handle one batch: publish, dead-letter, then acknowledge it.

        Raises :class:`_Stopped` when stopped while retrying (nothing of the batch acked).
        """
        gate = asyncio.Semaphore(self.job.concurrency)

        async def one(record: Record) -> _Outcome:
            async with gate:
                return await self._handle(record)

        outcomes = await asyncio.gather(*(one(r) for r in records), return_exceptions=True)
        for o in outcomes:
            if isinstance(o, BaseException):
                raise o
        done = [o for o in outcomes if isinstance(o, _Outcome)]
        results = [(o.record.id, o.result) for o in done if o.result is not None]
        dead = [(o.record.id, o.dead) for o in done if o.dead is not None]
        sink = self.sink
        if results and sink is not None:
            await self._retry("sink", lambda: sink.publish(results))
        if dead:
            await self._retry("sink", lambda: self.dead_letter.publish(dead))
        await self._retry("source", lambda: self.source.ack(records))
        self.metrics.processed.labels("learned" if self.job.learn else "scored").inc(len(results))
        self.metrics.processed.labels("dead_lettered").inc(len(dead))
        for _, letter in dead:
            self.metrics.dead_lettered.labels(letter["kind"]).inc()

    async def _handle(self, record: Record) -> _Outcome:
        """The result or the dead letter of one record."""
        job = self.job
        if record.payload is None:
            return self._dead(record, "no_data", "the message has no data (or was deleted)")
        try:
            doc = orjson.loads(record.payload)
        except orjson.JSONDecodeError as exc:
            return self._dead(record, "not_json", f"the record is not JSON: {exc}")
        if not isinstance(doc, dict):
            return self._dead(record, "not_object", "the record is not a JSON object")
        model = job.model
        if job.model_field is not None and job.model_field in doc:
            model = str(doc.pop(job.model_field))
        key = doc.pop(job.id_field, None) if job.id_field else None
        unit = doc.pop(job.unit_field, None) if job.unit_field else None
        headers = {"Idempotency-Key": record.id[:200], "X-Request-ID": record.id[:200]}
        if unit is not None:
            headers["X-Unit-ID"] = str(unit)
        where = quote(model, safe="")
        if job.learn:
            path, body = f"/v1/models/{where}/observations", {"observations": [doc]}
        else:
            path, body = f"/v1/models/{where}/predict", {"inputs": [doc]}
        status, reply = await self._retry("server", lambda: self._post(path, body, headers))
        if status != 200:
            error = reply.get("error", {}) if isinstance(reply, dict) else {}
            reason = error.get("message") or f"HTTP {status}"
            details = error.get("details")
            return self._dead(record, error.get("code") or str(status), reason, status, details)
        result: dict[str, Any] = {"record_id": record.id, "model": model}
        if key is not None:
            result["id"] = key
        if job.learn:
            result["observation_id"] = reply["first_id"]
        else:
            result["version"] = reply["version"]
            result["prediction"] = reply["predictions"][0]
            result["prediction_id"] = reply["prediction_ids"][0]
            if "probabilities" in reply:
                result["probabilities"] = reply["probabilities"][0]
        return _Outcome(record, result=result)

    async def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any]:
        try:
            response = await self.http.post(
                path, content=orjson.dumps(body), headers={**headers, **_JSON}
            )
        except httpx.TransportError as exc:
            raise Transient(f"server unreachable: {exc!r}") from exc
        if response.status_code in _TRANSIENT:
            raise Transient(f"server answered {response.status_code}: {response.text[:200]}")
        if response.status_code in _FATAL:
            raise StreamError(
                f"the server refused the key ({response.status_code}): {response.text[:300]}"
            )
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    def _dead(
        self,
        record: Record,
        kind: str,
        reason: str,
        status: int | None = None,
        details: Any = None,
    ) -> _Outcome:
        payload = record.payload
        letter: dict[str, Any] = {
            "record_id": record.id,
            "kind": kind,
            "reason": reason,
            "status": status,
            "payload": payload.decode("utf-8", "replace") if payload is not None else None,
        }
        if details:
            letter["details"] = details
        log.warning("dead-lettered %s: %s", record.id, reason)
        return _Outcome(record, dead=letter)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await retry(what, attempt, self.stopping, self.metrics, self.job.max_backoff_seconds)

    async def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        try:
            lag = await self.source.lag()
        except Exception as exc:  # a metric is not worth stopping for
            log.debug("lag unavailable: %s", exc)
            return
        if lag.behind is not None:
            self.metrics.lag.set(lag.behind)
        if lag.pending is not None:
            self.metrics.pending.set(lag.pending)


async def retry(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    metrics: StreamMetrics,
    max_backoff_seconds: float = 5.0,
) -> T:
    """``attempt()`` until it does not fail transiently (backoff from 0.1 s, doubling);
    :class:`_Stopped` when ``stopping`` is set meanwhile."""
    delay = 0.1
    while True:
        try:
            return await attempt()
        except StreamError:
            raise
        except Exception as exc:
            if not _transient(exc):
                raise
            metrics.retried.labels(what).inc()
            log.warning("%s failed, retrying in %.1f s: %s", what, delay, exc)
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except asyncio.TimeoutError:
            delay = min(delay * 2, max_backoff_seconds)
            continue
        raise _Stopped


def _transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying: ours, or a broker's connection trouble."""
    if isinstance(exc, Transient | ConnectionError | OSError | asyncio.TimeoutError):
        return True
    module = type(exc).__module__
    # The broker clients' connection errors (redis.exceptions.ConnectionError, nats.errors.*,
    # aiokafka.errors.KafkaConnectionError ...), without importing the optional packages.
    return module.split(".")[0] in ("redis", "nats", "aiokafka", "kafka") and (
        "Connection" in type(exc).__name__
        or "Timeout" in type(exc).__name__
        or "NoServers" in type(exc).__name__
        or "NoStreamResponse" in type(exc).__name__
    )


async def run_stream(
    *,
    broker_url: str,
    input_name: str,
    group: str,
    consumer: str,
    job: StreamJob,
    server_url: str,
    key: str | None,
    output: str | None = None,
    db_url: str | None = None,
    table: str | None = None,
    dead_letter: str | None = None,
    metrics_port: int | None = None,
    claim_idle_seconds: float = 60.0,
    ack_wait_seconds: float = 30.0,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Open the broker, the sinks and the metrics endpoint, and run a worker until ``stop``."""
    from .brokers import open_broker

    broker = open_broker(broker_url)
    table_sink: TableSink | None = None
    metrics = StreamMetrics()
    metrics_server = metrics.serve(metrics_port) if metrics_port is not None else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    stop = stop or asyncio.Event()
    try:
        try:  # a broker that is not up yet is waited for, like one that goes away later
            source = await retry(
                "source",
                lambda: broker.source(
                    input_name,
                    group,
                    consumer,
                    claim_idle_seconds=claim_idle_seconds,
                    ack_wait_seconds=ack_wait_seconds,
                ),
                stop,
                metrics,
            )
        except _Stopped:
            return
        sink: Sink | None = None
        if db_url is not None and table is not None:
            table_sink = TableSink(db_url, table)
            sink = table_sink
        elif output is not None:
            sink = await broker.sink(output)
        dead = await broker.sink(dead_letter or broker.dead_letter_name(input_name))
        async with httpx.AsyncClient(base_url=server_url, headers=headers, timeout=60) as http:
            worker = StreamWorker(job, source, http, sink=sink, dead_letter=dead, metrics=metrics)
            worker.stopping = stop
            if on_ready is not None:
                on_ready()
            try:
                await worker.run()
            finally:
                await source.close()
    finally:
        await broker.close()
        if table_sink is not None:
            table_sink.close()
        if metrics_server is not None:
            metrics_server.shutdown()
