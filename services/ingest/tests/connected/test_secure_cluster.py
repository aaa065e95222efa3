"""A real ingest process outside development mode: on a SASL_SSL cluster (the local
platform's SCRAM-SHA-512 broker standing in for the district cluster) it turns a signed
submission into its canonical record; without Kafka security settings it refuses to start."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from ingest.settings import IngestSettings
from ingest.topics import IngestTopics
from ioc_shared.platform.kafka import make_consumer, make_producer
from ioc_shared.platform.settings import KafkaClientSettings
from ioc_shared.registry import load_registry
from ioc_shared.testing import database_url, secure_kafka_env, unique

from .helpers import SEED_CREDENTIALS, SEED_REGISTRY, field_report, signed_headers, submission

pytestmark = pytest.mark.connected

SECURE = secure_kafka_env()


def production_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A deployment's environment: no development mode, credentials outside the repository."""
    credentials = tmp_path / "credentials.yaml"
    shutil.copy(SEED_CREDENTIALS, credentials)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IOC_KAFKA_", "IOC_DEV_MODE", "INGEST_"))}
    env.update(IOC_DATABASE_URL=database_url(), IOC_REGISTRY_FILE=str(SEED_REGISTRY),
               IOC_CREDENTIALS_FILE=str(credentials), IOC_LOG_LEVEL="WARNING",
               INGEST_HTTP_PORT="0", **extra)
    return env


def test_outside_dev_mode_ingest_refuses_to_start_without_kafka_security(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ingest", "serve"], env=production_environment(
        tmp_path, IOC_KAFKA_BOOTSTRAP="127.0.0.1:1"), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    for name in ("IOC_KAFKA_SECURITY_PROTOCOL", "IOC_KAFKA_SASL_USER",
                 "IOC_KAFKA_SASL_PASSWORD_FILE", "IOC_KAFKA_CA_FILE", "IOC_DEV_MODE"):
        assert name in done.stderr + done.stdout


async def test_ingest_process_serves_on_a_sasl_ssl_cluster(tmp_path: Path) -> None:
    if not SECURE:
        pytest.skip("no SASL_SSL broker (IOC_PROVINCE_KAFKA_BOOTSTRAP)")
    bootstrap = SECURE["IOC_KAFKA_BOOTSTRAP"]
    tag = unique("sec")
    namespace, schema = tag.replace("_", "-"), f"ingest_{tag}"
    env = production_environment(tmp_path, **SECURE, IOC_TOPIC_NAMESPACE=namespace,
                                 INGEST_DB_SCHEMA=schema, INGEST_CONSUMER_GROUP=f"ingest-{tag}")
    # This test's own clients: the same settings, passed explicitly.
    security = KafkaClientSettings(**{k.removeprefix("IOC_").lower(): v
                                      for k, v in SECURE.items()}).kafka_security()
    settings = IngestSettings(kafka_bootstrap=bootstrap, topic_namespace=namespace,
                              credentials_file=Path(env["IOC_CREDENTIALS_FILE"]))
    topics = IngestTopics.resolve(settings, load_registry(SEED_REGISTRY))
    log = (tmp_path / "ingest.log").open("w")
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "ingest", "serve",
                                                   env=env, stdout=log,
                                                   stderr=subprocess.STDOUT)
    consumer = make_consumer(topics.canonical["phan-anh-hien-truong"], bootstrap=bootstrap,
                             security=security, group_id=None, auto_offset_reset="earliest",
                             metadata_max_age_ms=1000)
    try:
        record_id = unique("PA")
        value = submission(field_report(record_id))
        producer = make_producer(bootstrap, client_id="test-secure", security=security)
        await producer.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            # The service declares its topics at start: wait for the inbound one.
            while loop.time() < deadline:
                metadata = await producer.client.fetch_all_metadata()
                if topics.inbound in metadata.topics() and \
                        topics.canonical["phan-anh-hien-truong"] in metadata.topics():
                    break
                assert process.returncode is None, (tmp_path / "ingest.log").read_text()
                await asyncio.sleep(0.5)
            await producer.send_and_wait(topics.inbound, value, key=b"xa-loc-thanh-huyen",
                                         headers=signed_headers("xa-loc-thanh-huyen-system", value))
        finally:
            await producer.stop()
        await consumer.start()
        found = None
        while found is None and loop.time() < deadline:
            assert process.returncode is None, (tmp_path / "ingest.log").read_text()
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    envelope = orjson.loads(record.value)
                    if envelope["payload"]["record_id"] == record_id:
                        found = envelope
        assert found is not None, (tmp_path / "ingest.log").read_text()
        assert found["type"] == "ingest.record.accepted"
        assert found["source_unit"] == "xa-loc-thanh-huyen"
    finally:
        await consumer.stop()
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        log.close()
        await _clean_up(bootstrap, security, namespace, schema)


async def _clean_up(bootstrap: str, security, namespace: str, schema: str) -> None:  # type: ignore[no-untyped-def]
    import asyncpg
    from ioc_shared.platform.kafka import make_admin

    admin = make_admin(bootstrap, client_id="test-clean-up", security=security)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
