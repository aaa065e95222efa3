"""The producer side of ingest: the sink that hands built messages to the broker, in order.

What the messages contain is built in `ingest.messages` (pure).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from ioc_shared.platform.kafka import murmur2, retrieved_if_abandoned
from ioc_shared.platform.telemetry import inject_trace_headers
from opentelemetry.context import Context

from ingest.messages import Outgoing, TraceHeaders


class Sink(Protocol):
    async def enqueue(self, messages: Sequence[Outgoing]) -> list[Awaitable[Any]]:
        """Hand the messages to the producer in order; the awaitables complete on confirmation."""
        ...


class _Pending:
    """Records for one topic partition, handed to the producer together, and the future
    their confirmation resolves. `single`: one message too large for a record batch."""

    __slots__ = ("builder", "future", "partition", "single", "topic")

    def __init__(self, builder: Any, topic: str, partition: int, future: asyncio.Future[Any],
                 single: Outgoing | None = None) -> None:
        self.builder = builder
        self.topic = topic
        self.partition = partition
        self.future = future
        self.single = single


class KafkaSink:
    """Appends messages to record batches per topic partition and hands those to the producer
    in order, from a task of its own; the awaitables complete on the broker's confirmation.

    Records are appended to one record batch per topic partition (the producer's own
    batch builder, partitioned with Kafka's default murmur2 so keys land where any Kafka
    client would put them): far cheaper per record than `send()`. aiokafka keeps one
    produce request in flight per broker and `send_batch` waits while a batch of the same
    partition is still queued: handed over from here, that wait never holds up the caller,
    and records enqueued meanwhile join the batches not yet handed over (fewer, larger
    requests). Per partition, records reach the producer in `enqueue` order.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        # topic -> (the producer's partition set it was sorted from, sorted partitions)
        self._partitions: dict[str, tuple[frozenset[int] | set[int], list[int]]] = {}
        self._open: dict[tuple[str, int], _Pending] = {}      # still taking records
        self._queue: collections.deque[_Pending] = collections.deque()   # hand-over order
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _partitions_of(self, topic: str) -> list[int]:
        """The topic's partitions as the producer's metadata has them now: an operator's
        `grow-partitions` is followed as soon as the producer refreshes its metadata (keys
        then land where any Kafka client puts them), not cached for the process's life."""
        current = self._producer.client.cluster.partitions_for_topic(topic)
        if current is None:
            current = await self._producer.partitions_for(topic)   # fetches the metadata
        known = self._partitions.get(topic)
        if known is None or known[0] != current:
            known = self._partitions[topic] = (frozenset(current), sorted(current))
        return known[1]

    async def send_all(self, messages: Sequence[Outgoing]) -> None:
        """Send every message and return once the broker confirmed all of them."""
        futures = await self.enqueue(messages)
        if futures:
            await asyncio.gather(*futures)

    async def enqueue(self, messages: Sequence[Outgoing]) -> list[Awaitable[Any]]:
        """Append the messages; returns the confirmations to await (without waiting)."""
        producer = self._producer
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._hand_over(), name="ingest-sink")
        used: dict[int, _Pending] = {}
        # murmur2 is pure Python; a record's canonical and shared copies share the key.
        hashes: dict[bytes, int] = {}
        known = {topic: await self._partitions_of(topic) for topic in {m[0] for m in messages}}
        open_ = self._open
        for m in messages:
            # Unpacked once: cheaper than reading four fields by name.
            topic, value, key, headers = m
            partitions = known[topic]
            if key is None:
                partition = int(self._partitioner(None, partitions, partitions))
            else:
                digest = hashes.get(key)
                if digest is None:
                    digest = hashes[key] = murmur2(key) & 0x7FFFFFFF
                partition = partitions[digest % len(partitions)]   # as Kafka's default partitioner
            target = (topic, partition)
            pending = open_.get(target)
            if pending is None or pending.builder.append(
                    key=key, value=value, timestamp=None, headers=headers) is None:
                # A new batch (the full one, if any, stays queued before it).
                pending = open_[target] = _Pending(producer.create_batch(), topic, partition,
                                                   retrieved_if_abandoned(loop.create_future()))
                self._queue.append(pending)
                if pending.builder.append(key=key, value=value, timestamp=None,
                                          headers=headers) is None:
                    # Larger than a whole batch: the producer sends it on its own, in turn.
                    pending.single = m
            used[id(pending)] = pending
            if pending.single is not None:
                del open_[target]
        self._wake.set()
        return [p.future for p in used.values()]

    async def _hand_over(self) -> None:
        producer = self._producer
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                pending = self._queue.popleft()
                target = (pending.topic, pending.partition)
                if self._open.get(target) is pending:
                    del self._open[target]      # no more records: it is handed over now
                try:
                    m = pending.single
                    if m is None:
                        sent = await producer.send_batch(pending.builder, pending.topic,
                                                         partition=pending.partition)
                    else:
                        topic, value, key, headers = m
                        sent = await producer.send(topic, value, key=key,
                                                   partition=pending.partition, headers=headers)
                except asyncio.CancelledError:
                    pending.future.cancel()
                    raise
                except Exception as exc:
                    pending.future.set_exception(exc)
                    continue
                sent.add_done_callback(functools.partial(_settle, pending.future))

    async def close(self) -> None:
        """Stop handing over (pending confirmations fail: their batches are redelivered)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pending in self._queue:
            pending.future.cancel()
        self._queue.clear()
        self._open.clear()


def _settle(future: asyncio.Future[Any], sent: asyncio.Future[Any]) -> None:
    if future.done():
        return
    if sent.cancelled():
        future.cancel()
    elif (exc := sent.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_result(sent.result())


def trace_headers(context: Context | None) -> TraceHeaders:
    """W3C trace headers of `context` (the current one if None), computed once per record/batch."""
    carrier: dict[str, str] = {}
    inject_trace_headers(carrier, context=context)
    return [(k, v.encode()) for k, v in carrier.items()]


