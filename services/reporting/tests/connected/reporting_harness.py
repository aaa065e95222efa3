"""Reporting against the real broker and database: one isolated world per test.

Each test gets its own topic namespace, PostgreSQL schema and consumer group.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from ioc_shared.calendar_vn import WorkingCalendar
from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.contracts.topics import ROUTING_EVENTS
from ioc_shared.platform.kafka import make_consumer, make_producer
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_credentials
from ioc_shared.testing import InLoopServices, database_url, kafka_bootstrap, signed_command, unique
from reporting.bootstrap import run_reporting
from reporting.domain import incidents as inc
from reporting.settings import ReportingSettings

SECRETS = load_credentials(REPO_ROOT / "config" / "credentials.dev.yaml")


def recount(events: Iterable[bytes], calendar: WorkingCalendar) -> dict[inc.RollupKey, int]:
    """The incident rollups recomputed from the source events in one go."""
    by_incident: dict[str, dict[str, inc.Transition]] = {}
    for raw in events:
        data = orjson.loads(raw)
        t = inc.transition_from_event(data["event_id"], data["type"], data["payload"])
        by_incident.setdefault(data["payload"]["incident_id"], {})[t.event_id] = t
    total: Counter[inc.RollupKey] = Counter()
    for incident_id, ts in by_incident.items():
        total.update(inc.fold(incident_id, list(ts.values()), calendar).contribution)
    return {k: n for k, n in total.items() if n}


@dataclass
class World:
    settings: ReportingSettings
    tmp: Path
    pool: asyncpg.Pool | None = None
    producer: AIOKafkaProducer | None = None
    services: InLoopServices = field(default_factory=lambda: InLoopServices("reporting"))

    @property
    def schema(self) -> str:
        return self.settings.db_schema

    def topic(self, spec: Any) -> str:
        return str(self.settings.topic(spec).name)

    async def start(self, instance: str = "a", clock: Callable[[], datetime] | None = None,
                    extras: dict[str, Any] | None = None, **overrides: Any) -> None:
        settings = self.settings.model_copy(update={"instance_id": f"test-{instance}", **overrides})
        await self.services.start(lambda stop, ready: run_reporting(
            settings, stop, ready=ready, clock=clock, configure_logs=False, extras=extras))

    async def stop(self) -> None:
        await self.services.stop()

    async def db(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(database_url(), min_size=1, max_size=2)
        assert self.pool is not None
        return self.pool

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            self.producer = make_producer(kafka_bootstrap(), client_id="test", acks="all",
                                          linger_ms=5)
            await self.producer.start()
        return self.producer

    async def send(self, topic: str, items: Sequence[tuple[str, bytes]]) -> None:
        producer = await self._producer()
        # As the producing service sends them: routing's incident events, ingest's others.
        producer_name = b"routing" if topic == self.topic(ROUTING_EVENTS) else b"ingest"
        futures = [await producer.send(topic, value, key=key.encode(),
                                       headers=[(H_PRODUCER, producer_name)])
                   for key, value in items]
        await asyncio.gather(*futures)

    async def send_incident_events(self, items: Sequence[tuple[str, bytes]]) -> None:
        await self.send(self.topic(ROUTING_EVENTS), items)

    async def command(self, principal: str, verb: str, subject: str, *,
                      sign_with: str | None = None, command_id: str | None = None,
                      **payload: Any) -> str:
        from ioc_shared.contracts.topics import REPORTING_COMMANDS

        command_id = command_id or str(uuid.uuid4())
        value, headers = signed_command(f"reporting.command.{verb}", subject,
                                        {"command_id": command_id, **payload},
                                        principal=principal, secret=SECRETS[sign_with or principal])
        producer = await self._producer()
        await producer.send_and_wait(self.topic(REPORTING_COMMANDS), value, key=subject.encode(),
                                     headers=headers)
        return command_id

    async def rollup(self) -> dict[inc.RollupKey, int]:
        pool = await self.db()
        rows = await pool.fetch(
            f"SELECT day, measure, unit, commune, category, source, n "
            f"FROM {self.schema}.incident_daily WHERE n <> 0")
        return {(r["day"], r["measure"], r["unit"], r["commune"], r["category"], r["source"]):
                r["n"] for r in rows}

    async def wait_for(self, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = None
        while loop.time() < deadline:
            last = await check()
            if last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s; last: {last!r}"[:2000])

    async def caught_up(self, group: str, topic: str) -> bool:
        """Whether `group` committed the end offset of every partition of `topic`."""
        from aiokafka import TopicPartition

        consumer = make_consumer(bootstrap=kafka_bootstrap(), group_id=group,
                                 enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not parts:
                await consumer._client.force_metadata_update()
                parts = [TopicPartition(topic, p)
                         for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(parts)
            for tp in parts:
                if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                    return False
            return bool(parts)
        finally:
            await consumer.stop()

    async def close(self) -> None:
        await self.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            await self.pool.close()


def shuffled_with_duplicates(items: list[Any], seed: int = 3) -> list[Any]:
    rng = random.Random(seed)
    out = items + rng.sample(items, len(items) // 3)
    rng.shuffle(out)
    return out


@pytest.fixture
async def rworld(tmp_path: Path) -> AsyncIterator[World]:
    tag = unique("rp")
    settings = ReportingSettings(
        topic_namespace=tag.replace("_", "-"), db_schema=tag, consumer_group=f"{tag}-group",
        kafka_bootstrap=kafka_bootstrap(), database_url=database_url(), timer_poll_s=0.2,
        http_port=0, log_level="WARNING", output_dir=tmp_path / "reports", batch_timeout_ms=20)
    w = World(settings, tmp_path)
    try:
        yield w
    finally:
        await w.close()
