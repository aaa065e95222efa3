"""Helpers for connected ingest tests: isolated settings, signed publishing, topic reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer
from ingest.settings import IngestSettings
from ioc_shared.platform.kafka import decode_headers
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
        "retry_backoff_s": 0.2, "db_pool_size": 4, "log_level": "WARNING",
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
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap(), acks="all")
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
