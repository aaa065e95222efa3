"""Reporting's /metrics on the real service (real Kafka and PostgreSQL): report generation
time, messages in, out and refused by reason, handler durations, lag per partition, outbox
backlog, timers due."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from reporting_harness import World
from test_reporting_web import serve_with_a_report

pytestmark = pytest.mark.connected
WITHIN_S = 30.0


def _value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample `name` with (at least) `labels`, from /metrics text."""
    for line in text.splitlines():
        found = re.match(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if found is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(found.group(3))
    return None


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
        if ((_value(text, "ioc_messages_rejected_total", service="reporting") or 0) >= 1
                and _value(text, "ioc_timers_due", service="reporting") is not None
                and (_value(text, "ioc_messages_produced_total", producer="reporting") or 0) >= 1
                ) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert _value(text, "reporting_report_generation_seconds_count", kind="monthly") == 1
    assert _value(text, "reporting_report_generation_seconds_bucket", kind="monthly",
                  le="+Inf") == 1
    assert (_value(text, "ioc_messages_consumed_total") or 0) >= 61   # 60 events, 1 command
    assert (_value(text, "ioc_handler_duration_seconds_count") or 0) >= 1
    assert (_value(text, "ioc_messages_rejected_total", service="reporting") or 0) >= 1
    assert (_value(text, "ioc_messages_produced_total", producer="reporting") or 0) >= 1
    assert _value(text, "ioc_timers_due", service="reporting") == 0    # timers are off
    assert _value(text, "ioc_outbox_backlog_messages") is not None
    assert re.search(r'^ioc_consumer_lag\{group="[^"]+",partition="\d+",topic="[^"]+"\} ',
                     text, re.M)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/health/live")).status_code == 200
