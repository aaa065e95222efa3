"""The kit on a SASL_SSL cluster (SCRAM-SHA-512 over TLS, pinned CA), as a production
district cluster runs: the provincial broker of the local platform stands in for it, with
`IOC_KAFKA_*` set as a deployment sets them and development mode off."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaError
from ioc_shared.contracts import TopicSpec
from ioc_shared.platform import kafka
from ioc_shared.platform.consumer import Delivery, DurableConsumer, FailurePolicy
from ioc_shared.platform.idempotency import claim_events
from ioc_shared.platform.kafka import (
    declare_topics,
    district_security,
    make_admin,
    make_broker,
    use_district_security,
)
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.testing import eventually, secure_kafka_env, unique

pytestmark = pytest.mark.connected

SECURE = secure_kafka_env().get("IOC_KAFKA_BOOTSTRAP", "")
QUICK = FailurePolicy(max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.2, jitter_s=0.05)


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """IOC_KAFKA_* of the secure cluster, development mode off; the process default restored."""
    if not SECURE:
        pytest.skip("no SASL_SSL broker (IOC_PROVINCE_KAFKA_BOOTSTRAP)")
    monkeypatch.delenv("IOC_DEV_MODE", raising=False)
    monkeypatch.delenv("IOC_KAFKA_SASL_PASSWORD", raising=False)
    for name, value in secure_kafka_env().items():
        monkeypatch.setenv(name, value)
    saved = kafka._district_security
    use_district_security(None)
    yield tmp_path / "credentials.yaml"        # outside the repository, as in production
    use_district_security(saved)


def store_notes(pool: asyncpg.Pool, schema: str, name: str):  # type: ignore[no-untyped-def]
    async def handler(batch: Sequence[Delivery]) -> None:
        notes = {uuid.UUID(n["event_id"]): n["body"] for n in (json.loads(d.value) for d in batch)}
        async with pool.acquire() as conn, conn.transaction():
            fresh = await claim_events(conn, schema, name, list(notes))
            await conn.executemany(f"INSERT INTO {schema}.notes VALUES ($1, $2)",
                                   [(i, notes[i]) for i in notes if i in fresh])
    return handler


async def _delete(topic: str) -> None:
    admin = make_admin(SECURE, client_id="test-clean-up")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def test_declare_publish_and_durably_consume_through_the_kit_on_sasl_ssl(
        production_env: Path, schema_pool: tuple[str, asyncpg.Pool]) -> None:
    schema, pool = schema_pool
    await pool.execute(f"CREATE TABLE {schema}.notes (event_id uuid PRIMARY KEY, body text)")
    settings = ServiceSettings(credentials_file=production_env)
    assert settings.kafka_bootstrap == SECURE and not settings.dev_mode
    ServiceRuntime("secure-test", settings)          # the runtime takes the service's security
    assert district_security().protocol == "SASL_SSL"
    assert district_security().sasl_user == os.environ["IOC_PROVINCE_KAFKA_SASL_USER"]

    topic, group = unique("t.secure").replace("_", "-"), unique("g-secure")
    assert await declare_topics(SECURE, [TopicSpec(topic, 2, 3_600_000)]) == [topic]
    try:
        consumer = DurableConsumer("notes", [topic], group, store_notes(pool, schema, "notes"),
                                   pool=pool, schema=schema, policy=QUICK)
        broker = make_broker(SECURE, service="secure-test")
        consumer.register(broker)
        notes = {uuid.uuid4(): f"note {i}" for i in range(20)}
        async with broker:
            await asyncio.wait_for(broker.start(), 60)
            for event_id, body in notes.items():
                await broker.publish(json.dumps({"event_id": str(event_id), "body": body}).encode(),
                                     topic=topic, key=str(event_id).encode(),
                                     headers={"ioc-event-id": str(event_id)})

            async def stored() -> bool:
                return await pool.fetchval(f"SELECT count(*) FROM {schema}.notes") == len(notes)

            await eventually(stored, timeout=60)
            consumer.stop()
        rows = await pool.fetch(f"SELECT event_id, body FROM {schema}.notes")
        assert {r["event_id"]: r["body"] for r in rows} == notes

        admin = make_admin(SECURE, client_id="test-offsets")
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assert sum(m.offset for m in offsets.values()) == len(notes)   # committed, all of it
    finally:
        await _delete(topic)


async def test_wrong_credentials_or_clear_text_get_nothing_from_the_secure_cluster(
        production_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOC_KAFKA_SASL_PASSWORD_FILE")
    monkeypatch.setenv("IOC_KAFKA_SASL_PASSWORD", "not-the-password")
    ServiceRuntime("secure-test", ServiceSettings(credentials_file=production_env))
    topic = unique("t.secure").replace("_", "-")
    with pytest.raises((KafkaError, OSError, TimeoutError)):
        await asyncio.wait_for(declare_topics(SECURE, [TopicSpec(topic, 1, 3_600_000)]), 30)
    broker = make_broker(SECURE, service="secure-test")
    with pytest.raises((KafkaError, OSError, TimeoutError)):
        async with broker:
            await asyncio.wait_for(broker.start(), 30)
            await broker.publish(b"x", topic=topic)

    monkeypatch.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")   # explicit clear text
    ServiceRuntime("secure-test", ServiceSettings(credentials_file=production_env))
    assert district_security().protocol == "PLAINTEXT"
    admin = make_admin(SECURE, client_id="test-plain", request_timeout_ms=3000)
    with pytest.raises((KafkaError, OSError, TimeoutError)):
        await asyncio.wait_for(admin.start(), 20)
        await admin.list_topics()
    await admin.close()
    # The right credentials see the cluster, and no topic was made by the refused clients.
    monkeypatch.delenv("IOC_KAFKA_SASL_PASSWORD")
    monkeypatch.setenv("IOC_KAFKA_SASL_PASSWORD_FILE",
                       os.environ["IOC_PROVINCE_KAFKA_SASL_PASSWORD_FILE"])
    monkeypatch.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    ServiceRuntime("secure-test", ServiceSettings(credentials_file=production_env))
    admin = make_admin(SECURE, client_id="test-right")
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()
