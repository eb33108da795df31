"""The message brokers behind :mod:`modelport.streams.worker`: Redis Streams, NATS JetStream, Kafka.

Each gives a source (read a batch of records, acknowledge them, tell the lag) and a sink
(publish documents, each under its record id, so that publishing the same id twice leaves one
message where the broker can tell). The client libraries are extras (``modelport[redis]``,
``[nats]``, ``[kafka]``), imported when a broker of that kind is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..errors import StreamError
from .worker import Lag, Record, Sink, Source

#: The field of a Redis stream entry that holds the JSON document.
REDIS_FIELD = "data"
# Publish once per record id: remember the id (for `ttl` seconds) and add the entry, atomically.
_REDIS_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
end
return false
"""


def _needs(package: str, extra: str) -> StreamError:
    return StreamError(f"this broker needs {package}: pip install 'modelport[{extra}]'")


class RedisBroker:
    """Redis Streams: consumer groups (XREADGROUP, XACK), crashed consumers' pending entries
    claimed back (XAUTOCLAIM), and output entries added once per record id."""

    kind = "redis"

    def __init__(self, url: str, *, dedupe_seconds: int = 7 * 86400) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise _needs("redis", "redis") from None
        self.redis: Any = aioredis.from_url(url)
        self.dedupe_seconds = dedupe_seconds
        self._once: Any = self.redis.register_script(_REDIS_ONCE)

    def dead_letter_name(self, source: str) -> str:
        return f"{source}:dead"

    async def source(
        self, name: str, group: str, consumer: str, *, claim_idle_seconds: float = 60.0, **_: Any
    ) -> Source:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(name, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        return _RedisSource(self.redis, name, group, consumer, int(claim_idle_seconds * 1000))

    async def sink(self, name: str) -> Sink:
        return _RedisSink(self, name)

    async def close(self) -> None:
        await self.redis.aclose()


class _RedisSource:
    def __init__(self, redis: Any, stream: str, group: str, consumer: str, idle_ms: int) -> None:
        self.redis, self.stream, self.group, self.consumer = redis, stream, group, consumer
        self.idle_ms = idle_ms
        self._own_pending = True  # after a restart, this consumer's unacknowledged entries first
        self._claim_from = "0-0"

    def _records(self, entries: Sequence[Any]) -> list[Record]:
        out = []
        for entry_id, fields in entries:
            eid = entry_id.decode()
            payload = (fields or {}).get(REDIS_FIELD.encode())
            # An entry deleted while pending has no fields: it is acknowledged as bad input.
            out.append(Record(f"redis:{self.stream}:{eid}", payload, eid))
        return out

    async def read(self, count: int, wait_seconds: float) -> list[Record]:
        if self._own_pending:
            got = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: "0"}, count=count
            )
            entries = got[0][1] if got else []
            if entries:
                return self._records(entries)
            self._own_pending = False
        # Entries another consumer took and never acknowledged (it crashed) come back here.
        claimed = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.idle_ms, self._claim_from, count=count
        )
        self._claim_from = claimed[0].decode() if isinstance(claimed[0], bytes) else claimed[0]
        if claimed[1]:
            return self._records(claimed[1])
        got = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=count,
            block=max(1, int(wait_seconds * 1000)),
        )
        return self._records(got[0][1]) if got else []

    async def ack(self, records: Sequence[Record]) -> None:
        if records:
            await self.redis.xack(self.stream, self.group, *(r.token for r in records))

    async def lag(self) -> Lag:
        for group in await self.redis.xinfo_groups(self.stream):
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                lag = group.get("lag")
                return Lag(int(lag) if lag is not None else None, int(group["pending"]))
        return Lag(None, None)

    async def close(self) -> None:
        return None


class _RedisSink:
    def __init__(self, broker: RedisBroker, stream: str) -> None:
        self.broker, self.stream = broker, stream

    async def publish(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        async with self.broker.redis.pipeline(transaction=False) as pipe:
            for record_id, doc in items:
                await self.broker._once(
                    keys=[self.stream, f"{self.stream}:published:{record_id}"],
                    args=[orjson.dumps(doc), self.broker.dedupe_seconds],
                    client=pipe,
                )
            await pipe.execute()


class NatsBroker:
    """NATS JetStream: a durable pull consumer, explicit acks, and output messages published
    with ``Nats-Msg-Id`` set to the record id (JetStream drops repeats within the stream's
    duplicate window)."""

    kind = "nats"

    def __init__(self, url: str) -> None:
        try:
            import nats  # noqa: F401
        except ImportError:
            raise _needs("nats-py", "nats") from None
        self.url = url
        self.nc: Any = None
        self.js: Any = None

    async def _connect(self) -> Any:
        if self.js is None:
            import nats

            self.nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1)
            self.js = self.nc.jetstream()
        return self.js

    def dead_letter_name(self, source: str) -> str:
        return f"{source}.dead"

    async def source(
        self, name: str, group: str, consumer: str, *, ack_wait_seconds: float = 30.0, **_: Any
    ) -> Source:
        from nats.js.api import ConsumerConfig
        from nats.js.errors import NotFoundError

        js = await self._connect()
        try:
            stream = await js.find_stream_name_by_subject(name)
        except NotFoundError:
            raise StreamError(
                f"no JetStream stream holds the subject {name!r}: add one that does "
                f"(e.g. nats stream add --subjects '{name}')"
            ) from None
        sub = await js.pull_subscribe(
            name, durable=group, stream=stream, config=ConsumerConfig(ack_wait=ack_wait_seconds)
        )
        return _NatsSource(self, sub, stream)

    async def sink(self, name: str) -> Sink:
        return _NatsSink(await self._connect(), name)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()


class _NatsSource:
    def __init__(self, broker: NatsBroker, sub: Any, stream: str) -> None:
        self.broker, self.sub, self.stream = broker, sub, stream

    async def read(self, count: int, wait_seconds: float) -> list[Record]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            msgs = await self.sub.fetch(count, timeout=max(wait_seconds, 0.05))
        except (NatsTimeout, asyncio.TimeoutError):
            return []
        return [Record(f"nats:{self.stream}:{m.metadata.sequence.stream}", m.data, m) for m in msgs]

    async def ack(self, records: Sequence[Record]) -> None:
        for r in records:
            await r.token.ack()
        await self.broker.nc.flush()

    async def lag(self) -> Lag:
        info = await self.sub.consumer_info()
        return Lag(int(info.num_pending), int(info.num_ack_pending))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()


class _NatsSink:
    def __init__(self, js: Any, subject: str) -> None:
        self.js, self.subject = js, subject

    async def publish(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        await asyncio.gather(
            *(
                self.js.publish(self.subject, orjson.dumps(doc), headers={"Nats-Msg-Id": rid})
                for rid, doc in items
            )
        )


class KafkaBroker:
    """Apache Kafka (aiokafka): a consumer group committing offsets after each batch, output
    messages keyed by the record id (an idempotent producer; a compacted topic, or a reader
    that keeps the last message per key, sees one result per record)."""

    kind = "kafka"

    def __init__(self, url: str) -> None:
        try:
            import aiokafka  # noqa: F401
        except ImportError:
            raise _needs("aiokafka", "kafka") from None
        self.bootstrap = urlsplit(url).netloc
        self.producer: Any = None

    def dead_letter_name(self, source: str) -> str:
        return f"{source}.dead"

    async def source(self, name: str, group: str, consumer: str, **_: Any) -> Source:
        from aiokafka import AIOKafkaConsumer

        kafka = AIOKafkaConsumer(
            name,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            client_id=consumer,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await kafka.start()
        return _KafkaSource(kafka, name)

    async def sink(self, name: str) -> Sink:
        if self.producer is None:
            from aiokafka import AIOKafkaProducer

            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all"
            )
            await self.producer.start()
        return _KafkaSink(self.producer, name)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


class _KafkaSource:
    def __init__(self, kafka: Any, topic: str) -> None:
        self.kafka, self.topic = kafka, topic

    async def read(self, count: int, wait_seconds: float) -> list[Record]:
        batches = await self.kafka.getmany(timeout_ms=int(wait_seconds * 1000), max_records=count)
        return [
            Record(f"kafka:{m.topic}:{m.partition}:{m.offset}", m.value, m)
            for messages in batches.values()
            for m in messages
        ]

    async def ack(self, records: Sequence[Record]) -> None:
        from aiokafka import TopicPartition

        offsets: dict[Any, int] = {}
        for r in records:
            tp = TopicPartition(r.token.topic, r.token.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.token.offset + 1)
        if offsets:
            await self.kafka.commit(offsets)

    async def lag(self) -> Lag:
        assigned = list(self.kafka.assignment())
        if not assigned:
            return Lag(0, None)
        ends = await self.kafka.end_offsets(assigned)
        behind = 0
        for tp in assigned:
            behind += max(0, ends[tp] - await self.kafka.position(tp))
        return Lag(behind, None)

    async def close(self) -> None:
        await self.kafka.stop()


class _KafkaSink:
    def __init__(self, producer: Any, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def publish(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        await asyncio.gather(
            *(
                self.producer.send_and_wait(self.topic, orjson.dumps(doc), key=rid.encode())
                for rid, doc in items
            )
        )


def open_broker(url: str) -> RedisBroker | NatsBroker | KafkaBroker:
    """The broker a URL names: ``redis://``/``rediss://``, ``nats://``/``tls://``, ``kafka://``."""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisBroker(url)
    if scheme in ("nats", "tls"):
        return NatsBroker(url)
    if scheme == "kafka":
        return KafkaBroker(url)
    raise StreamError(
        f"unknown broker {url!r}: give a redis://, nats:// or kafka:// URL",
    )
