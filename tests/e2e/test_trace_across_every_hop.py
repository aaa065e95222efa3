"""One trace follows a citizen's field report across every hop, and no log holds their data.

ingest, routing, reporting and sync-province run as real processes (with the province's
HTTPS-gateway simulator) on the real district broker, the provincial SASL_SSL broker and
PostgreSQL, each writing its spans to one OTLP/JSON lines file (`IOC_TRACES_FILE`, as
`make up` does). The unit publishes one field report with a known `traceparent`; it is
assigned automatically, acknowledged, resolved and closed by signed commands (each with
a trace of its own); reporting counts it in a generated report; sync-province forwards the
record to both province targets. Then the spans must form one trace with the expected
parent links, and the four services' logs must hold none of the citizen's personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE, H_PRINCIPAL, H_SIGNATURE
from ioc_shared.contracts.topics import (
    INGEST_INBOUND,
    INGEST_REJECTED,
    REPORTING_COMMANDS,
    REPORTING_PUBLISHED,
    ROUTING_COMMAND_RESULTS,
    ROUTING_COMMANDS,
    ROUTING_EVENTS,
)
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_credentials, sign
from ioc_shared.testing import (
    database_url,
    delete_province_topics,
    free_port,
    headers_of,
    kafka_bootstrap,
    province_security,
    read_topic,
)
from routing.domain.model import incident_id_for

pytestmark = pytest.mark.e2e

SECRETS = load_credentials(REPO_ROOT / "config" / "credentials.dev.yaml")
DATASET = "phan-anh-hien-truong"
PROVINCE = os.environ.get("IOC_PROVINCE_KAFKA_BOOTSTRAP")

# The citizen's personal data in this run's test data: none of it may reach a log.
REPORTER_NAME = "Trần Thị Bích Ngọc"
REPORTER_PHONE = "0987 654 321"
NATIONAL_ID = "079301004217"
HOME_ADDRESS = "Số 17 đường Nguyễn Huệ, khu phố Ninh Thịnh"
INCIDENT_ADDRESS = "Tổ 4, ấp Hưng Thủy, xã Lộc An"
PERSONAL = (REPORTER_NAME, REPORTER_PHONE, "987654321", "987 654 321", NATIONAL_ID,
            HOME_ADDRESS, INCIDENT_ADDRESS, "Bích Ngọc")

UNIT_TRACE = uuid.uuid4().hex
UNIT_SPAN = uuid.uuid4().hex[:16]


def field_report(record_id: str, **extra: Any) -> dict[str, Any]:
    return {"dataset": DATASET, "schema_version": 1, "record": {
        "record_id": record_id, "reported_at": "01/12/2026 08:15", "commune": "xã Lộc An",
        "category": "moi-truong", "title": "Rác thải tồn đọng cạnh trường tiểu học",
        "description": "Rác để nhiều ngày, bốc mùi.", "location_text": INCIDENT_ADDRESS,
        "location": {"lat": 11.85, "lon": 106.62}, "reporter_name": REPORTER_NAME,
        "reporter_phone": REPORTER_PHONE, **extra}}


async def send(producer: AIOKafkaProducer, topic: str, principal: str, value: bytes, key: str,
               traceparent: str) -> None:
    headers = {H_PRINCIPAL: principal, H_SIGNATURE: sign(SECRETS[principal], value),
               "traceparent": traceparent}
    await producer.send_and_wait(topic, value, key=key.encode(),
                                 headers=[(k, v.encode()) for k, v in headers.items()])


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


# --- spans ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    links: tuple[tuple[str, str], ...]
    attributes: dict[str, Any]


def read_spans(path: Path) -> list[Span]:
    spans = []
    for line in path.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        for resource in request.get("resourceSpans", ()):
            service = next(a["value"]["stringValue"] for a in resource["resource"]["attributes"]
                           if a["key"] == "service.name")
            for scope in resource.get("scopeSpans", ()):
                for s in scope.get("spans", ()):
                    spans.append(Span(
                        service, s["name"], s["traceId"], s["spanId"],
                        s.get("parentSpanId") or None,
                        tuple((link["traceId"], link["spanId"]) for link in s.get("links", ())),
                        {a["key"]: next(iter(a["value"].values()), None)
                         for a in s.get("attributes", ())}))
    return spans


# --- the province ----------------------------------------------------------------------
async def province_record(topic: str, partition: int, event_id: str, timeout: float = 45) -> Any:
    """The record `event_id` on the province's `topic` (read committed), once it is there
    (on the partition it had at the district)."""
    kwargs = {"bootstrap_servers": PROVINCE, "group_id": None, "enable_auto_commit": False,
              "isolation_level": "read_committed", **province_security().client_kwargs()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer = AIOKafkaConsumer(**kwargs)
        try:
            await consumer.start()
            if topic in await consumer.topics():
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                for _ in range(5):
                    for records in (await consumer.getmany(timeout_ms=300)).values():
                        for r in records:
                            if headers_of(r).get(H_EVENT_ID) == event_id:
                                return r
        finally:
            await consumer.stop()
        await asyncio.sleep(0.5)
    raise AssertionError(f"{event_id} did not reach the province topic {topic}")


@contextlib.asynccontextmanager
async def gateway(tmp: Path, schema: str) -> AsyncIterator[int]:
    """The province's HTTPS-gateway simulator (plain HTTP here), on a port of its own."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "sync_province.simulator", "--port", str(port), "--schema", schema,
         "--database-url", database_url(), "--token-file", str(tmp / "gateway-token")],
        stdout=(tmp / "simulator.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield port
    finally:
        proc.kill()
        proc.wait()


async def eventually(check: Callable[[], Any], what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"no {what} in {timeout} s")


def report_period() -> str:
    """The report period the incident was received in (today, local time)."""
    today = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    month = today.month + (today.day >= 15)
    return f"{today.year + (month > 12)}-{(month - 1) % 12 + 1:02d}"


# --- the test --------------------------------------------------------------------------
async def test_one_trace_from_the_units_publish_to_the_province_and_no_personal_data_in_logs(
        deployment: Any) -> None:
    if not PROVINCE:
        if os.environ.get("CI"):
            pytest.fail("IOC_PROVINCE_KAFKA_BOOTSTRAP unset: scripts/platform.sh start the province")
        pytest.skip("no provincial broker (IOC_PROVINCE_KAFKA_BOOTSTRAP)")
    tmp: Path = deployment.tmp
    traces_file = tmp / "traces.jsonl"
    sync_schema = f"{deployment.namespace.replace('-', '_')}_sync"
    (tmp / "gateway-token").write_text("province-gateway-token-for-tests")
    province_prefix = f"{deployment.namespace}.loc-ninh"
    deployment.env.update({
        "IOC_TRACES_FILE": str(traces_file), "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SYNC_PROVINCE_SCHEMA_NAME": sync_schema, "SYNC_PROVINCE_TARGETS": "kafka,http",
        "SYNC_PROVINCE_PROVINCE_TOPIC_PREFIX": province_prefix,
        "SYNC_PROVINCE_SIGNING_KEY_FILE": str(tmp / "share-log.pem"),
        "SYNC_PROVINCE_GATEWAY_TOKEN_FILE": str(tmp / "gateway-token"),
        "SYNC_PROVINCE_RETRY_MAX_WAIT_S": "0.5", "SYNC_PROVINCE_STATUS_INTERVAL_S": "1",
    })
    record_id = f"PA-TR-{uuid.uuid4().hex[:8]}"
    incident = incident_id_for("xa-loc-an", DATASET, record_id)
    producer = make_producer(kafka_bootstrap(), client_id="e2e-unit", acks="all")
    pool = await asyncpg.create_pool(database_url(), min_size=1, max_size=2)
    assert pool is not None
    commands: dict[str, tuple[str, str]] = {}    # verb -> (its trace id, its span id)
    try:
        async with gateway(tmp, f"{sync_schema}_sim") as port:
            deployment.env["SYNC_PROVINCE_GATEWAY_URL"] = f"http://127.0.0.1:{port}"
            await deployment.start("ingest")     # declares the district topics
            await asyncio.gather(deployment.start("routing"), deployment.start("reporting"),
                                 deployment.start("sync-province"))
            await producer.start()
            inbound = deployment.topic(INGEST_INBOUND.name)
            # The same citizen's data in a submission ingest must refuse (fields it does not
            # know): a rejection must not repeat them in a log either.
            refused = json.dumps(field_report(f"{record_id}-x", reporter_national_id=NATIONAL_ID,
                                              reporter_address=HOME_ADDRESS),
                                 ensure_ascii=False).encode()
            await send(producer, inbound, "xa-loc-an-system", refused, "xa-loc-an-system",
                       new_traceparent()[0])
            value = json.dumps(field_report(record_id), ensure_ascii=False).encode()
            await send(producer, inbound, "xa-loc-an-system", value, "xa-loc-an-system",
                       f"00-{UNIT_TRACE}-{UNIT_SPAN}-01")
            rejected = await read_topic(deployment.topic(INGEST_REJECTED.name), timeout=30,
                                        until=lambda rs: len(rs) >= 1)
            assert b"unknown_field" in rejected[0].value

            events_topic = deployment.topic(ROUTING_EVENTS.name)

            def events_of(records: list[Any]) -> list[str]:
                return [headers_of(r)[H_EVENT_TYPE] for r in records
                        if r.key == incident.encode()]

            await read_topic(events_topic, timeout=45, until=lambda rs: (
                "routing.incident.assigned" in events_of(rs)))
            # The unit drives it to closure, the IOC closes it: each command its own trace.
            for principal, verb, payload, event in (
                    ("xa-loc-an-system", "acknowledge", {}, "routing.incident.acknowledged"),
                    ("xa-loc-an-system", "resolve", {"resolution_note": "Đã thu gom rác"},
                     "routing.incident.resolved"),
                    ("ioc-operator", "close", {}, "routing.incident.closed")):
                traceparent, trace_id, span_id = new_traceparent()
                commands[verb] = (trace_id, span_id)
                cmd = Envelope(type=f"routing.command.{verb}", source_unit="ioc-loc-ninh",
                               subject=incident,
                               payload={"command_id": str(uuid.uuid4()), **payload}).to_bytes()
                await send(producer, deployment.topic(ROUTING_COMMANDS.name), principal, cmd,
                           incident, traceparent)
                await read_topic(events_topic, timeout=30,
                                 until=lambda rs, e=event: e in events_of(rs))
            results = await read_topic(deployment.topic(ROUTING_COMMAND_RESULTS.name),
                                       until=lambda rs: len(rs) >= 3)
            assert all(b'"accepted"' in r.value for r in results), [r.value for r in results]

            # Reporting counts it: a report generated on command shows it received and closed.
            period = report_period()
            published: list[Any] = []
            totals: dict[str, int] = {}
            for _ in range(15):
                generate = Envelope(type="reporting.command.generate", source_unit="ioc-loc-ninh",
                                    subject=period, payload={"command_id": str(uuid.uuid4()),
                                                             "period": period}).to_bytes()
                await send(producer, deployment.topic(REPORTING_COMMANDS.name), "ioc-operator",
                           generate, period, new_traceparent()[0])
                before = len(published)
                published = await read_topic(deployment.topic(REPORTING_PUBLISHED.name),
                                             timeout=20, until=lambda rs, n=before: len(rs) > n)
                body = Envelope.from_bytes(published[-1].value).payload
                totals = body["figures"]["incidents"]["totals"]
                if totals.get("closed", 0) >= 1:
                    break
                await asyncio.sleep(0.5)
            assert totals["received"] == 1 and totals["closed"] == 1, totals

            # sync-province forwards the record to both province targets.
            canonical = await read_topic(deployment.topic(canonical_topic(DATASET).name),
                                         until=lambda rs: len(rs) >= 1)
            [record] = [r for r in canonical if r.key == f"xa-loc-an/{record_id}".encode()]
            event_id = headers_of(record)[H_EVENT_ID]
            at_province = await province_record(
                f"{province_prefix}.{canonical_topic(DATASET).name}", record.partition, event_id)
            gateway_rows = await eventually(lambda: pool.fetch(
                f"SELECT headers FROM {sync_schema}_sim.received WHERE event_id = $1",
                event_id), "record at the province's gateway")
    finally:
        await producer.stop()
        for proc in deployment.services.values():
            proc.stop()      # SIGTERM: each flushes its last spans
        with contextlib.suppress(Exception):
            await delete_province_topics(province_prefix + ".")
        for schema in (sync_schema, f"{sync_schema}_sim"):
            await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()

    spans = read_spans(traces_file)
    ours = [s for s in spans if s.trace_id == UNIT_TRACE]
    by_id = {s.span_id: s for s in ours}
    names = sorted({(s.service, s.name) for s in ours})

    def named(prefix: str, service: str | None = None) -> list[Span]:
        return [s for s in ours if s.name.startswith(prefix)
                and (service is None or s.service.startswith(service))]

    def ancestors(span: Span) -> list[Span]:
        chain = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append(span)
        return chain

    # Every hop is in the one trace, each span's parent in it too: the only parent outside
    # is the unit's publish, of ingest's span for the record.
    assert {s.service.split("-relay")[0] for s in ours} >= {
        "ingest", "routing", "reporting", "sync-province"}, names
    outside = [s for s in ours if s.parent_id not in by_id]
    assert [(s.service, s.name, s.parent_id) for s in outside] == [
        ("ingest", "ingest record", UNIT_SPAN)], names
    [ingest_record] = outside
    # routing's intake <- ingest's span of the record (ingest publishes under it).
    [intake] = named("routing.intake")
    assert by_id[intake.parent_id or ""].service == "ingest"
    assert ingest_record in [by_id[intake.parent_id or ""], *ancestors(intake)]
    # Each command is decided in the incident's trace, under its intake, linked to its own.
    everywhere = {s.span_id: s for s in spans}
    for verb, (own_trace, own_span) in commands.items():
        [decided] = named(f"routing.command {verb}")
        assert decided.parent_id == intake.span_id
        # Linked to routing's span of the command in the command's own trace.
        [(linked_trace, linked_span)] = decided.links
        received = everywhere[linked_span]
        assert (linked_trace, received.parent_id) == (own_trace, own_span), verb
    # Reporting's rollup counted each of the incident's events under routing's publish of it.
    rollups = named("reporting.rollup", "reporting")
    assert len(rollups) >= 7, names        # received ... closed
    assert all(by_id[r.parent_id or ""].name.endswith(" publish")
               and by_id[r.parent_id or ""].service.startswith("routing") for r in rollups)
    # sync-province continued the record's trace to both targets, and each got its span.
    forwarded = named("", "sync-province")
    kafka_publish = [s for s in forwarded if s.name.startswith(f"{province_prefix}.")]
    gateway_publish = [s for s in forwarded if s.name.endswith(" gateway publish")]
    assert kafka_publish and gateway_publish, names
    for s in kafka_publish + gateway_publish:
        assert by_id[s.parent_id or ""].service == "ingest"
        assert ingest_record in [by_id[s.parent_id or ""], *ancestors(s)]
    assert named("POST /v1/batches", "sync-province")
    _, trace_id, span_id, _ = headers_of(at_province)["traceparent"].split("-")
    assert trace_id == UNIT_TRACE and span_id in {s.span_id for s in kafka_publish}
    stored = gateway_rows[0]["headers"]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored["traceparent"].split("-")[1] == UNIT_TRACE
    assert stored["traceparent"].split("-")[2] in {s.span_id for s in gateway_publish}
    # Database calls inside handlers are child spans.
    assert any(s.name.startswith("postgresql ") for s in ours)

    # `ioc trace` prints the tree from the same file.
    shown = subprocess.run(  # noqa: ASYNC221 (the last step: nothing else runs meanwhile)
        [sys.executable, "-m", "ioc_cli", "trace", UNIT_TRACE, "--file", str(traces_file),
         "--json"], capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["spans"] == len(ours)

    # No log line of any of the four services holds the citizen's personal data.
    for name, proc in deployment.services.items():
        text = proc.log_path.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in text, f"{name} logged a traceback"
        readable = "\n".join(_readable(line) for line in text.splitlines())
        for secret in PERSONAL:
            assert secret not in readable, f"{name} logged personal data ({secret!r})"


def _readable(line: str) -> str:
    """A JSON log line with its escapes undone (a name may be written as \\u1ea7...)."""
    try:
        return json.dumps(json.loads(line), ensure_ascii=False)
    except json.JSONDecodeError:
        return line
