"""Ingest's /metrics on the real service (real Kafka and PostgreSQL): records in, messages
out, rejections by reason, handler and batch durations, lag per partition, outbox backlog;
and each rejection it published matches its payload model (`ingest.contract`)."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import orjson
import pytest
from ingest.contract import check_payload
from ingest.service import IngestService
from ioc_shared.testing import metric_naming_problems, metric_value, read_topic

from .helpers import field_report, publish, signed_headers, submission

pytestmark = pytest.mark.connected
WITHIN_S = 30.0


async def test_metrics_count_what_ingest_did(service: IngestService) -> None:
    good = submission(field_report(f"PA-{uuid.uuid4().hex[:10]}"))
    bad_id = f"PA-{uuid.uuid4().hex[:10]}"
    bad = submission(field_report(bad_id, priority="không-có"))
    await publish(service.topics.inbound, [
        (b"xa-loc-an", good, signed_headers("xa-loc-an-system", good)),
        (b"xa-loc-an", bad, signed_headers("xa-loc-an-system", bad))])
    rejections = await read_topic(service.topics.rejected, timeout=WITHIN_S, until=lambda rs: any(
        orjson.loads(r.value)["payload"]["record_id"] == bad_id for r in rs))
    payloads = [orjson.loads(r.value) for r in rejections]
    problems = [p for env in payloads if (p := check_payload(env["type"], env["payload"]))]
    assert payloads and not problems, "\n".join(problems)

    url = f"http://127.0.0.1:{service.http_port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN_S
    while True:   # sampled gauges within a sampling interval (5 s), lag within 2 s
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{url}/metrics", timeout=10)).text
        if (metric_value(text, "ioc_outbox_backlog_messages") is not None
                and re.search(r"^ioc_consumer_lag\{", text, re.M)) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert not metric_naming_problems(text), metric_naming_problems(text)
    assert (metric_value(text, "ioc_messages_consumed_total") or 0) >= 2
    assert (metric_value(text, "ioc_handler_duration_seconds_count") or 0) >= 1
    assert (metric_value(text, "ingest_batch_seconds_count") or 0) >= 1
    assert (metric_value(text, "ioc_messages_produced_total", producer="ingest") or 0) >= 2
    assert (metric_value(text, "ioc_messages_rejected_total", service="ingest",
                   reason="schema_violation") or 0) >= 1
    assert (metric_value(text, "ingest_records_total", outcome="rejected",
                   code="schema_violation") or 0) >= 1
    assert metric_value(text, "ioc_outbox_backlog_messages") is not None
    assert re.search(r'^ioc_consumer_lag\{group="[^"]+",partition="\d+",topic="[^"]+"\} ',
                     text, re.M)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/health/live")).status_code == 200
        assert (await http.get(f"{url}/health/ready")).status_code == 200
