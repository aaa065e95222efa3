"""A citizen field report travels from a commune's system to the responsible unit and back.

ingest and routing run as real processes on the real broker and database:
unit system -> inbound -> ingest -> canonical topic -> routing (auto verify,
approve, assign) -> incident events; the unit acknowledges by command; the
reporter gets status updates without personal data; one W3C trace follows the
report across every hop.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.contracts.headers import H_EVENT_TYPE, H_PRINCIPAL, H_SIGNATURE
from ioc_shared.contracts.topics import (
    INGEST_INBOUND,
    INGEST_QUARANTINE,
    INGEST_REJECTED,
    ROUTING_COMMAND_RESULTS,
    ROUTING_COMMANDS,
    ROUTING_EVENTS,
    ROUTING_REPORTER_UPDATES,
)
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.telemetry import inject_trace_headers, setup_tracing
from ioc_shared.registry import sign
from ioc_shared.testing import headers_of, kafka_bootstrap, read_topic
from routing.domain.model import incident_id_for

pytestmark = pytest.mark.e2e

DATASET = "phan-anh-hien-truong"
SECRETS = {"xa-loc-an-system": "dev-secret-xa-loc-an-0001",
           "tt-loc-ninh-system": "dev-secret-tt-loc-ninh-0001"}
PHONE = "0912 345 678"


def report(record_id: str) -> dict[str, Any]:
    return {"dataset": DATASET, "schema_version": 1, "record": {
        "record_id": record_id,
        "reported_at": "28/11/2026 08:15",
        "commune": "xã Lộc An",
        "category": "moi-truong",
        "title": "Rác thải tồn đọng ở chợ Lộc An",
        "description": "Rác để nhiều ngày, bốc mùi.",
        "location_text": "Ấp Chợ, xã Lộc An",
        "location": {"lat": 11.85, "lon": 106.62},
        "reporter_name": "Nguyễn Văn A",
        "reporter_phone": PHONE,
    }}


async def send(producer: AIOKafkaProducer, topic: str, principal: str, value: bytes,
               key: str, trace_headers: dict[str, str] | None = None) -> None:
    headers = {H_PRINCIPAL: principal, H_SIGNATURE: sign(SECRETS[principal], value),
               **(trace_headers or {})}
    await producer.send_and_wait(topic, value, key=key.encode(),
                                 headers=[(k, v.encode()) for k, v in headers.items()])


def command(verb: str, incident: str) -> bytes:
    return Envelope(type=f"routing.command.{verb}", source_unit="ioc-loc-ninh",  # ignored
                    subject=incident, payload={"command_id": str(uuid.uuid4())}).to_bytes()


def events_of(records: list[Any], incident: str) -> list[str]:
    return [headers_of(r)[H_EVENT_TYPE] for r in records if r.key == incident.encode()]


def trace_id(record: Any) -> str:
    return headers_of(record)["traceparent"].split("-")[1]


async def test_field_report_is_assigned_acknowledged_and_traced(deployment) -> None:
    await deployment.start("ingest")
    await deployment.start("routing")
    producer = make_producer(kafka_bootstrap(), client_id="e2e-unit", acks="all")
    await producer.start()
    tracer = setup_tracing("e2e-unit-system").get_tracer("e2e")
    record_id = f"PA-E2E-{uuid.uuid4().hex[:8]}"
    # Record ids are the publishing unit's own: the incident is (unit, dataset, record id).
    incident = incident_id_for("xa-loc-an", DATASET, record_id)
    try:
        # A broken submission first: it must be rejected and must not block the one after it.
        await send(producer, deployment.topic(INGEST_INBOUND.name), "xa-loc-an-system",
                   b'{"dataset": "phan-anh-hien-truong", "record": {', "xa-loc-an-system")
        with tracer.start_as_current_span("unit-system.publish") as span:
            carrier: dict[str, str] = {}
            inject_trace_headers(carrier)
            sent_trace = format(span.get_span_context().trace_id, "032x")
        value = json.dumps(report(record_id), ensure_ascii=False).encode()
        await send(producer, deployment.topic(INGEST_INBOUND.name), "xa-loc-an-system", value,
                   "xa-loc-an-system", carrier)

        # Ingest's side of the contract with routing: keyed `<unit>/<record id>`, the
        # producer header routing checks, and no personal field (a pseudonym instead).
        canonical = await read_topic(deployment.topic(canonical_topic(DATASET).name),
                                     until=lambda rs: len(rs) >= 1)
        keyed = [r for r in canonical if r.key == f"xa-loc-an/{record_id}".encode()]
        assert len(keyed) == 1, f"canonical keys {[r.key for r in canonical]}: want <unit>/<id>"
        [record] = keyed
        assert headers_of(record).get("ioc-producer") == "ingest", "routing refuses it otherwise"
        body = Envelope.from_bytes(record.value)
        assert body.source_unit == "xa-loc-an"
        assert body.payload["record"]["commune"] == "xa-loc-an"
        assert "reporter_phone" not in body.payload["record"]
        assert "912345678" not in record.value.decode()
        assert body.payload["record"]["reporter_ref"].startswith("r-")

        events_topic = deployment.topic(ROUTING_EVENTS.name)
        events = await read_topic(
            events_topic, until=lambda rs: "routing.incident.assigned" in events_of(rs, incident))
        assert events_of(events, incident)[:4] == [
            "routing.incident.received", "routing.incident.verified",
            "routing.incident.approved", "routing.incident.assigned"]
        assigned = next(r for r in events if r.key == incident.encode()
                        and headers_of(r)[H_EVENT_TYPE] == "routing.incident.assigned")
        assert Envelope.from_bytes(assigned.value).payload["unit"] == "xa-loc-an"
        # One trace from the unit system, through ingest, to the assignment.
        assert trace_id(record) == sent_trace
        assert trace_id(assigned) == sent_trace

        rejected = await read_topic(deployment.topic(INGEST_REJECTED.name),
                                    until=lambda rs: len(rs) >= 1)
        assert rejected[0].key == b"xa-loc-an"
        assert "malformed_json" in rejected[0].value.decode()
        quarantined = await read_topic(deployment.topic(INGEST_QUARANTINE.name),
                                       until=lambda rs: len(rs) >= 1)
        assert quarantined[0].value == b'{"dataset": "phan-anh-hien-truong", "record": {'

        # Another commune may not act on this incident; the assigned one acknowledges it.
        commands = deployment.topic(ROUTING_COMMANDS.name)
        await send(producer, commands, "tt-loc-ninh-system", command("acknowledge", incident),
                   incident)
        await send(producer, commands, "xa-loc-an-system", command("acknowledge", incident),
                   incident)
        results = await read_topic(deployment.topic(ROUTING_COMMAND_RESULTS.name),
                                   until=lambda rs: len(rs) >= 2)
        by_unit = {r.key.decode(): Envelope.from_bytes(r.value).payload for r in results}
        assert by_unit["tt-loc-ninh"]["status"] == "rejected"
        assert by_unit["xa-loc-an"]["status"] == "accepted"
        events = await read_topic(
            events_topic, until=lambda rs: "routing.incident.acknowledged" in events_of(rs, incident))
        assert "routing.incident.acknowledged" in events_of(events, incident)

        # The reporter hears about progress, with no personal data in the updates.
        updates = await read_topic(deployment.topic(ROUTING_REPORTER_UPDATES.name),
                                   until=lambda rs: len(rs) >= 2)
        assert updates
        for u in updates:
            text = u.value.decode()
            assert "912345678" not in text and "Nguyễn Văn A" not in text
    finally:
        await producer.stop()
    for name, proc in deployment.services.items():
        log = proc.log_tail(200_000)
        at = log.find("Traceback")
        assert at < 0, f"{name} logged a traceback:\n{log[max(0, at - 1500):at + 2500]}"
        assert "912345678" not in proc.log_tail(1_000_000), f"{name} logged a phone number"
