"""The inbound consumer: Kafka records in -> pipeline -> offsets committed.

A plain aiokafka consumer owned by `InboundWorker` (no FastStream on this hot
path: its per-fetch middleware, parsing and header decoding cost 10-14 % of the
service's CPU at a trickle). No auto-commit: the explicit offsets of a batch are
committed (in order) only after `IngestPipeline.process` returned, i.e. after
every canonical, rejected and quarantine message was confirmed by the broker
(acks=all) and PostgreSQL committed. Bad *input* never raises (it becomes a
rejection); after an infrastructure failure the same batch is worked again after
a pause. Consumer lag is measured by the runtime's `LagMonitor` from the group's
committed offsets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from ioc_shared.platform.logging import get_logger
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from ingest.domain import Inbound
from ingest.handlers import IngestPipeline, Prepared, Submitted
from ingest.messages import H_REPLAY_ID
from ingest.settings import IngestSettings

log = get_logger(__name__)

Fetched = list[tuple[TopicPartition, list[ConsumerRecord[Any, Any]]]]


def inbound_from_record(record: ConsumerRecord[Any, Any]) -> Inbound:
    """An `Inbound` of a consumed record; headers as bytes (a null value becomes b"")."""
    headers = record.headers or ()
    replay = False
    all_bytes = True
    for k, v in headers:
        if v.__class__ is not bytes:
            all_bytes = False
        if k == H_REPLAY_ID:
            replay = True
    if not all_bytes or headers.__class__ is not tuple:
        headers = tuple((k, v if isinstance(v, bytes) else bytes(v or b"")) for k, v in headers)
    return Inbound(record.value, headers, f"{record.topic}:{record.partition}:{record.offset}",
                   record.key, "kafka", replay)


class InboundWorker:
    """Consumes the inbound topic and works its batches one after the other; commits in order.

    Three tasks: the consume loop only fetches (`getmany`) and queues what it got
    (waiting while `max_queued` records are pending), so it keeps draining the
    fetcher while a batch is worked (aiokafka does not fetch again from a broker
    while records of its partitions are still buffered); the worker takes
    everything queued (whole fetches, up to `max_records`) as its next batch; the
    committer commits the explicit next offsets of worked batches, at most once
    per `commit_interval_s`.

    Offsets: after `IngestPipeline.process` returned (every output confirmed with
    acks=all, PostgreSQL committed), the batch's next offsets go to the ordered
    committer; a batch is never committed before the ones fetched earlier. An
    infrastructure failure does not commit: the same records are worked again after
    a pause (as a redelivery: same origins, same event ids). Bad input never raises.
    On rebalance (partitions revoked) and on shutdown the queue is worked off and the
    pending commits are flushed first; commits for partitions no longer assigned are
    dropped (their records are redelivered to the new owner, effects are idempotent).
    """

    def __init__(self, pipeline: IngestPipeline, *, max_records: int, retry_backoff_s: float,
                 max_queued: int | None = None, commit_interval_s: float = 0.0,
                 lookahead: int = 1) -> None:
        self.pipeline = pipeline
        self.max_records = max(1, max_records)
        self.max_queued = max_queued or 2 * self.max_records
        self.retry_backoff_s = retry_backoff_s
        self.commit_interval_s = commit_interval_s
        self._queue: collections.deque[Fetched] = collections.deque()
        self._queued = 0
        # Taken from the queue, decisions asked for, not yet submitted (in fetch order).
        self._ahead: collections.deque[_Batch] = collections.deque()
        self.lookahead = lookahead
        self._consumer: Any = None
        self._changed = asyncio.Condition()
        self._busy = False
        self._closing = False
        self._pending: dict[TopicPartition, int] = {}
        self._committing = False
        self._commit_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consume_task: asyncio.Task[None] | None = None
        self._owned: AIOKafkaConsumer | None = None   # the consumer `start_consuming` made

    # --- the consumer -----------------------------------------------------------

    async def start_consuming(self, settings: IngestSettings, topic: str) -> None:
        """Join the consumer group on `topic` and start fetching (manual commits only)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=settings.consumer_group,
            client_id=f"ingest-{settings.instance_id}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.max_records,
            fetch_min_bytes=settings.fetch_min_bytes, fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024)
        consumer.subscribe([topic], listener=_FlushOnRevoke(self))
        await consumer.start()
        self._consumer = self._owned = consumer
        self.start()
        self._consume_task = asyncio.create_task(
            self._consume(consumer, settings.batch_timeout_ms), name="ingest-consumer")

    async def _consume(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("inbound fetch failed; retrying", error=repr(exc))
                await asyncio.sleep(self.retry_backoff_s)
                continue
            if fetched:
                await self.put(list(fetched.items()))

    # --- queue, work, commits ----------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name="ingest-inbound-worker"),
                           asyncio.create_task(self._commit_loop(), name="ingest-committer")]

    async def put(self, fetched: Fetched, consumer: Any = None) -> None:
        """Queue fetched records (per partition, in fetch order); waits while the queue is full."""
        self.start()
        count = sum(len(records) for _, records in fetched)
        async with self._changed:
            await self._changed.wait_for(lambda: self._closing or self._queued < self.max_queued)
            if self._closing:
                return   # not worked, not committed: redelivered after restart
            if consumer is not None:
                self._consumer = consumer
            self._queue.append(fetched)
            self._queued += count
            self._changed.notify_all()

    def _take(self) -> _Batch:
        batch: list[ConsumerRecord[Any, Any]] = []
        offsets: dict[TopicPartition, int] = {}
        while self._queue:
            fetched = self._queue[0]
            size = sum(len(records) for _, records in fetched)
            if batch and len(batch) + size > self.max_records:
                break
            self._queue.popleft()
            self._queued -= size
            for tp, records in fetched:
                if records:
                    batch += records
                    offsets[tp] = records[-1].offset + 1
        return _Batch([inbound_from_record(r) for r in batch], offsets)

    async def _work(self) -> None:
        """Submit batches in fetch order, at most one awaiting its broker confirmations.

        While batch N's confirmations are on their way, batch N+1 is decided, claimed and
        handed to the producer (after N's outputs, so per-partition order holds); then N is
        completed and its offsets go to the committer. If N fails, N+1 is not committed
        either: both are worked again, in order, as redeliveries. The batch after N+1 is
        taken ahead and its decisions asked for as soon as N+1's are (a decision worker
        then goes on to it while this process records and publishes N+1).
        """
        in_flight: _Batch | None = None
        while True:
            async with self._changed:
                if in_flight is None:
                    await self._changed.wait_for(lambda: bool(self._queue) or bool(self._ahead))
                current = (self._ahead.popleft() if self._ahead
                           else self._take() if self._queue else None)
                self._busy = True
                self._changed.notify_all()
            try:
                previous, in_flight = in_flight, None
                if current is None:
                    # Nothing new to start: finish what is in flight.
                    assert previous is not None
                    await self._finish(previous)
                    continue
                try:
                    if current.prepared is None:
                        await self._prepare(current)
                    await self._take_ahead()
                    current.submitted = await self._submit(current)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("inbound batch failed; it will be redelivered", error=repr(exc),
                              records=len(current.inbounds))
                    if previous is not None:
                        await self._finish(previous)
                    await self._redo([current])
                    continue
                in_flight = current
                if previous is not None and not await self._finish(previous, later=current):
                    in_flight = None   # worked again (and committed) after `previous`
            finally:
                async with self._changed:
                    self._busy = in_flight is not None
                    self._changed.notify_all()

    async def _take_ahead(self) -> None:
        """Take the next queued records as the next batches (up to `lookahead`) and ask for
        their decisions now."""
        while True:
            async with self._changed:
                if len(self._ahead) >= self.lookahead or not self._queue or self._closing:
                    return
                ahead = self._take()
                self._ahead.append(ahead)
                self._changed.notify_all()
            try:
                await self._prepare(ahead)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # asked for again when it is submitted
                log.warning("deciding ahead failed", error=repr(exc))
            if ahead not in self._ahead:   # dropped meanwhile (shutdown): never submitted
                ahead.discard()
                return

    async def _prepare(self, batch: _Batch) -> None:
        batch.discard()   # what an earlier, failed attempt left
        # The batch's consumer span: the parent of records sent without a trace context.
        batch.span = self.pipeline.tracer.start_span(
            "ingest inbound batch", kind=SpanKind.CONSUMER,
            attributes={"messaging.batch.message_count": len(batch.inbounds)})
        with trace.use_span(batch.span, end_on_exit=False):
            batch.prepared = await self.pipeline.prepare(batch.inbounds)

    async def _submit(self, batch: _Batch) -> Submitted:
        if batch.prepared is None:
            await self._prepare(batch)
        prepared, batch.prepared = batch.prepared, None
        assert prepared is not None and batch.span is not None
        try:
            with trace.use_span(batch.span, end_on_exit=False):
                return await self.pipeline.submit(prepared)
        finally:
            batch.span.end()
            batch.span = None

    async def _confirmed(self, batch: _Batch) -> bool:
        assert batch.submitted is not None
        try:
            await self.pipeline.complete(batch.submitted)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("inbound batch not confirmed; it will be redelivered", error=repr(exc),
                      records=len(batch.inbounds))
            return False

    async def _finish(self, batch: _Batch, *, later: _Batch | None = None) -> bool:
        """Complete a submitted batch and commit it. If it failed, work it again, and `later`
        (submitted after it, so not to be committed before it) with it; then False."""
        if await self._confirmed(batch):
            self._commit(batch.offsets)
            return True
        redo = [batch]
        if later is not None:
            await self._confirmed(later)   # settled either way: worked again below
            redo.append(later)
        await self._redo(redo)
        return False

    async def _redo(self, batches: list[_Batch]) -> None:
        """Work batches again, one after the other, until each succeeded (same origins: a
        redelivery, same event ids); nothing later is committed meanwhile."""
        for batch in batches:
            batch.submitted = None
            while True:
                await asyncio.sleep(self.retry_backoff_s)
                try:
                    await self.pipeline.complete(await self._submit(batch))
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("inbound batch failed; it will be redelivered", error=repr(exc),
                              records=len(batch.inbounds))
            self._commit(batch.offsets)

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Durable: hand the next offsets to the committer (fetch order, per partition)."""
        self._pending.update(offsets)
        self._commit_wake.set()

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
            return not self._queue and not self._ahead and not self._busy \
                and not self._committing and not self._pending

        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(idle)
        except TimeoutError:
            log.warning("inbound flush timed out", queued=self._queued)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop fetching, leave what is queued for redelivery, finish the batch being worked,
        commit it, then leave the group."""
        if self._consume_task is not None:
            self._consume_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consume_task
            self._consume_task = None
        async with self._changed:
            self._closing = True
            dropped = self._queued + sum(len(a.inbounds) for a in self._ahead)
            self._queue.clear()
            self._queued = 0
            while self._ahead:
                self._ahead.popleft().discard()
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
        if self._owned is not None:
            consumer, self._owned = self._owned, None
            await consumer.stop()


@dataclass(slots=True, eq=False)
class _Batch:
    inbounds: list[Inbound]
    offsets: dict[TopicPartition, int]
    prepared: Prepared | None = None
    span: Span | None = None
    submitted: Submitted | None = None

    def discard(self) -> None:
        if self.prepared is not None:
            self.prepared.discard()
            self.prepared = None
        if self.span is not None:
            self.span.end()
            self.span = None


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: InboundWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Bounded: the group's rebalance does not wait for ever (unflushed work is redelivered).
        await self.worker.flush(timeout=5.0)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


def inbound_worker(settings: IngestSettings, pipeline: IngestPipeline) -> InboundWorker:
    return InboundWorker(pipeline, max_records=settings.batch_max_records,
                         retry_backoff_s=settings.retry_backoff_s,
                         commit_interval_s=settings.commit_interval_ms / 1000,
                         # In-process deciding gains nothing from asking ahead.
                         lookahead=settings.decision_lookahead
                         if settings.decision_worker_count() > 0 else 0)
