"""The hand-built envelope bytes must be exactly what the shared Envelope contract reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ingest.outgoing import envelope_bytes
from ioc_shared.contracts.envelope import Envelope


def test_fast_envelope_bytes_match_the_contract() -> None:
    fields = {
        "event_id": uuid.uuid4(), "type": "ingest.record.accepted", "source_unit": "xa-loc-an",
        "subject": "PA-1", "occurred_at": datetime(2026, 11, 28, 7, 30, tzinfo=UTC),
        "produced_at": datetime(2026, 11, 28, 7, 30, 1, 123456, tzinfo=UTC),
        "causation_id": uuid.uuid4(),
        "payload": {"record": {"title": "Rác thải", "n": 1.5, "geo": {"lat": 11.8, "lon": 106.6}}},
    }
    fast = envelope_bytes(**fields)  # type: ignore[arg-type]
    assert Envelope.from_bytes(fast) == Envelope(**fields)  # type: ignore[arg-type]
    assert fast == Envelope(**fields).to_bytes()  # type: ignore[arg-type]
