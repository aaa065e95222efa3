"""Target (a): the province's Kafka cluster, exactly once.

A transactional producer writes a poll's records and, in the same transaction, the next
source offset of each partition to a compacted cursor topic on the province's cluster
(KIP-618's approach: aiokafka can commit consumer offsets only on the cluster it writes to).
On start and after any failure the positions are read back with `read_committed`, so a
transaction either happened entirely (records and positions) or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from ioc_shared.contracts.topics import SYNC_PROVINCE_CHECKPOINTS, SYNC_PROVINCE_CURSOR
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.security import KafkaSecurity

from sync_province.domain import Batch, Stream, day_bounds_ms
from sync_province.targets import Confirm, Forwarding, LinkHealth, Refusal, Unreachable

log = get_logger(__name__)


async def _send_in_batches(producer: AIOKafkaProducer, topic: str, batch: Batch,
                           forwarding: Forwarding) -> list[asyncio.Future[Any]]:
    """A batch's records as whole record batches of its partition: one future per record
    batch instead of one per record (`send` costs about three times as much per record)."""
    sends: list[asyncio.Future[Any]] = []
    builder = producer.create_batch()
    for o in batch.outgoing:
        record = {"key": o.key, "value": o.value, "timestamp": o.timestamp_ms,
                  "headers": forwarding.headers(o, topic)}
        if builder.append(**record) is None:       # full: it goes, the next one starts
            builder.close()
            sends.append(await producer.send_batch(builder, topic, partition=batch.partition))
            builder = producer.create_batch()
            builder.append(**record)   # the first record always fits (even one over the size)
    if builder.record_count():
        builder.close()
        sends.append(await producer.send_batch(builder, topic, partition=batch.partition))
    return sends


class KafkaTarget:
    name = "kafka"
    holds_positions = True
    transactional = True

    def __init__(self, bootstrap: str, security: KafkaSecurity, prefix: str,
                 source_partitions: dict[str, int], replication: int = 1) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._prefix = prefix
        self._source_partitions = source_partitions       # source topic -> partitions
        self._replication = replication
        self.cursor_topic = f"{prefix}.{SYNC_PROVINCE_CURSOR.name}"
        self.checkpoint_topic = f"{prefix}.{SYNC_PROVINCE_CHECKPOINTS.name}"
        self._transactional_id = f"sync-province.{prefix}"
        self._producer: AIOKafkaProducer | None = None
        self._declared: set[str] = set()
        self.health = LinkHealth()

    def _kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self._bootstrap, **self._security.client_kwargs(),
                "request_timeout_ms": 10_000}

    def target_topic(self, stream: Stream) -> str:
        return f"{self._prefix}.{stream.contract_topic}"

    async def _declare(self, names: dict[str, tuple[int, dict[str, str]]]) -> None:
        missing = {n: v for n, v in names.items() if n not in self._declared}
        if not missing:
            return
        admin = AIOKafkaAdminClient(**self._kwargs(), client_id="sync-province-declare")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(n, p, self._replication, topic_configs=cfg)
                   for n, (p, cfg) in missing.items() if n not in existing]
            if new:
                result = await admin.create_topics(new)
                for name, code, *_ in getattr(result, "topic_errors", []) or []:
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise Unreachable(f"cannot create {name} at the province: error {code}")
        finally:
            await admin.close()
        self._declared |= set(missing)

    async def start(self) -> None:
        try:
            await self._declare({
                self.cursor_topic: (1, SYNC_PROVINCE_CURSOR.config()),
                self.checkpoint_topic: (1, SYNC_PROVINCE_CHECKPOINTS.config())})
            producer = AIOKafkaProducer(**self._kwargs(), client_id="sync-province",
                                        transactional_id=self._transactional_id,
                                        enable_idempotence=True, acks="all", linger_ms=5,
                                        max_batch_size=512 * 1024)
            await producer.start()   # init_transactions: fences an older instance, aborts its open txn
        except (KafkaError, OSError) as exc:
            raise Unreachable(f"kafka: {type(exc).__name__}") from exc
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    def _cursor_key(self, topic: str, partition: int) -> bytes:
        return f"{self.name}|{topic}|{partition}".encode()

    async def positions(self) -> dict[tuple[str, int], int]:
        """The committed source positions, read back from the cursor topic (read_committed)."""
        consumer = AIOKafkaConsumer(**self._kwargs(), group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed")
        try:
            await consumer.start()
            tp = TopicPartition(self.cursor_topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            found: dict[tuple[str, int], int] = {}
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    for r in records:
                        if r.value is None:
                            continue
                        _, topic, partition = r.key.decode().rsplit("|", 2)
                        found[(topic, int(partition))] = int(orjson.loads(r.value)["next_offset"])
            return found
        except (KafkaError, OSError) as exc:
            raise Unreachable(f"kafka: {type(exc).__name__}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def deliver(self, batches: list[Batch], confirm: Confirm, *,
                      record_positions: bool = True) -> list[Refusal]:
        try:
            if self._producer is None:
                await self.start()
            producer = self._producer
            assert producer is not None
            await self._declare({self.target_topic(b.stream):
                                 (self._source_partitions.get(b.stream.source_topic, 1), {})
                                 for b in batches if b.outgoing})
            await producer.begin_transaction()
            forwarding = Forwarding()
            try:
                sends = []
                for batch in batches:
                    # Same partition as at the source: order per key is kept as it was.
                    sends += await _send_in_batches(producer, self.target_topic(batch.stream),
                                                    batch, forwarding)
                    if record_positions:
                        sends.append(await producer.send(self.cursor_topic, orjson.dumps(
                            {"next_offset": batch.next_offset}),
                            key=self._cursor_key(batch.stream.source_topic, batch.partition)))
                # Every write acknowledged before the commit: aiokafka commits a transaction
                # even when one of its batches failed (seen: NotLeaderForPartition on a new
                # topic), which would commit the positions without those records.
                # The share-log entry is written meanwhile, before the commit: a shipment is
                # never unlogged (one that fails after it is logged again when retried).
                await asyncio.gather(asyncio.gather(*sends), confirm(batches))
                await producer.commit_transaction()
            except BaseException as exc:
                forwarding.end(exc)
                with contextlib.suppress(Exception):
                    await producer.abort_transaction()
                raise
            forwarding.end()
        except (KafkaError, OSError) as exc:
            self.health.failed(type(exc).__name__)
            await self.stop()
            raise Unreachable(f"kafka: {type(exc).__name__}") from exc
        self.health.ok()
        return []

    async def day_event_ids(self, stream: Stream, day: date) -> set[str]:
        """Event ids at the province of records whose (preserved) timestamp is in `day`."""
        start, end = day_bounds_ms(day)
        topic = self.target_topic(stream)
        consumer = AIOKafkaConsumer(**self._kwargs(), group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed")
        ids: set[str] = set()
        await consumer.start()
        try:
            if topic not in self._declared and topic not in await consumer.topics():
                return ids
            tps = [TopicPartition(topic, p)
                   for p in range(self._source_partitions.get(stream.source_topic, 1))]
            if not tps:
                return ids
            consumer.assign(tps)
            starts = await consumer.offsets_for_times({tp: start for tp in tps})
            ends = await consumer.end_offsets(tps)
            todo = {}
            for tp in tps:
                found = starts.get(tp)
                if found is None:
                    continue
                consumer.seek(tp, found.offset)
                todo[tp] = ends[tp]
            while todo:
                polled = await consumer.getmany(*todo, timeout_ms=500)
                for tp, records in polled.items():
                    for r in records:
                        if r.timestamp >= end:
                            todo.pop(tp, None)
                            break
                        event_id = dict(r.headers).get("ioc-event-id")
                        if event_id:
                            ids.add(event_id.decode())
                for tp in list(todo):
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
            return ids
        finally:
            await consumer.stop()

    async def send_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        producer = AIOKafkaProducer(**self._kwargs(), client_id="sync-province-checkpoint",
                                    acks="all", enable_idempotence=True)
        try:
            await producer.start()
            await producer.send_and_wait(self.checkpoint_topic, orjson.dumps(checkpoint),
                                         key=str(checkpoint["district"]).encode())
        except (KafkaError, OSError) as exc:
            raise Unreachable(f"kafka: {type(exc).__name__}") from exc
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
