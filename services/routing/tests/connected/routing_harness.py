"""Routing against the real broker and database: helpers and fixtures, one isolated world per test.

Each test gets its own topic namespace, PostgreSQL schema and consumer group,
so tests can run beside other suites on the shared servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import RecordMetadata
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.platform.kafka import decode_headers, make_consumer, make_producer
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_credentials
from ioc_shared.testing import (
    InLoopServices,
    database_url,
    kafka_bootstrap,
    signed_command,
    signed_headers,
    unique,
)
from opentelemetry import trace
from routing.bootstrap import run_routing
from routing.contract import check_payload
from routing.domain.model import incident_id_for
from routing.handlers import PRODUCER_HEADER
from routing.publishing import RoutingTopics
from routing.settings import RoutingSettings

SECRETS = load_credentials(REPO_ROOT / "config" / "credentials.dev.yaml")
FIELD_REPORTS = "phan-anh-hien-truong"


def tiny_deadlines(raw: dict[str, Any]) -> dict[str, Any]:
    """The seed policy with wall-clock seconds, so escalations happen during a test."""
    raw = json.loads(json.dumps(raw))
    raw["deadlines"] = [{"acknowledge": {"seconds": 3}, "resolve": {"seconds": 600}}]
    raw["escalation"] = [raw["escalation"][-1]]
    raw["escalation"][0]["reminders_before"] = [{"seconds": 1}]
    for i, step in enumerate(raw["escalation"][0]["chain"]):
        step["after"] = {"seconds": i}
    return raw


@dataclass(frozen=True)
class Position:
    """Where a canonical record is: what a consumer reading it knows."""

    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int

    def dispute(self, dataset: str = FIELD_REPORTS, **overrides: Any) -> dict[str, Any]:
        """The payload of a `dispute` of this record (without the command id)."""
        return {"dataset": dataset, "event_id": str(self.event_id), "topic": self.topic,
                "partition": self.partition, "offset": self.offset,
                "reason": "Tọa độ và xã không khớp", **overrides}


@dataclass
class World:
    settings: RoutingSettings
    tmp: Path
    topics: RoutingTopics = field(init=False)
    producer: AIOKafkaProducer | None = None
    services: InLoopServices = field(default_factory=lambda: InLoopServices("routing"))

    def __post_init__(self) -> None:
        self.topics = RoutingTopics.from_settings(self.settings)

    def with_policy(self, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        raw = yaml.safe_load((REPO_ROOT / "config" / "routing.yaml").read_text(encoding="utf-8"))
        path = self.tmp / "routing.yaml"
        path.write_text(yaml.safe_dump(edit(raw), allow_unicode=True), encoding="utf-8")
        self.settings = self.settings.model_copy(update={"routing_config": path})

    async def start(self, instance: str = "a") -> None:
        settings = self.settings.model_copy(update={"instance_id": f"test-{instance}"})
        await self.services.start(lambda stop, ready: run_routing(
            settings, stop, ready=ready, configure_logs=False))

    async def stop(self) -> None:
        await self.services.stop()

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            self.producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
            await self.producer.start()
        return self.producer

    async def publish_record(self, record: dict[str, Any], *, dataset: str = FIELD_REPORTS,
                             source_unit: str = "tt-loc-ninh",
                             headers: dict[str, str] | None = None,
                             producer: str | None = "ingest", legacy_key: bool = False,
                             key: str | None = None) -> str:
        """Publish a canonical record as ingest does: key and subject `<unit>/<record id>`
        (`legacy_key`: the record id alone, as before), header `ioc-producer: ingest`
        (`producer=None`: none, as a hostile producer would)."""
        if key is None:
            key = record["record_id"] if legacy_key else f"{source_unit}/{record['record_id']}"
        env = Envelope(type="ingest.record.accepted", source_unit=source_unit, subject=key,
                       payload={"dataset": dataset, "schema_version": 2, "record": record})
        sent = {**({PRODUCER_HEADER: producer} if producer is not None else {}),
                **(headers or {})}
        await self.publish_raw(dataset, env.to_bytes(), key=key, headers=sent)
        return incident_id_for(source_unit, dataset, record["record_id"])

    async def publish_canonical(self, record: dict[str, Any], *, dataset: str = FIELD_REPORTS,
                                source_unit: str = "tt-loc-ninh",
                                producer: str | None = "ingest") -> Position:
        """Publish a canonical record as ingest does (key `<unit>/<record id>`, header
        `ioc-producer: ingest`, unless `producer` says otherwise); where it landed."""
        key = f"{source_unit}/{record['record_id']}"
        env = Envelope(type="ingest.record.accepted", source_unit=source_unit, subject=key,
                       payload={"dataset": dataset, "schema_version": 2, "record": record})
        meta = await self.publish_raw(dataset, env.to_bytes(), key=key,
                                      headers={PRODUCER_HEADER: producer} if producer else {})
        return Position(env.event_id, meta.topic, meta.partition, meta.offset)

    async def publish_raw(self, dataset: str, value: bytes, *, key: str,
                          headers: dict[str, str]) -> RecordMetadata:
        topic = self.settings.topic(canonical_topic(dataset)).name
        producer = await self._producer()
        return await producer.send_and_wait(topic, value, key=key.encode(),
                                            headers=[(k, v.encode()) for k, v in headers.items()])

    async def command_raw(self, principal: str, value: bytes, *, key: str,
                          sign_with: str | None = None) -> None:
        """Put `value` on the commands topic, signed as `principal` (or with another's secret)."""
        headers = signed_headers(principal, SECRETS[sign_with or principal], value)
        producer = await self._producer()
        await producer.send_and_wait(self.topics.commands, value, key=key.encode(),
                                     headers=headers)

    async def command(self, principal: str, verb: str, incident_id: str, *,
                      sign_with: str | None = None, command_id: str | None = None,
                      **payload: Any) -> str:
        command_id = command_id or str(uuid.uuid4())
        value, headers = signed_command(f"routing.command.{verb}", incident_id,
                                        {"command_id": command_id, **payload},
                                        principal=principal, secret=SECRETS[sign_with or principal])
        producer = await self._producer()
        await producer.send_and_wait(self.topics.commands, value, key=incident_id.encode(),
                                     headers=headers)
        return command_id

    async def close(self) -> None:
        await self.stop()
        if self.producer is not None:
            await self.producer.stop()


def record(record_id: str, **overrides: Any) -> dict[str, Any]:
    base = {
        "record_id": record_id, "reported_at": datetime.now(UTC).isoformat(),
        "commune": "xa-loc-an", "category": "moi-truong", "priority": "binh-thuong",
        "channel": "ung-dung", "title": "Rác thải đổ trộm ven đường",
        "location": {"lat": 11.83, "lon": 106.60},
        "reporter_name": "Nguyễn Văn A", "reporter_phone": "0912345678",
        "reporter_ref": "app-user-42",
    }
    return {**base, **overrides}


class TopicWatch:
    """Reads topics from the beginning in the background; tests wait for what they expect."""

    def __init__(self, *topics: str) -> None:
        self.records: list[ConsumerRecord[Any, Any]] = []
        self._consumer = make_consumer(*topics, bootstrap=kafka_bootstrap(),
                                       group_id=None, auto_offset_reset="earliest",
                                       enable_auto_commit=False, metadata_max_age_ms=1000)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicWatch:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for part in batch.values():
                self.records.extend(part)

    def envelopes(self, topic: str | None = None, type: str | None = None,
                  subject: str | None = None) -> list[Envelope]:
        found = []
        for rec in self.records:
            if topic is not None and rec.topic != topic:
                continue
            env = Envelope.from_bytes(rec.value)
            if (type is None or env.type == type) and (subject is None or env.subject == subject):
                found.append(env)
        return found

    def headers(self, event_id: uuid.UUID) -> dict[str, str]:
        for rec in self.records:
            h = decode_headers(rec.headers)
            if h.get("ioc-event-id") == str(event_id):
                return h
        raise KeyError(event_id)

    async def wait(self, check: Callable[[], Any], timeout: float = 20.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            result = check()
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {check}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    tag = unique("rt")
    settings = RoutingSettings(
        topic_namespace=tag.replace("_", "-"), db_schema=tag, consumer_group=f"{tag}-group",
        kafka_bootstrap=kafka_bootstrap(), database_url=database_url(), timer_poll_s=0.2,
        http_port=0, log_level="WARNING")
    w = World(settings, tmp_path)
    try:
        yield w
    finally:
        await w.close()
        pool = await asyncpg.create_pool(database_url(), min_size=1, max_size=1)
        try:
            await pool.execute(f"DROP SCHEMA IF EXISTS {tag} CASCADE")
        finally:
            await pool.close()


@pytest.fixture
async def watch(world: World) -> AsyncIterator[Callable[..., Any]]:
    """Start a TopicWatch over the routing output topics (after the service declared them)."""
    watches: list[TopicWatch] = []

    async def start() -> TopicWatch:
        t = world.topics
        w = await TopicWatch(t.events, t.results, t.notifications, t.reporter,
                             t.unauthenticated).start()
        watches.append(w)
        return w

    yield start
    for w in watches:
        await w.stop()
    # Everything routing put on its topics in the test matches its payload model
    # (routing.contract, the AsyncAPI document's schemas).
    problems = {p for w in watches for e in w.envelopes()
                if (p := check_payload(e.type, e.payload)) is not None}
    assert not problems, "\n".join(sorted(problems))


@contextlib.contextmanager
def traced(name: str) -> Any:
    """A producer-side span whose traceparent the test sends with a record."""
    tracer = trace.get_tracer("routing-tests")
    with tracer.start_as_current_span(name) as span:
        yield span
