"""The runtime on the real PostgreSQL: the outbox backlog and topic offsets sampled into
/metrics, and readiness false while Kafka does not answer (liveness true)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ioc_shared.contracts import Envelope
from ioc_shared.platform.outbox import enqueue_many
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.testing import database_url, free_port, metric_value, unique

pytestmark = pytest.mark.connected


async def test_outbox_backlog_and_offsets_are_sampled_and_kafka_away_is_not_ready() -> None:
    settings = ServiceSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}",   # nobody there
                               database_url=database_url(), topic_namespace=unique("t"))
    async with ServiceRuntime("probe", settings, schema=unique("t_metrics"),
                              configure_logs=False) as rt:
        assert rt.pool is not None and rt.schema is not None
        try:
            async with rt.pool.acquire() as conn, conn.transaction():
                await enqueue_many(conn, rt.schema, [
                    ("t.events.v1", Envelope(type="x.happened", source_unit="u", subject=str(i)),
                     None, {}) for i in range(3)])
                await conn.execute(f"INSERT INTO {rt.schema}.outbox_positions "
                                   "(topic, partition, next_offset) VALUES ('t.events.v1', 0, 5), "
                                   "('t.events.v1', 1, 7)")
            # (The broker is not started: it would not start without Kafka.)
            for _ in range(100):       # the probes answer (or fail) within a few seconds
                if rt.kafka.up is False and rt.postgres.up:
                    break
                await asyncio.sleep(0.1)
            await rt.sampler.sample_once()
            base = f"http://127.0.0.1:{rt.http_port}"
            async with httpx.AsyncClient(base_url=base) as http:
                text = (await http.get("/metrics")).text
                ready = await http.get("/health/ready")
                live = await http.get("/health/live")
            assert metric_value(text, "ioc_outbox_backlog_messages") == 3
            assert (metric_value(text, "ioc_outbox_oldest_pending_seconds") or -1) >= 0
            assert metric_value(text, "ioc_outbox_topic_offset", topic="t.events.v1") == 12
            assert ready.status_code == 503
            assert ready.json()["checks"]["kafka"] is False
            assert ready.json()["checks"]["postgres"] is True
            assert any(r.startswith("kafka: ") for r in ready.json()["reasons"])
            assert live.status_code == 200
        finally:
            await rt.pool.execute(f"DROP SCHEMA {rt.schema} CASCADE")
