"""Helpers for connected ingest tests: isolated settings, signed publishing, topic reading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import ConsumerRecord, TopicPartition
from ingest.settings import IngestSettings
from ioc_shared.platform.kafka import decode_headers, make_admin, make_consumer, make_producer
from ioc_shared.registry import sign
from ioc_shared.testing import database_url, kafka_bootstrap, read_topic, unique

REPO = Path(__file__).resolve().parents[4]
SEED_REGISTRY = REPO / "config" / "registry.yaml"
SEED_CREDENTIALS = REPO / "config" / "credentials.dev.yaml"
SECRETS = yaml.safe_load(SEED_CREDENTIALS.read_text(encoding="utf-8"))["secrets"]
# HTTP bearer tokens of the development credentials (the file holds their hashes).
TOKENS = {principal: f"dev-token-{principal}-0001" for principal in SECRETS}


def isolated_settings(registry_file: Path = SEED_REGISTRY, **overrides: Any) -> IngestSettings:
    """Settings of their own: topic namespace, PostgreSQL schema and consumer group."""
    tag = unique("it")
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap(), "database_url": database_url(),
        "registry_file": registry_file, "credentials_file": SEED_CREDENTIALS,
        "topic_namespace": tag.replace("_", "-"), "db_schema": f"ingest_{tag}",
        "consumer_group": f"ingest-{tag}", "http_port": 0, "batch_timeout_ms": 50,
        "freshness_check_interval_s": 3600.0, "quality_publish_interval_s": 3600.0,
        "db_pool_size": 4, "log_level": "WARNING",
    }
    values.update(overrides)
    return IngestSettings(**values)


async def drop_schema(settings: IngestSettings) -> None:
    """Tests leave no PostgreSQL schema behind (topics are namespaced and short-lived)."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.db_schema} CASCADE")
    finally:
        await conn.close()


def submission(record: dict[str, Any], dataset: str = "phan-anh-hien-truong", version: int = 2,
               **extra: Any) -> bytes:
    return orjson.dumps({"dataset": dataset, "schema_version": version, "record": record, **extra})


def signed_headers(principal: str, value: bytes, *, secret: str | None = None,
                   extra: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    key = secret if secret is not None else SECRETS[principal]
    return [("ioc-principal", principal.encode()), ("ioc-signature", sign(key, value).encode()),
            *(extra or [])]


async def publish(topic: str, messages: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
                  ) -> None:
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers)
                   for key, value, headers in messages]
        for f in futures:
            await f
    finally:
        await producer.stop()


async def read_json(topic: str, count: int, timeout: float = 20.0
                    ) -> list[tuple[dict[str, Any], dict[str, str], Any]]:
    """(value as JSON, headers, record) of the first `count` records, or fewer on timeout."""
    records = await read_topic(topic, until=lambda r: len(r) >= count, timeout=timeout)
    return [(orjson.loads(r.value), decode_headers(r.headers), r) for r in records]


def field_report(record_id: str, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_id": record_id, "reported_at": "28/11/2026 09:15", "commune": "Lộc Thành",
        "category": "Môi trường", "priority": "cao", "channel": "ung-dung",
        "title": "  Rác thải   tràn ra đường ", "address": "Ấp 3",
        "location": "11,85;106,60", "reporter_phone": "0912 345 678",
    }
    record.update(overrides)
    return record


async def end_offsets(topic: str) -> dict[TopicPartition, int]:
    producer = make_producer(kafka_bootstrap(), client_id="test")
    consumer = make_consumer(bootstrap=kafka_bootstrap(), group_id=None)
    await producer.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
        assert partitions, topic
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()
        await producer.stop()


async def inputs_handled(settings: IngestSettings, inbound: str, timeout: float = 30.0) -> None:
    """Wait until the service's group committed the inbound topic up to its end as of now.

    Offsets are committed only after every output of the records before them was confirmed,
    so from then on the outputs of every input sent so far are on their topics: a test that
    checks that something did *not* arrive waits for this position, not for a fixed time."""
    target = await end_offsets(inbound)
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(settings.consumer_group)
            behind = {tp: end for tp, end in target.items()
                      if end > 0 and (committed.get(tp) is None or committed[tp].offset < end)}
            if not behind:
                return
            if loop.time() > deadline:
                raise AssertionError(f"inbound not handled up to its end: {behind}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def read_all(topic: str, timeout: float = 20.0) -> list[ConsumerRecord[Any, Any]]:
    """Every record of `topic` up to its end as of now (test topics start at offset 0)."""
    target = await end_offsets(topic)
    records = await read_topic(topic, timeout=timeout, until=lambda rs: len(
        [r for r in rs if r.offset < target[TopicPartition(r.topic, r.partition)]])
        >= sum(target.values()))
    return [r for r in records if r.offset < target[TopicPartition(r.topic, r.partition)]]
