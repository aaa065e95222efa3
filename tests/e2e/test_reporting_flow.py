"""A field report counted in the monthly report: routing -> reporting, for real.

routing and reporting run as real processes: a canonical field report (as ingest
publishes it: key `<unit>/<record id>`, header `ioc-producer: ingest`) is assigned by
routing (automation) and acknowledged by the unit; reporting's rollups count the
transitions from routing's real events, and an operator's `generate` command is
answered with the published report whose figures count them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaProducer
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.contracts.topics import (
    REPORTING_COMMAND_RESULTS,
    REPORTING_COMMANDS,
    REPORTING_PUBLISHED,
    ROUTING_COMMANDS,
    ROUTING_EVENTS,
)
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_credentials, sign
from ioc_shared.testing import kafka_bootstrap, read_topic

pytestmark = pytest.mark.e2e

SECRETS = load_credentials(REPO_ROOT / "config" / "credentials.dev.yaml")


async def send(producer: AIOKafkaProducer, topic: str, principal: str, value: bytes,
               key: str) -> None:
    headers = [(H_PRINCIPAL, principal.encode()),
               (H_SIGNATURE, sign(SECRETS[principal], value).encode())]
    await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)


def payload_of(record: Any) -> dict[str, Any]:
    return dict(Envelope.from_bytes(record.value).payload)


async def test_routing_events_are_counted_in_the_published_report(deployment: Any) -> None:
    await deployment.start("routing")
    await deployment.start("reporting")
    producer = make_producer(kafka_bootstrap(), client_id="e2e-unit", acks="all")
    await producer.start()
    record_id = f"PA-RP-{uuid.uuid4().hex[:8]}"
    try:
        key = f"xa-loc-an/{record_id}"
        canonical = Envelope(type="ingest.record.accepted", source_unit="xa-loc-an", subject=key,
                             payload={"dataset": "phan-anh-hien-truong", "schema_version": 2,
                                      "record": {
            "record_id": record_id, "reported_at": datetime.now(UTC).isoformat(),
            "commune": "xa-loc-an", "category": "moi-truong", "priority": "binh-thuong",
            "channel": "ung-dung", "title": "Rác thải tồn đọng ở chợ Lộc An",
            "location": {"lat": 11.85, "lon": 106.62}}})
        await producer.send_and_wait(
            deployment.topic(canonical_topic("phan-anh-hien-truong").name), canonical.to_bytes(),
            key=key.encode(), headers=[("ioc-producer", b"ingest")])
        events = await read_topic(deployment.topic(ROUTING_EVENTS.name), timeout=60,
                                  until=lambda rs: any(b"routing.incident.assigned" in r.value
                                                       for r in rs))
        assigned = next(r for r in events if b"routing.incident.assigned" in r.value)
        incident = payload_of(assigned)["incident_id"]
        ack = Envelope(type="routing.command.acknowledge", source_unit="xa-loc-an",
                       subject=incident, payload={"command_id": str(uuid.uuid4())}).to_bytes()
        await send(producer, deployment.topic(ROUTING_COMMANDS.name), "xa-loc-an-system", ack,
                   incident)
        await read_topic(deployment.topic(ROUTING_EVENTS.name), timeout=60,
                         until=lambda rs: any(b"routing.incident.acknowledged" in r.value
                                              for r in rs))
        # The report of the period the incident was received in (today, local time).
        today = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date()
        month = today.month + (today.day >= 15)
        year = today.year + (month > 12)
        period = f"{year}-{(month - 1) % 12 + 1:02d}"
        command_id = str(uuid.uuid4())
        generate = Envelope(type="reporting.command.generate", source_unit="ioc-loc-ninh",
                            subject=period, payload={"command_id": command_id,
                                                     "period": period}).to_bytes()
        published: list[Any] = []
        for _ in range(10):   # until reporting has consumed the acknowledgement
            await send(producer, deployment.topic(REPORTING_COMMANDS.name), "ioc-operator",
                       generate, period)
            before = len(published)
            published = await read_topic(deployment.topic(REPORTING_PUBLISHED.name), timeout=20,
                                         until=lambda rs, n=before: len(rs) > n)
            totals = payload_of(published[-1])["figures"]["incidents"]["totals"]
            if totals["acknowledged"] >= 1:
                break
            command_id = str(uuid.uuid4())
            generate = Envelope(type="reporting.command.generate", source_unit="ioc-loc-ninh",
                                subject=period, payload={"command_id": command_id,
                                                         "period": period}).to_bytes()
        figures = payload_of(published[-1])["figures"]
        totals = figures["incidents"]["totals"]
        assert (totals["received"], totals["verified"], totals["approved"], totals["assigned"],
                totals["acknowledged"]) == (1, 1, 1, 1, 1), totals
        assert [c["commune"] for c in figures["incidents"]["by_commune"]] == ["xa-loc-an"]
        assert figures["incidents"]["by_unit"][0]["unit"] == "xa-loc-an"
        results = await read_topic(deployment.topic(REPORTING_COMMAND_RESULTS.name),
                                   until=lambda rs: any(command_id.encode() in r.value for r in rs))
        answer = next(payload_of(r) for r in results if command_id.encode() in r.value)
        assert answer["status"] == "accepted" and answer["report_status"] == "draft"
    finally:
        await producer.stop()
