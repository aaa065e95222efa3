"""Routing's /metrics on the real service (real Kafka and PostgreSQL): messages in, out and
refused by reason, handler durations, lag per partition, outbox backlog, timers due; and
every message it put on its topics matches its payload model (`routing.contract`)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from ioc_shared.testing import metric_naming_problems, metric_value
from routing.contract import check_payload
from routing_harness import TopicWatch, World, record

pytestmark = pytest.mark.connected
WITHIN_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(fetch: Callable[[], Awaitable[str]], ok: Callable[[str], bool],
                timeout: float = WITHIN_S) -> str:
    """`fetch()` again until `ok` holds for what it returned (bounded: never timed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await fetch()
        if ok(found) or loop.time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_metrics_count_what_routing_did(world: World, watch: Any) -> None:
    port = _free_port()
    world.settings = world.settings.model_copy(update={"http_port": port})
    await world.start()
    w: TopicWatch = await watch()
    t = world.topics
    incident = await world.publish_record(record("METRICS-1"))
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned", incident), WITHIN_S)
    await world.command("xa-loc-an-system", "teleport", incident)        # unknown verb
    await world.command("xa-loc-an-system", "acknowledge", incident)
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.acknowledged", incident),
                 WITHIN_S)
    await w.wait(lambda: [e for e in w.envelopes(t.results)
                          if e.payload.get("reason_code") == "unknown_command"], WITHIN_S)

    async def scraped() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text

    # The sampled gauges come within a sampling interval (5 s).
    text = await until(scraped, lambda s: (metric_value(s, "ioc_outbox_topic_offset",
                                                  topic=t.events) or 0) >= 3
                       and metric_value(s, "ioc_timers_due", service="routing") is not None
                       and re.search(r"^ioc_consumer_lag\{", s, re.M) is not None)
    assert not metric_naming_problems(text), metric_naming_problems(text)
    assert (metric_value(text, "ioc_messages_consumed_total") or 0) >= 1
    assert (metric_value(text, "ioc_handler_duration_seconds_count") or 0) >= 1
    assert metric_value(text, "ioc_handler_duration_seconds_bucket", le="+Inf") is not None
    assert (metric_value(text, "ioc_messages_rejected_total", service="routing",
                   reason="unknown_command") or 0) >= 1
    assert (metric_value(text, "routing_refused_inputs_total", input="command",
                   reason="unknown_command") or 0) >= 1
    assert metric_value(text, "ioc_outbox_backlog_messages") is not None
    assert metric_value(text, "ioc_outbox_oldest_pending_seconds") is not None
    # The incident's acknowledge deadline and its reminders are due later, not now.
    assert metric_value(text, "ioc_timers_due", service="routing") == 0
    assert re.search(r'^ioc_consumer_lag\{group="[^"]+",partition="\d+",topic="[^"]+"\} ',
                     text, re.M)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/health/live")).status_code == 200
        assert (await http.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200

    # Every message routing put on its topics matches its documented payload.
    sent = w.envelopes()
    assert {e.type for e in sent} >= {"routing.incident.received", "routing.incident.assigned",
                                      "routing.notification.assigned", "routing.command.result",
                                      "routing.reporter.status-changed"}
    problems = [p for e in sent if (p := check_payload(e.type, e.payload)) is not None]
    assert not problems, "\n".join(problems)
