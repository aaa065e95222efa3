"""Kafka plumbing: broker factory with safe defaults, explicit topic declaration, headers.

Safe defaults: producers wait for acks from all in-sync replicas and are
idempotent; consumers never auto-commit (subscribers must state an ack policy
other than ACK_FIRST, see `DURABLE`); topics are created explicitly with their
partitions and retention, never by the broker on first use. Clients back off
while the broker is away (`client_options`, and `_throttle_failed_metadata_updates`).

Every client of the district cluster is made here (`make_broker`, `make_producer`,
`make_consumer`, `make_admin`, `make_client`, or `client_options` for the rest), so all
carry its security settings (`district_security`: SASL_SSL with SCRAM and a pinned CA,
mutual TLS; clear text only when chosen explicitly or in development mode).

`declare_topics` creates missing topics with their configs. It does not change
the configs of existing topics (an operator does, with `kafka-configs`), and it
refuses to add partitions to an existing topic: that moves keys to other
partitions and breaks per-key order. An operator who accepts that runs
`python -m ioc_shared.platform.kafka grow-partitions TOPIC N --i-understand-keys-move`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import OutOfOrderSequenceNumber, TopicAlreadyExistsError, UnknownProducerId
from aiokafka.producer.sender import SendProduceReqHandler
from aiokafka.producer.transaction_manager import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, PidAndEpoch
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from ioc_shared.contracts.envelope import Envelope
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE
from ioc_shared.contracts.topics import TopicSpec
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.security import KafkaSecurity
from ioc_shared.platform.settings import KafkaClientSettings
from ioc_shared.platform.telemetry import inject_trace_headers

log = get_logger(__name__)

# Backoff of aiokafka's own retries while the broker is unreachable.
RETRY_BACKOFF_MS = 500
_METADATA_BACKOFF_MAX_S = 5.0


async def _metadata_pause(seconds: float) -> None:
    """The pause after a failed metadata update (its own name, so a test can record it
    without replacing `asyncio.sleep` for everything else in the loop)."""
    await asyncio.sleep(seconds)


def _throttle_failed_metadata_updates() -> None:
    """Make aiokafka pause between failed metadata updates, growing to 5 s.

    aiokafka 0.14 has no `reconnect_backoff_ms`: a failed connection in a metadata
    update calls `force_metadata_update()`, which wakes the metadata task at once for
    another attempt that fails the same way, about 2,000 times a second per client
    while the broker is down (each a pair of error lines). `retry_backoff_ms` only
    paces the sender and fetcher, not this loop. Sleeping after a failed update, inside
    the update, paces every caller; a successful update resets the pause.
    """
    original = AIOKafkaClient._metadata_update
    if getattr(original, "_ioc_throttled", False):
        return

    @functools.wraps(original)
    async def throttled(self: Any, cluster_metadata: Any, topics: Any) -> Any:
        updated = await original(self, cluster_metadata, topics)
        if updated:
            self._ioc_metadata_pause = 0.0
            return updated
        pause = min(_METADATA_BACKOFF_MAX_S,
                    max(self._retry_backoff, 2 * getattr(self, "_ioc_metadata_pause", 0.0)))
        self._ioc_metadata_pause = pause
        await _metadata_pause(pause * random.uniform(0.8, 1.2))
        return updated

    throttled._ioc_throttled = True  # type: ignore[attr-defined]
    AIOKafkaClient._metadata_update = throttled


_throttle_failed_metadata_updates()

# Produce errors after which an idempotent producer's sequence state is worthless.
_LOST_SEQUENCE = (OutOfOrderSequenceNumber, UnknownProducerId)


def reset_producer_id(txn_manager: Any) -> None:
    """Forget an idempotent producer's id and sequence numbers: its sender asks the broker
    for a new producer id before the next batch, whose sequences start at 0 again."""
    txn_manager._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    txn_manager._sequence_numbers.clear()
    txn_manager._pid_waiter = asyncio.get_running_loop().create_future()


def _renew_producer_id_after_lost_sequence() -> None:
    """Let an idempotent producer recover from `OutOfOrderSequenceNumber`.

    After a broker restart with batches in the air, the broker can answer a batch with
    OutOfOrderSequenceNumber (or UnknownProducerId). aiokafka 0.14 fails that batch and
    keeps its producer id and sequence numbers, so every later batch to the partition
    fails the same way, for good: ingest stopped publishing after a broker SIGTERM.
    The Java client (KIP-360) gets a new producer id instead; so does this. The failed
    batch's sender sees the error and retries it (a retried batch may land twice:
    at-least-once, consumers dedupe by event id)."""
    original = SendProduceReqHandler.handle_response
    if getattr(original, "_ioc_renews", False):
        return

    @functools.wraps(original)
    def handle_response(self: Any, response: Any) -> Any:
        result = original(self, response)
        txn = self._sender._txn_manager
        if txn is None or txn.transactional_id is not None or not txn.has_pid():
            return result
        for _topic, partitions in response.topics:
            for info in partitions:
                if kafka_errors.for_code(info[1]) in _LOST_SEQUENCE:
                    log.warning("producer sequence lost on the broker; getting a new "
                                "producer id", error=kafka_errors.for_code(info[1]).__name__)
                    reset_producer_id(txn)
                    return result
        return result

    handle_response._ioc_renews = True  # type: ignore[attr-defined]
    SendProduceReqHandler.handle_response = handle_response


_renew_producer_id_after_lost_sequence()


_district_security: KafkaSecurity | None = None


def use_district_security(security: KafkaSecurity | None) -> None:
    """Make every later client of this process use `security` for the district cluster
    (the runtime does, from the service's settings, so `INGEST_KAFKA_SASL_USER` etc. work);
    None: read `IOC_KAFKA_*` again at the next client."""
    global _district_security
    _district_security = security


def district_security() -> KafkaSecurity:
    """The district cluster's security: the service's (`use_district_security`), else read
    once from the `IOC_KAFKA_*` environment (tools, benchmarks, tests)."""
    global _district_security
    if _district_security is None:
        _district_security = KafkaClientSettings().kafka_security()
    return _district_security


def _resilience_options() -> dict[str, Any]:
    return {"retry_backoff_ms": RETRY_BACKOFF_MS, "metadata_max_age_ms": 30_000,
            "request_timeout_ms": 30_000}


def client_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """Options every aiokafka client of the project takes: retries back off; metadata is
    refreshed every 30 s (not 5 min), so a broker back at a new address is found soon; the
    district cluster's security (or `security`, for another cluster)."""
    return {**_resilience_options(),
            **(security or district_security()).client_kwargs()}


def _decodable(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    headers = [(k, bytes(v or b"").decode("utf-8", "replace").encode())
               for k, v in record.headers or ()]
    return ConsumerRecord(record.topic, record.partition, record.offset, record.timestamp,
                          record.timestamp_type, record.key, record.value, record.checksum,
                          record.serialized_key_size, record.serialized_value_size, headers)


async def tolerant_parser(
    raw: ConsumerRecord[Any, Any] | tuple[ConsumerRecord[Any, Any], ...],
    original: Callable[[Any], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream decodes every header as UTF-8: one bad header byte would fail the
    message (or the whole batch) before the handler runs, and with a redelivering
    ack policy block its partition forever. Parse a sanitised copy instead, keeping
    the exact records (bytes for quarantine, offsets for commit and seek)."""
    try:
        return await original(raw)
    except UnicodeDecodeError:
        fixed = tuple(_decodable(r) for r in raw) if isinstance(raw, tuple) else _decodable(raw)
        message = await original(fixed)
        message.raw_message = raw
        return message


# Subscriber options for every data path: commit only after the handler
# returned (its effects are durable); on an unexpected error, seek back so the
# message is redelivered rather than skipped. Handlers turn bad *input* into
# rejections themselves, and the parser tolerates undecodable headers, so a
# poison message never reaches this path.
DURABLE: dict[str, Any] = {"ack_policy": AckPolicy.NACK_ON_ERROR, "auto_offset_reset": "earliest",
                           "parser": tolerant_parser}



_PRODUCER_DEFAULTS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 2,
                                      "max_batch_size": 256 * 1024, "compression_type": None}


def producer_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    return {**client_options(security), **_PRODUCER_DEFAULTS}


def consumer_options(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """Client options for consumers made directly with aiokafka (never auto-commit)."""
    return {**client_options(security), "enable_auto_commit": False}


def make_broker(bootstrap: str, *, service: str, tracer_provider: TracerProvider | None = None,
                metrics_registry: CollectorRegistry | None = None,
                security: KafkaSecurity | None = None, **kwargs: Any) -> KafkaBroker:
    middlewares: list[Any] = [KafkaTelemetryMiddleware(tracer_provider=tracer_provider)]
    if metrics_registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=metrics_registry,
                                                     app_name=service))
    options = {**_resilience_options(), **_PRODUCER_DEFAULTS, **kwargs}
    return KafkaBroker(
        bootstrap,
        client_id=service,
        allow_auto_create_topics=False,
        middlewares=middlewares,
        # FastStream turns this into the same aiokafka options `client_options` gives.
        security=(security or district_security()).broker_security(),
        # A stdlib logger, so FastStream's lines go through the JSON handler; its
        # per-message "Received"/"Processed" lines are DEBUG (they cost on the hot path).
        logger=logging.getLogger(f"ioc.broker.{service}"),
        log_level=logging.DEBUG,
        **options,
    )


def make_producer(bootstrap: str, *, client_id: str, security: KafkaSecurity | None = None,
                  **kwargs: Any) -> AIOKafkaProducer:
    """A producer with the kit's defaults (acks from all replicas, idempotent); `kwargs` win."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id,
                            **{**producer_options(security), **kwargs})


def make_consumer(*topics: str, bootstrap: str, security: KafkaSecurity | None = None,
                  **kwargs: Any) -> AIOKafkaConsumer:
    """A plain aiokafka consumer (reads, positions, lag); never auto-commits."""
    if kwargs.get("enable_auto_commit"):
        raise ValueError("auto-commit is never used: commit after effects are durable")
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                            **{**consumer_options(security), **kwargs})


def make_admin(bootstrap: str, *, client_id: str, security: KafkaSecurity | None = None,
               **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id,
                               **{**client_options(security), **kwargs})


def make_client(bootstrap: str, *, client_id: str, security: KafkaSecurity | None = None,
                **kwargs: Any) -> AIOKafkaClient:
    """A bare client (metadata probes)."""
    return AIOKafkaClient(bootstrap_servers=bootstrap, client_id=client_id,
                          **{**client_options(security), **kwargs})


class RepartitionRefused(RuntimeError):
    """An existing topic has fewer partitions than declared; growing it moves keys."""


def partitions_to_add(specs: Iterable[TopicSpec], existing: Mapping[str, int], *,
                      allow_repartition: bool) -> dict[str, tuple[int, int]]:
    """{topic: (partitions it has, partitions declared)} of the existing topics that have
    fewer than declared; `RepartitionRefused` unless `allow_repartition`."""
    short = {s.name: (existing[s.name], s.partitions) for s in specs
             if s.name in existing and existing[s.name] < s.partitions}
    if short and not allow_repartition:
        detail = ", ".join(f"{n} has {have}, declared {want}"
                           for n, (have, want) in sorted(short.items()))
        raise RepartitionRefused(
            f"topics with fewer partitions than declared: {detail}. Adding partitions "
            "moves keys to other partitions (per-key order breaks); if that is accepted: "
            "python -m ioc_shared.platform.kafka grow-partitions TOPIC N "
            "--i-understand-keys-move")
    return short


async def declare_topics(bootstrap: str, specs: Iterable[TopicSpec], *,
                         replication: int = 1, allow_repartition: bool = False) -> list[str]:
    """Create missing topics with their partitions and configs; returns the names created.

    Existing topics are left as they are: their configs are not updated, and a topic
    with fewer partitions than declared is refused (`RepartitionRefused`), because more
    partitions send keys elsewhere and break per-key order, unless `allow_repartition`
    (the operator's `grow-partitions` command). Never shrinks a topic (Kafka cannot);
    more partitions than declared are accepted.
    """
    specs = list({s.name: s for s in specs}.values())
    admin = make_admin(bootstrap, client_id="ioc-topic-declarer")
    await admin.start()
    created: list[str] = []
    try:
        names = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in names]
        if missing:
            result = await admin.create_topics(
                [NewTopic(s.name, s.partitions, replication, topic_configs=s.config())
                 for s in missing], validate_only=False)
            for name, code, *_ in getattr(result, "topic_errors", []) or []:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise RuntimeError(f"cannot create topic {name}: error code {code}")
            created = [s.name for s in missing]
        present = [s for s in specs if s.name in names]
        short: dict[str, tuple[int, int]] = {}
        if present:
            described = await admin.describe_topics([s.name for s in present])
            existing = {t["topic"]: len(t["partitions"]) for t in described}
            short = partitions_to_add(present, existing, allow_repartition=allow_repartition)
            if short:
                await admin.create_partitions({n: NewPartitions(want)
                                               for n, (_, want) in short.items()})
                log.warning("partitions added; keys moved", topics=sorted(short))
        # New topics and partitions: ready once they answer (see _leaders_ready).
        wanted = {s.name: s.partitions for s in missing} | {n: want for n, (_, want) in short.items()}
        if wanted:
            await _leaders_ready(bootstrap, admin, wanted)
        if created:
            log.info("topics declared", created=created)
    finally:
        await admin.close()
    return created


async def _leaders_ready(bootstrap: str, admin: AIOKafkaAdminClient, wanted: Mapping[str, int],
                         timeout_s: float = 15.0) -> None:
    """Wait (bounded) until the new topics or partitions (`wanted`: topic -> partitions)
    are in the metadata and answer offset requests: until their leaders are in place, a
    consumer started at once logs NotLeaderForPartition errors."""
    topics = sorted(wanted)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    parts: list[TopicPartition] = []
    while loop.time() < deadline:
        described = await admin.describe_topics(topics)
        parts = [TopicPartition(t["topic"], p["partition"]) for t in described
                 if not t.get("error_code") for p in t["partitions"]]
        have = {t["topic"]: len(t["partitions"]) for t in described if not t.get("error_code")}
        if all(have.get(name, 0) >= n for name, n in wanted.items()):
            break
        await asyncio.sleep(0.1)
    consumer = make_consumer(bootstrap=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # One metadata request for all of them (not one per topic, 0.5 s apart).
        await consumer._client.set_topics(topics)
        # Retried quietly by aiokafka while the leaders are not there yet.
        await asyncio.wait_for(consumer.end_offsets(parts), max(0.1, deadline - loop.time()))
    except (TimeoutError, kafka_errors.KafkaError) as exc:
        log.warning("new topics not answering offset requests yet", error=type(exc).__name__)
    finally:
        await consumer.stop()


async def grow_partitions(bootstrap: str, topic: str, partitions: int) -> None:
    """Add partitions to an existing topic (the operator accepted that keys move)."""
    admin = make_admin(bootstrap, client_id="ioc-topic-declarer")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        have = len(described[0]["partitions"]) if described else 0
        if not described or described[0].get("error_code"):
            raise SystemExit(f"topic {topic} does not exist")
        if have >= partitions:
            raise SystemExit(f"topic {topic} already has {have} partitions")
        await admin.create_partitions({topic: NewPartitions(partitions)})
    finally:
        await admin.close()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m ioc_shared.platform.kafka grow-partitions TOPIC N --i-understand-keys-move`."""
    parser = argparse.ArgumentParser(prog="python -m ioc_shared.platform.kafka")
    commands = parser.add_subparsers(dest="command", required=True)
    grow = commands.add_parser("grow-partitions", help="add partitions to a keyed topic")
    grow.add_argument("topic")
    grow.add_argument("partitions", type=int)
    grow.add_argument("--bootstrap", default=None, help="default: IOC_KAFKA_BOOTSTRAP")
    grow.add_argument("--i-understand-keys-move", dest="confirmed", action="store_true",
                      help="required: keys hash to other partitions afterwards")
    args = parser.parse_args(argv)
    if not args.confirmed:
        parser.error("adding partitions moves keys to other partitions (per-key order breaks "
                     "across the change); pass --i-understand-keys-move to do it anyway")
    import os

    bootstrap = args.bootstrap or os.environ.get("IOC_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    asyncio.run(grow_partitions(bootstrap, args.topic, args.partitions))
    sys.stdout.write(f"{args.topic}: {args.partitions} partitions\n")


def retrieved_if_abandoned(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Mark a send's failure as seen even when nobody awaits the future any more (its batch
    failed on an earlier error and is worked again): asyncio would otherwise log "Future
    exception was never retrieved" as an error for each. An awaiter still gets the error."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


def envelope_headers(envelope: Envelope, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for an envelope: event id and type, W3C trace context of the current span."""
    headers = {H_EVENT_ID: str(envelope.event_id), H_EVENT_TYPE: envelope.type}
    if extra:
        headers.update(extra)
    inject_trace_headers(headers)
    return headers


def decode_headers(raw: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw or ():
        try:
            out[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
        except UnicodeDecodeError:
            out[k] = v.hex()
    return out


_WORDS = struct.Struct("<I")
_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (`Utils.murmur2`, the default partitioner's hash), exactly as
    `aiokafka.partitioner.murmur2` computes it but about 3x faster: whole little-endian
    words via `struct` and one 32-bit mask per step (property-tested against aiokafka's)."""
    length = len(data)
    h = 0x9747B28C ^ length
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]) if whole else ():
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    extra = length - whole
    if extra:
        if extra >= 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner picks for `key` among `partitions`."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


if __name__ == "__main__":  # pragma: no cover
    main()
