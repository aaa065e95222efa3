"""The inbound worker commits explicit offsets, in order, only after a batch's effects are durable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from ingest.domain import Inbound
from ingest.subscribers import InboundWorker


def rec(partition: int, offset: int, headers: list[tuple[str, bytes | None]] | None = None,
        ) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("in", partition, offset, 0, 0, b"k", b"v", None, 1, 1, headers or [])


class Consumer:
    def __init__(self, partitions: set[int]) -> None:
        self.assigned = {TopicPartition("in", p) for p in partitions}
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class Prepared:
    def __init__(self, inbounds: Sequence[Inbound]) -> None:
        self.inbounds = inbounds
        self.discarded = False

    def discard(self) -> None:
        self.discarded = True


class Pipeline:
    """Records what was worked; `fail_first` submissions raise, `unconfirmed_first` batches
    are submitted but their confirmations fail."""

    def __init__(self, fail_first: int = 0, unconfirmed_first: int = 0) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        self.tracer = TracerProvider().get_tracer("test")
        self.fail = fail_first
        self.unconfirmed = unconfirmed_first
        self.batches: list[list[str]] = []
        self.confirmed: list[list[str]] = []
        self.consumer: Consumer | None = None
        self.committed_while_working: list[int] = []
        self.prepared: list[list[str]] = []

    async def prepare(self, inbounds: Sequence[Inbound]) -> Any:
        self.prepared.append([i.origin for i in inbounds])
        return Prepared(inbounds)

    async def submit(self, batch: Any) -> Any:
        inbounds = batch.inbounds if isinstance(batch, Prepared) else batch
        assert self.consumer is not None
        self.committed_while_working.append(len(self.consumer.commits))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database down")
        origins = [i.origin for i in inbounds]
        self.batches.append(origins)
        ok = not self.unconfirmed
        self.unconfirmed = max(0, self.unconfirmed - 1)
        return (origins, ok)

    async def complete(self, submitted: Any) -> list[Any]:
        origins, ok = submitted
        await asyncio.sleep(0)
        if not ok:
            raise ConnectionError("broker down")
        self.confirmed.append(origins)
        return []

    async def process(self, inbounds: Sequence[Inbound]) -> list[Any]:
        return await self.complete(await self.submit(inbounds))


def committed(consumer: Consumer) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for c in consumer.commits:
        out.update(c)
    return out


async def test_offsets_are_committed_after_the_work_and_a_failure_is_worked_again() -> None:
    pipeline, consumer = Pipeline(fail_first=1), Consumer({0, 1})
    pipeline.consumer = consumer
    worker = InboundWorker(pipeline, max_records=10, retry_backoff_s=0.0)  # type: ignore[arg-type]
    await worker.put([(TopicPartition("in", 0), [rec(0, 5), rec(0, 6)]),
                      (TopicPartition("in", 1), [rec(1, 0, [("ioc-principal", None)])])], consumer)
    await worker.flush()
    # The failed attempt committed nothing; the same records (same origins) were worked again.
    assert pipeline.committed_while_working == [0, 0]
    assert pipeline.batches == [["in:0:5", "in:0:6", "in:1:0"]]
    assert committed(consumer) == {TopicPartition("in", 0): 7, TopicPartition("in", 1): 1}
    await worker.close()


async def test_commits_follow_fetch_order_and_skip_revoked_partitions() -> None:
    pipeline, consumer = Pipeline(), Consumer({0})
    pipeline.consumer = consumer
    worker = InboundWorker(pipeline, max_records=2, retry_backoff_s=0.0)  # type: ignore[arg-type]
    for offset in range(0, 6, 2):
        await worker.put([(TopicPartition("in", 0), [rec(0, offset), rec(0, offset + 1)]),
                          (TopicPartition("in", 1), [rec(1, offset)])], consumer)
    await worker.flush()
    offsets = [c[TopicPartition("in", 0)] for c in consumer.commits]
    assert offsets == sorted(offsets) and offsets[-1] == 6
    # Partition 1 is no longer assigned: its records were worked, their offsets not committed.
    assert all(TopicPartition("in", 1) not in c for c in consumer.commits)
    assert [o for b in pipeline.batches for o in b if o.startswith("in:1:")] == \
        ["in:1:0", "in:1:2", "in:1:4"]
    await worker.close()


async def test_close_leaves_queued_records_for_redelivery() -> None:
    pipeline, consumer = Pipeline(), Consumer({0})
    pipeline.consumer = consumer
    gate = asyncio.Event()
    original = pipeline.submit

    async def slow(inbounds: Sequence[Inbound]) -> Any:
        await gate.wait()
        return await original(inbounds)

    pipeline.submit = slow  # type: ignore[method-assign]
    worker = InboundWorker(pipeline, max_records=1, retry_backoff_s=0.0)  # type: ignore[arg-type]
    await worker.put([(TopicPartition("in", 0), [rec(0, 0)])], consumer)
    await worker.put([(TopicPartition("in", 0), [rec(0, 1)])], consumer)
    await asyncio.sleep(0)
    closing = asyncio.create_task(worker.close())
    await asyncio.sleep(0)
    gate.set()
    await closing
    # The batch being worked finished and was committed; the queued one was left.
    assert pipeline.batches == [["in:0:0"]]
    assert committed(consumer) == {TopicPartition("in", 0): 1}


async def test_a_batch_not_confirmed_is_worked_again_before_anything_later_is_committed() -> None:
    pipeline, consumer = Pipeline(unconfirmed_first=1), Consumer({0})
    pipeline.consumer = consumer
    worker = InboundWorker(pipeline, max_records=1, retry_backoff_s=0.0)  # type: ignore[arg-type]
    for offset in range(3):
        await worker.put([(TopicPartition("in", 0), [rec(0, offset)])], consumer)
    await worker.flush()
    # in:0:0 was submitted, then in:0:1 behind it; in:0:0 was not confirmed, so both were
    # worked again, in order, before anything was committed.
    assert pipeline.batches[:4] == [["in:0:0"], ["in:0:1"], ["in:0:0"], ["in:0:1"]]
    # in:0:1's first confirmation arrived but was not committed before in:0:0's redo.
    assert pipeline.confirmed[:3] == [["in:0:1"], ["in:0:0"], ["in:0:1"]]
    offsets = [c[TopicPartition("in", 0)] for c in consumer.commits]
    assert offsets == sorted(offsets) and offsets[-1] == 3
    assert pipeline.committed_while_working[:3] == [0, 0, 0]
    await worker.close()
