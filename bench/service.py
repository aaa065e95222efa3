"""Running a service under benchmark: as a real process, isolated by namespace and schema."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from ioc_shared.platform.db import create_pool
from ioc_shared.platform.kafka import make_consumer, make_producer
from ioc_shared.testing import ServiceProcess, database_url, unique

from bench.harness import RAW_CLIENT

REPO = Path(__file__).resolve().parents[1]



class BenchService:
    """`python -m <service> serve` in its own namespace; dropped schema afterwards.

    `processes`: that many processes of the service, sharing namespace, schema and
    consumer group (members of one group, each with its own HTTP port)."""

    def __init__(self, service: str, bootstrap: str, extra_env: dict[str, str] | None = None,
                 *, processes: int = 1) -> None:
        self.service = service
        self.namespace = unique("bench").replace("_", "-")
        prefix = service.upper().replace("-", "_") + "_"
        self.schema = unique(f"bench_{service.replace('-', '_')}")
        self.env = {
            **os.environ,
            "IOC_KAFKA_BOOTSTRAP": bootstrap,
            "IOC_DATABASE_URL": database_url(),
            "IOC_TOPIC_NAMESPACE": self.namespace,
            "IOC_LOG_LEVEL": "WARNING",
            f"{prefix}DB_SCHEMA": self.schema,
            f"{prefix}CONSUMER_GROUP": unique(f"bench-{service}"),
            **(extra_env or {}),
        }
        logs = Path(tempfile.gettempdir())
        self.processes = [ServiceProcess(service, self.env, logs / f"{self.namespace}-{service}-{n}.log",
                                         REPO) for n in range(max(1, processes))]
        self.process = self.processes[0]

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def peak_rss_mb(self) -> float:
        return sum(p.peak_rss_mb() for p in self.processes)

    async def __aenter__(self) -> BenchService:
        try:
            # Together, so that every member joins the consumer group's first generation.
            await asyncio.gather(*(process.start() for process in self.processes))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for process in self.processes:
            process.stop()
        pool = await create_pool(database_url(), max_size=1)
        await pool.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        await pool.close()


async def settle() -> None:
    """Flush dirty pages left by earlier phases before a latency phase.

    Throughput runs leave hundreds of megabytes of Kafka log data in the page cache; the
    kernel writes them back during whatever runs next, and a PostgreSQL commit that waits
    behind that writeback stalls for up to ~200 ms. A latency phase measures its own steady
    load (its own writes included), not the aftermath of the previous phase.
    """
    await asyncio.to_thread(os.sync)


async def paced_latency(bootstrap: str, inbound: str, outbound: list[str],
                        messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
                        rate: float, match: Callable[[Any], str | None],
                        ident: Callable[[bytes], str]) -> list[float]:
    """Send `messages` at `rate`/s; latency (ms) until the matching output is visible.

    `ident(value)` names an input, `match(record)` names the output record it
    answers (None for records to ignore).
    """
    consumer = make_consumer(*outbound, bootstrap=bootstrap, group_id=None,
                             auto_offset_reset="latest", **RAW_CLIENT)
    await consumer.start()
    # Be assigned and positioned at the end before the first send.
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    for tp in consumer.assignment():
        await consumer.position(tp)
    producer = make_producer(bootstrap, client_id="bench-latency", acks="all", linger_ms=0,
                             enable_idempotence=True, **RAW_CLIENT)
    await producer.start()
    try:
        return await paced(producer, consumer, inbound, messages, rate, match, ident)
    finally:
        await producer.stop()
        await consumer.stop()


async def paced(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, inbound: str,
                messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]], rate: float,
                match: Callable[[Any], str | None], ident: Callable[[bytes], str]) -> list[float]:
    """The measuring loop of `paced_latency`, with a started producer and a started,
    positioned consumer (of any cluster)."""
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    async def receive() -> None:
        while len(latencies) < len(messages):
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    key = match(rec)
                    if key is not None and key in sent_at:
                        latencies.append((now - sent_at.pop(key)) * 1000)

    receiver = asyncio.create_task(receive())
    try:
        start = time.perf_counter()
        for i, (key, value, headers) in enumerate(messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[ident(value)] = time.perf_counter()
            await producer.send(inbound, value, key=key, headers=headers)
        await asyncio.wait_for(receiver, 60)
    finally:
        receiver.cancel()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
