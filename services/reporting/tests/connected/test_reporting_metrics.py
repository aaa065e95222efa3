"""Reporting's /metrics on the real service (real Kafka and PostgreSQL): report generation
time, messages in, out and refused by reason, handler durations, outbox backlog, timers due."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ioc_shared.testing import metric_naming_problems, metric_value
from reporting_harness import World
from test_reporting_web import serve_with_a_report

pytestmark = pytest.mark.connected
WITHIN_S = 60.0


async def test_metrics_count_what_reporting_did(rworld: World) -> None:
    base = await serve_with_a_report(rworld)
    await rworld.command("ioc-operator", "teleport", "monthly:2026-10")   # refused

    async def scraped() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{base}/metrics", timeout=10)).text

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN_S
    while True:   # the refusal is counted once handled; sampled gauges within 5 s
        text = await scraped()
        if ((metric_value(text, "ioc_messages_rejected_total", service="reporting") or 0) >= 1
                and metric_value(text, "ioc_timers_due", service="reporting") is not None
                and (metric_value(text, "ioc_messages_produced_total", producer="reporting") or 0) >= 1
                ) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert metric_value(text, "reporting_report_generation_seconds_count", kind="monthly") == 1
    assert metric_value(text, "reporting_report_generation_seconds_bucket", kind="monthly",
                  le="+Inf") == 1
    assert not metric_naming_problems(text), metric_naming_problems(text)
    assert (metric_value(text, "ioc_messages_consumed_total") or 0) >= 61   # 60 events, 1 command
    assert (metric_value(text, "ioc_handler_duration_seconds_count") or 0) >= 1
    assert (metric_value(text, "ioc_messages_rejected_total", service="reporting") or 0) >= 1
    assert (metric_value(text, "ioc_messages_produced_total", producer="reporting") or 0) >= 1
    assert metric_value(text, "ioc_timers_due", service="reporting") == 0    # timers are off
    assert metric_value(text, "ioc_outbox_backlog_messages") is not None
    # (Lag per partition: the kit's LagMonitor, tested in shared/tests/connected.)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/health/live")).status_code == 200
