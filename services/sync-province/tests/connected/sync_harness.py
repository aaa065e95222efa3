"""sync-province for real: the service and the province simulator as separate processes,
the district broker, the provincial SASL_SSL broker and PostgreSQL.

The provincial broker comes from `scripts/platform.sh start` (its `env` exports
IOC_PROVINCE_KAFKA_*). Without it the suite is skipped outside CI and fails in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from ioc_shared.contracts.topics import REPORTING_PUBLISHED, SYNC_PROVINCE_STATUS, TopicSpec, canonical_topic
from ioc_shared.platform.kafka import declare_topics, make_producer
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.testing import (
    ServiceProcess,
    database_url,
    delete_province_topics,
    free_port,
    kafka_bootstrap,
    province_security,
    unique,
)

FIELD_REPORTS = "phan-anh-hien-truong"      # shared, granted, has personal fields
HEALTH_ALERTS = "canh-bao-y-te"             # shared, granted
KT_XH = "chi-tieu-kt-xh"                    # shared; its grant is removed in the test registry
REPORT_TOPIC = REPORTING_PUBLISHED.name
PROVINCE = os.environ.get("IOC_PROVINCE_KAFKA_BOOTSTRAP")


def envelope(dataset: str, unit: str, record_id: str, record: dict[str, Any],
             occurred: datetime | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]], str]:
    event_id = str(uuid.uuid4())
    at = (occurred or datetime.now(UTC)).isoformat()
    value = orjson.dumps({
        "envelope_version": 1, "event_id": event_id, "type": "ingest.record.accepted",
        "schema_version": 1, "source_unit": unit, "subject": f"{unit}/{record_id}",
        "occurred_at": at, "produced_at": at, "correlation_id": None, "causation_id": None,
        "payload": {"dataset": dataset, "schema_version": 1, "record_id": record_id,
                    "record": {"record_id": record_id, **record},
                    "provenance": {"principal": f"{unit}-system", "channel": "kafka"}}})
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    headers = [("ioc-event-id", event_id.encode()), ("ioc-event-type", b"ingest.record.accepted"),
               ("ioc-dataset", dataset.encode()), ("traceparent", traceparent.encode()),
               ("tracestate", b"ioc=test"), ("ioc-producer", b"ingest")]
    return f"{unit}/{record_id}".encode(), value, headers, event_id


def field_report(i: int, unit: str = "xa-loc-an") -> dict[str, Any]:
    return {"reported_at": "2026-12-01T01:00:00+00:00", "commune": unit, "category": "moi-truong",
            "priority": "cao", "channel": "ung-dung", "title": f"Rác thải số {i}",
            "address": "Ấp 1", "reporter_name": "Nguyễn Văn A", "reporter_phone": "0912345678",
            "reporter_ref": f"ref-{i}"}


@dataclass
class Link:
    ns: str
    tmp: Path
    registry: Path
    env: dict[str, str]
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    sent: dict[str, list[str]] = field(default_factory=dict)        # stream -> event ids
    service: ServiceProcess | None = None
    simulator: subprocess.Popen[bytes] | None = None
    sim_port: int = 0
    sim_schema: str = ""
    _n: int = 0

    def topic(self, dataset: str) -> str:
        return f"{self.ns}.{canonical_topic(dataset).name}"

    def province_topic(self, contract_topic: str) -> str:
        return f"{self.ns}.loc-ninh.{contract_topic}"

    # --- district side ------------------------------------------------------------
    async def produce(self, dataset: str, count: int, *, units: tuple[str, ...] = (
            "xa-loc-an", "tt-loc-ninh", "xa-loc-thanh-nang"), producer_header: bool = True,
            record: Callable[[int], dict[str, Any]] = field_report) -> list[str]:
        ids = []
        futures = []
        for _ in range(count):
            self._n += 1
            unit = units[self._n % len(units)]
            key, value, headers, event_id = envelope(dataset, unit, f"r{self._n % 97}-{unit}",
                                                     record(self._n))
            if not producer_header:
                headers = [h for h in headers if h[0] != "ioc-producer"]
            futures.append(await self.producer.send(self.topic(dataset), value, key=key,
                                                    headers=headers))
            ids.append(event_id)
        await asyncio.gather(*futures)
        self.sent.setdefault(dataset, []).extend(ids if producer_header else [])
        return ids

    async def produce_event(self, event_type: str) -> str:
        event_id = str(uuid.uuid4())
        value = orjson.dumps({"envelope_version": 1, "event_id": event_id, "type": event_type,
                              "schema_version": 1, "source_unit": "ioc-loc-ninh",
                              "subject": "report-2026-11", "payload": {"period": "2026-11"},
                              "occurred_at": datetime.now(UTC).isoformat(),
                              "produced_at": datetime.now(UTC).isoformat()})
        await self.producer.send_and_wait(f"{self.ns}.{REPORT_TOPIC}", value, key=b"report-2026-11",
                                          headers=[("ioc-event-id", event_id.encode())])
        return event_id

    def edit_registry(self, edit: Callable[[dict[str, Any]], None]) -> None:
        raw = yaml.safe_load(self.registry.read_text(encoding="utf-8"))
        edit(raw)
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
        os.replace(tmp, self.registry)     # atomic: the service never reads half a file

    # --- processes ------------------------------------------------------------------
    async def start_service(self, targets: str, scheme: str = "http", *, healthy: bool = True,
                            **extra: str) -> ServiceProcess:
        env = {**self.env, "SYNC_PROVINCE_TARGETS": targets,
               "SYNC_PROVINCE_GATEWAY_URL": f"{scheme}://127.0.0.1:{self.sim_port}", **extra}
        service = ServiceProcess("sync-province", env, self.tmp / f"service-{time.time()}.log",
                                 REPO_ROOT)
        await service.start(healthy=healthy)
        self.service = service
        return service

    async def status(self) -> list[dict[str, Any]]:
        assert self.service is not None
        async with httpx.AsyncClient() as http:
            return list((await http.get(f"http://127.0.0.1:{self.service.port}/status")).json())

    async def health(self) -> tuple[int, dict[str, Any]]:
        assert self.service is not None
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{self.service.port}/health")
            return r.status_code, dict(r.json())

    async def start_simulator(self, **extra: str) -> None:
        args = [sys.executable, "-m", "sync_province.simulator", "--port", str(self.sim_port),
                "--schema", self.sim_schema, "--database-url", database_url(),
                "--token-file", str(self.tmp / "gateway-token")]
        for k, v in extra.items():
            args += [f"--{k.replace('_', '-')}", v]
        self.simulator = subprocess.Popen(args, stdout=(self.tmp / "simulator.log").open("ab"),  # noqa: ASYNC220
                                          stderr=subprocess.STDOUT)
        scheme = "https" if "tls_cert" in extra else "http"
        async with httpx.AsyncClient(verify=False) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    url = f"{scheme}://127.0.0.1:{self.sim_port}/health"
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("simulator did not start: " + (self.tmp / "simulator.log").read_text())

    def stop_simulator(self) -> None:
        if self.simulator is not None:
            self.simulator.kill()
            self.simulator.wait()
            self.simulator = None

    async def sim_mode(self, **mode: Any) -> None:
        async with httpx.AsyncClient() as http:
            await http.post(f"http://127.0.0.1:{self.sim_port}/admin/mode", json=mode)


    async def sim_requests(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            return list((await http.get(f"http://127.0.0.1:{self.sim_port}/admin/requests")).json())

    async def sim_rows(self, stream: str) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(
            f"SELECT event_id, key, partition, source_offset, timestamp_ms, headers, value"
            f" FROM {self.sim_schema}.received WHERE stream = $1 ORDER BY seq", stream))

    async def wait_sim(self, stream: str, count: int, timeout: float = 45) -> list[asyncpg.Record]:
        deadline = time.monotonic() + timeout
        rows: list[asyncpg.Record] = []
        while time.monotonic() < deadline:
            rows = await self.sim_rows(stream)
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.3)
        raise AssertionError(f"{stream}: {len(rows)} of {count} at the simulator\n"
                             + (self.service.log_tail() if self.service else ""))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sync_province", *args], env=self.env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=90, check=False)

    # --- province side -----------------------------------------------------------------
    async def province_records(self, contract_topic: str, at_least: int, timeout: float = 45,
                               settle: float = 0.0, partitions: int = 6) -> list[ConsumerRecord[Any, Any]]:
        """Records of a province topic (read_committed), once at least `at_least` are there."""
        topic = self.province_topic(contract_topic)
        deadline = time.monotonic() + timeout
        kwargs = {"bootstrap_servers": PROVINCE, "group_id": None, "enable_auto_commit": False,
                  "isolation_level": "read_committed", **province_security().client_kwargs()}
        while True:     # a consumer started before the topic existed would not see it soon
            consumer = AIOKafkaConsumer(**kwargs)
            try:
                await consumer.start()
                if topic in await consumer.topics():
                    break
            except KafkaError:      # a broker just thawed (SIGCONT) may not answer yet
                if time.monotonic() >= deadline:
                    raise
            await consumer.stop()
            if time.monotonic() >= deadline:
                return []
            await asyncio.sleep(0.3)
        records: list[ConsumerRecord[Any, Any]] = []
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            settle_until = None
            while time.monotonic() < deadline:
                for part in (await consumer.getmany(timeout_ms=300)).values():
                    records.extend(part)
                if len(records) >= at_least:
                    settle_until = settle_until or time.monotonic() + settle
                    if time.monotonic() >= settle_until:
                        break
        finally:
            await consumer.stop()
        return records


def platform_pki() -> Path:
    """The local platform CA's folder (scripts/platform.sh): ca.pem, broker.pem, broker.key."""
    return Path(os.environ["IOC_PROVINCE_KAFKA_CA_FILE"]).parent


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    if not PROVINCE:
        if os.environ.get("CI"):
            pytest.fail("IOC_PROVINCE_KAFKA_BOOTSTRAP unset: scripts/platform.sh start the province")
        pytest.skip("no provincial broker (IOC_PROVINCE_KAFKA_BOOTSTRAP): run scripts/platform.sh start")
    ns = unique("tsync")
    registry_raw = yaml.safe_load((REPO_ROOT / "config" / "registry.yaml").read_text(encoding="utf-8"))
    registry_raw["grants"] = [g for g in registry_raw["grants"]
                              if not (g["unit"] == "ioc-binh-phuoc" and g["dataset"] == KT_XH)]
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(registry_raw, allow_unicode=True, sort_keys=False),
                        encoding="utf-8")
    (tmp_path / "gateway-token").write_text("province-gateway-token-for-tests")
    env = {**os.environ, "IOC_TOPIC_NAMESPACE": ns, "SYNC_PROVINCE_SCHEMA_NAME": ns,
           "SYNC_PROVINCE_PROVINCE_TOPIC_PREFIX": f"{ns}.loc-ninh",
           "SYNC_PROVINCE_REGISTRY_FILE": str(registry),
           "SYNC_PROVINCE_SIGNING_KEY_FILE": str(tmp_path / "share-log.pem"),
           "SYNC_PROVINCE_GATEWAY_TOKEN_FILE": str(tmp_path / "gateway-token"),
           "SYNC_PROVINCE_EVENT_TOPICS": REPORT_TOPIC,
           "SYNC_PROVINCE_STATUS_INTERVAL_S": "0.5", "SYNC_PROVINCE_CHECKPOINT_INTERVAL_S": "0.5",
           "SYNC_PROVINCE_RETRY_MAX_WAIT_S": "0.5", "SYNC_PROVINCE_REGISTRY_CHECK_S": "0.1",
           "SYNC_PROVINCE_UNREACHABLE_AFTER_S": "1", "SYNC_PROVINCE_RETENTION_CHECK_S": "0.5",
           "SYNC_PROVINCE_RETENTION_MARGIN_S": "60", "SYNC_PROVINCE_BATCH_RECORDS": "200",
           "IOC_LOG_LEVEL": "INFO", "IOC_KAFKA_BOOTSTRAP": kafka_bootstrap(),
           "IOC_DATABASE_URL": database_url()}
    bootstrap = kafka_bootstrap()
    await declare_topics(bootstrap, [
        *(TopicSpec(f"{ns}.{canonical_topic(d).name}", 6, 3_600_000) for d in
          (FIELD_REPORTS, HEALTH_ALERTS, KT_XH, "ho-so-dich-vu-cong", "chi-so-y-te",
           "thong-ke-truong-hoc")),
        TopicSpec(f"{ns}.{REPORT_TOPIC}", 1, 3_600_000),
        TopicSpec(f"{ns}.{SYNC_PROVINCE_STATUS.name}", 1, 3_600_000)])
    pool = await asyncpg.create_pool(database_url(), min_size=1, max_size=3)
    assert pool is not None
    producer = make_producer(bootstrap, client_id="test", acks="all", enable_idempotence=True,
                             linger_ms=5)
    await producer.start()
    world = Link(ns, tmp_path, registry, env, pool, producer, sim_port=free_port(),
                 sim_schema=f"{ns}_sim")
    try:
        yield world
    finally:
        if world.service is not None:
            world.service.kill()
        world.stop_simulator()
        await producer.stop()
        with contextlib.suppress(Exception):
            await delete_province_topics(f"{ns}.loc-ninh.")
        for schema in (ns, world.sim_schema):
            await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
