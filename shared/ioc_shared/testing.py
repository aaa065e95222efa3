"""Helpers for the connected and end-to-end test tiers (real Kafka and PostgreSQL).

Tests share one broker and one database server; each test isolates itself
with a unique topic namespace, schema and consumer group from `unique()`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from ioc_shared.platform.kafka import decode_headers


def kafka_bootstrap() -> str:
    return os.environ.get("IOC_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def database_url() -> str:
    return os.environ.get("IOC_DATABASE_URL", "postgresql://ioc@127.0.0.1:15432/ioc")


def unique(prefix: str) -> str:
    """A name no other test run uses: `prefix_<12 hex>` (valid as schema and topic part)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def read_topic(topic: str, *, until: Callable[[list[ConsumerRecord[Any, Any]]], bool],
                     timeout: float = 20.0, bootstrap: str | None = None
                     ) -> list[ConsumerRecord[Any, Any]]:
    """Read `topic` from the beginning until `until(records)` holds or `timeout` passes."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap or kafka_bootstrap(),
                                group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(records) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def settle(topic: str, expected: int, *, quiet: float = 1.5, timeout: float = 20.0,
                 bootstrap: str | None = None) -> list[ConsumerRecord[Any, Any]]:
    """Read until at least `expected` records arrived, then `quiet` more seconds to catch extras."""
    records = await read_topic(topic, until=lambda r: len(r) >= expected, timeout=timeout,
                               bootstrap=bootstrap)
    await asyncio.sleep(quiet)
    return await read_topic(topic, until=lambda r: False, timeout=1.0, bootstrap=bootstrap) \
        if records else records


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return decode_headers(record.headers)
