"""Envelopes serialized once for the outbox (ioc_shared.serialized)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ioc_shared.contracts import Envelope
from ioc_shared.serialized import envelope_headers, serialize_envelope

NOW = datetime(2026, 6, 3, 2, 0, tzinfo=UTC)


def test_serialized_envelope_parses_as_the_contract_envelope() -> None:
    cause = Envelope(type="ingest.record.accepted", source_unit="xa-a", subject="R-1")
    event_id = uuid.uuid4()
    out = serialize_envelope(event_id=event_id, type="routing.incident.received",
                             source_unit="ioc", subject="inc-1",
                             payload={"at": NOW.isoformat(), "steps": (1, 2)}, cause=cause)
    env = Envelope.from_bytes(out.to_bytes())
    assert (env.event_id, env.type, env.subject, env.source_unit) == (
        event_id, "routing.incident.received", "inc-1", "ioc")
    assert env.causation_id == cause.event_id and env.correlation_id == cause.event_id
    assert env.payload == {"at": NOW.isoformat(), "steps": [1, 2]}
    assert out.key == b"inc-1"


def test_headers_carry_id_type_and_the_given_trace() -> None:
    event_id = uuid.uuid4()
    out = serialize_envelope(event_id=event_id, type="report.published", source_unit="ioc",
                             subject="monthly:2026-05", payload={}, cause=None, at=NOW)
    env = Envelope.from_bytes(out.to_bytes())
    assert env.causation_id is None and env.correlation_id is None and env.occurred_at == NOW
    trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    assert envelope_headers(out, trace) == {"ioc-event-id": str(event_id),
                                            "ioc-event-type": "report.published", **trace}
