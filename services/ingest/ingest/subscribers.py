"""The inbound batch subscriber: Kafka records in -> pipeline -> acknowledged.

Ack policy: MANUAL, no auto-commit. The consume loop hands records to an
`InboundWorker`; the explicit offsets of a batch are committed (in order) only
after `IngestPipeline.process` returned, i.e. after every canonical, rejected
and quarantine message was confirmed by the broker (acks=all) and PostgreSQL
committed. Bad *input* never raises (it becomes a rejection); after an
infrastructure failure the same batch is worked again after a pause.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from ioc_shared.platform.logging import get_logger

from ingest.domain import Inbound
from ingest.handlers import IngestPipeline
from ingest.outgoing import H_REPLAY_ID
from ingest.settings import IngestSettings

log = get_logger(__name__)
# No auto-commit, no commit by FastStream: `InboundWorker` commits explicit offsets itself.
MANUAL_COMMIT: dict[str, Any] = {"ack_policy": AckPolicy.MANUAL, "auto_offset_reset": "earliest"}


def inbound_from_record(record: ConsumerRecord[Any, Any]) -> Inbound:
    headers = tuple((k, v if isinstance(v, bytes) else bytes(v or b"")) for k, v in record.headers or ())
    return Inbound(
        value=record.value, headers=headers, key=record.key,
        origin=f"{record.topic}:{record.partition}:{record.offset}", channel="kafka",
        replay=any(k == H_REPLAY_ID for k, _ in headers))


def _decodable_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    headers = [(k, (v or b"").decode("utf-8", "replace").encode()) for k, v in record.headers or ()]
    return ConsumerRecord(record.topic, record.partition, record.offset, record.timestamp,
                          record.timestamp_type, record.key, record.value, record.checksum,
                          record.serialized_key_size, record.serialized_value_size, headers)


async def tolerant_batch_parser(
        records: tuple[ConsumerRecord[Any, Any], ...],
        original: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's parser decodes every header as UTF-8 and would fail the whole batch on one
    bad header (not UTF-8, or a null value): then parse a sanitized copy, but keep the exact
    records (bytes for quarantine, offsets to commit). A batch must never fail to parse: with
    manual commits it would be skipped, not redelivered."""
    try:
        return await original(records)
    except (UnicodeDecodeError, AttributeError):
        message = await original(tuple(_decodable_headers(r) for r in records))
        message.raw_message = records
        return message


async def whole_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """The handler reads the raw records: skip FastStream's per-message JSON decoding and hand
    it the message itself as its body. (A `KafkaMessage` context parameter instead would be
    resolved by fast_depends in a worker thread, one thread hop per batch.)"""
    return message


class InboundWorker:
    """Works inbound batches one after the other, behind the consume loop; commits in order.

    The consume loop only hands records over (waiting while `max_queued` records are
    pending), so it keeps draining the fetcher while a batch is worked: aiokafka does not
    fetch again from a broker while records of its partitions are still buffered, so a
    loop that waited for the work held records back one or two cycles. The worker takes
    everything queued (whole fetched batches, up to `max_records`) as its next batch.

    Offsets: after `IngestPipeline.process` returned (every output confirmed with
    acks=all, PostgreSQL committed), the batch's explicit next offsets go to an ordered
    committer; a batch is never committed before the ones fetched earlier. An
    infrastructure failure does not commit: the same records are worked again after a
    pause (as a redelivery: same origins, same event ids). Bad input never raises.
    On rebalance (partitions revoked) and on shutdown the queue is worked off and the
    pending commits are flushed first; commits for partitions no longer assigned are
    dropped (their records are redelivered to the new owner, effects are idempotent).
    """

    def __init__(self, pipeline: IngestPipeline, *, max_records: int, retry_backoff_s: float,
                 max_queued: int | None = None, commit_interval_s: float = 0.0) -> None:
        self.pipeline = pipeline
        self.max_records = max(1, max_records)
        self.max_queued = max_queued or 2 * self.max_records
        self.retry_backoff_s = retry_backoff_s
        self.commit_interval_s = commit_interval_s
        self._queue: collections.deque[tuple[ConsumerRecord[Any, Any], ...]] = collections.deque()
        self._queued = 0
        self._consumer: Any = None
        self._changed = asyncio.Condition()
        self._busy = False
        self._closing = False
        self._pending: dict[TopicPartition, int] = {}
        self._committing = False
        self._commit_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name="ingest-inbound-worker"),
                           asyncio.create_task(self._commit_loop(), name="ingest-committer")]

    async def put(self, records: tuple[ConsumerRecord[Any, Any], ...], consumer: Any) -> None:
        """Called by the consume loop; waits while the queue is full."""
        self.start()
        async with self._changed:
            await self._changed.wait_for(lambda: self._closing or self._queued < self.max_queued)
            if self._closing:
                return   # not worked, not committed: redelivered after restart
            self._consumer = consumer
            self._queue.append(records)
            self._queued += len(records)
            self._changed.notify_all()

    def _take(self) -> list[ConsumerRecord[Any, Any]]:
        batch: list[ConsumerRecord[Any, Any]] = []
        while self._queue and (not batch or len(batch) + len(self._queue[0]) <= self.max_records):
            records = self._queue.popleft()
            self._queued -= len(records)
            batch += records
        return batch

    async def _work(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._queue))
                batch = self._take()
                self._busy = True
                self._changed.notify_all()
            try:
                inbounds = [inbound_from_record(r) for r in batch]
                while True:
                    try:
                        await self.pipeline.process(inbounds)
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.error("inbound batch failed; it will be redelivered", error=repr(exc),
                                  records=len(batch))
                        await asyncio.sleep(self.retry_backoff_s)
                # Durable: hand the next offsets to the committer (fetch order, per partition).
                for r in batch:
                    self._pending[TopicPartition(r.topic, r.partition)] = r.offset + 1
                self._commit_wake.set()
            finally:
                async with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            if not self._pending:
                continue
            offsets, self._pending = self._pending, {}
            self._committing = True
            try:
                consumer = self._consumer
                assigned = consumer.assignment() if consumer is not None else set()
                offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
                if offsets:
                    await consumer.commit(offsets)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not committed: those records are redelivered (idempotent effects).
                log.warning("offset commit failed; records will be redelivered", error=repr(exc))
            finally:
                async with self._changed:
                    self._committing = False
                    self._changed.notify_all()
            if self.commit_interval_s > 0:
                # Offsets of the batches worked meanwhile go together in the next commit.
                await asyncio.sleep(self.commit_interval_s)

    async def flush(self, timeout: float = 30.0) -> None:
        """Work off the queue and commit everything worked (rebalance, shutdown)."""
        if not self._tasks:
            return

        def idle() -> bool:
            return not self._queue and not self._busy and not self._committing \
                and not self._pending

        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(idle)
        except TimeoutError:
            log.warning("inbound flush timed out", queued=self._queued)

    async def close(self, timeout: float = 30.0) -> None:
        async with self._changed:
            self._closing = True
            dropped = sum(len(r) for r in self._queue)
            self._queue.clear()
            self._queued = 0
            self._changed.notify_all()
        if dropped:
            log.info("inbound records left for redelivery", records=dropped)
        await self.flush(timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: InboundWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Bounded: the group's rebalance does not wait for ever (unflushed work is redelivered).
        await self.worker.flush(timeout=5.0)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


def register_subscribers(broker: KafkaBroker, settings: IngestSettings, inbound_topic: str,
                         pipeline: IngestPipeline) -> InboundWorker:
    worker = InboundWorker(pipeline, max_records=settings.batch_max_records,
                           retry_backoff_s=settings.retry_backoff_s,
                           commit_interval_s=settings.commit_interval_ms / 1000)

    @broker.subscriber(
        inbound_topic, batch=True, group_id=settings.consumer_group,
        max_records=settings.batch_max_records, batch_timeout_ms=settings.batch_timeout_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_min_bytes=settings.fetch_min_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms, parser=tolerant_batch_parser, decoder=whole_message,
        listener=_FlushOnRevoke(worker), **MANUAL_COMMIT)  # type: ignore[untyped-decorator]
    async def on_inbound_batch(batch: Any) -> None:
        message: KafkaMessage = batch
        records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message
        if records:
            await worker.put(records, message.consumer)

    return worker
