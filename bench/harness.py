"""Shared pieces of the benchmarks: topics, preloading, output-rate measurement."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from ioc_shared.contracts import TopicSpec
from ioc_shared.platform.kafka import declare_topics, make_admin, make_consumer, make_producer
from ioc_shared.testing import unique

# The measuring clients and the reference loop keep aiokafka's own timings (the factory
# still gives them the cluster's security): the kit's longer retry backoff, for services
# riding out outages, put 500 ms pauses into the latencies measured.
RAW_CLIENT = {"retry_backoff_ms": 100, "metadata_max_age_ms": 300_000, "request_timeout_ms": 40_000}


@dataclass
class BenchResult:
    name: str
    figures: dict[str, float | int | str] = field(default_factory=dict)

    def line(self) -> str:
        parts = " ".join(f"{k}={_fmt(v)}" for k, v in self.figures.items())
        return f"BENCH {self.name} {parts}"


def _fmt(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


async def fresh_topics(bootstrap: str, *names: str, partitions: int = 6) -> list[str]:
    tag = unique("bench").replace("_", "-")
    topics = [f"{tag}.{n}" for n in names]
    await declare_topics(bootstrap, [TopicSpec(t, partitions, 3_600_000) for t in topics])
    return topics


async def preload(bootstrap: str, topic: str,
                  messages: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = make_producer(bootstrap, client_id="bench-load", acks="all", linger_ms=20,
                             max_batch_size=1024 * 1024, enable_idempotence=True, **RAW_CLIENT)
    await producer.start()
    try:
        futures = []
        for key, value, headers in messages:
            futures.append(await producer.send(topic, value, key=key, headers=headers))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def output_rate(bootstrap: str, topics: Sequence[str], expected: int,
                      timeout: float = 300.0,
                      counts: Callable[[ConsumerRecord[Any, Any]], bool] = lambda _: True,
                      ) -> tuple[int, float]:
    """Wait for `expected` records over `topics`; rate from their first and last timestamps.

    Using the records' own timestamps measures every contender the same way,
    start-up excluded. `counts` selects the records that count (e.g. one event type).
    """
    consumer = make_consumer(*topics, bootstrap=bootstrap, group_id=None,
                             auto_offset_reset="earliest",
                             max_poll_records=5000, fetch_max_bytes=32 * 1024 * 1024,
                             **RAW_CLIENT)
    await consumer.start()
    count, first, last = 0, None, None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while count < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    if not counts(rec):
                        continue
                    count += 1
                    first = rec.timestamp if first is None else min(first, rec.timestamp)
                    last = rec.timestamp if last is None else max(last, rec.timestamp)
    finally:
        await consumer.stop()
    if count < expected or first is None or last is None:
        raise RuntimeError(f"only {count} of {expected} records arrived on {list(topics)}")
    return count, count / max((last - first) / 1000.0, 1e-3)


async def wait_committed(bootstrap: str, group: str, expected: int, timeout: float = 300.0,
                         interval: float = 0.25) -> None:
    """Wait until consumer group `group` has committed `expected` offsets in total.

    A cheap poll of the group's committed offsets (one admin request per interval):
    unlike reading the outputs while the service runs, it takes no CPU from the
    contender on a small machine. The reference loop is not read concurrently
    either; its outputs are read after it finished.
    """
    admin = make_admin(bootstrap, client_id="bench-progress")
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done = 0
        while loop.time() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            done = sum(max(o.offset, 0) for o in offsets.values())
            if done >= expected:
                return
            await asyncio.sleep(interval)
        raise RuntimeError(f"group {group} committed only {done} of {expected} offsets")
    finally:
        await admin.close()
