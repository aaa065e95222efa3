import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from ioc_shared.contracts import Envelope, deterministic_event_id, new_event_id
from ioc_shared.contracts.envelope import EnvelopeHead, envelope_json_schema
from pydantic import ValidationError


def test_new_event_ids_are_time_ordered_uuid7() -> None:
    ids = [new_event_id() for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids, key=lambda u: u.bytes)


def test_deterministic_event_id_is_stable_and_distinguishes_parts() -> None:
    a = deterministic_event_id("xa-loc-an", "phan-anh-hien-truong", "PA-1")
    assert a == deterministic_event_id("xa-loc-an", "phan-anh-hien-truong", "PA-1")
    assert a != deterministic_event_id("xa-loc-an", "phan-anh-hien-truong", "PA-2")
    # Joining must not let different part boundaries collide.
    assert deterministic_event_id("ab", "c") != deterministic_event_id("a", "bc")


def test_round_trip_keeps_every_field_and_converts_times_to_utc() -> None:
    local = timezone(timedelta(hours=7))
    env = Envelope(type="ingest.record.accepted", source_unit="xa-loc-an", subject="PA-1",
                   occurred_at=datetime(2026, 11, 28, 14, 30, tzinfo=local),
                   payload={"title": "Đường hư hỏng"})
    back = Envelope.from_bytes(env.to_bytes())
    assert back == env
    assert back.occurred_at.utcoffset() == timedelta(0)
    assert back.occurred_at == datetime(2026, 11, 28, 7, 30, tzinfo=UTC)
    assert back.key == b"PA-1"


def test_envelope_is_frozen_and_rejects_unknown_fields() -> None:
    env = Envelope(type="x.y", source_unit="u")
    with pytest.raises(ValidationError):
        env.type = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Envelope.model_validate({"type": "x.y", "source_unit": "u", "surprise": 1})


@pytest.mark.parametrize("bad", [
    {"type": "x.y", "source_unit": "u", "occurred_at": "2026-11-28T10:00:00"},  # naive time
    {"type": "Bad Type", "source_unit": "u"},
    {"type": "x.y", "source_unit": ""},
    {"type": "x.y", "source_unit": "u", "schema_version": 0},
])
def test_invalid_envelopes_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate(bad)


def test_caused_event_carries_correlation_and_causation() -> None:
    first = Envelope(type="a.b", source_unit="u", subject="inc-1")
    second = first.caused(type="a.c", source_unit="ioc", payload={})
    third = second.caused(type="a.d", source_unit="ioc", payload={})
    assert second.causation_id == first.event_id
    assert second.correlation_id == first.event_id
    assert third.correlation_id == first.event_id and third.causation_id == second.event_id
    assert third.subject == "inc-1"


def test_json_schema_export_describes_the_envelope() -> None:
    schema = json.loads(envelope_json_schema())
    assert {"event_id", "type", "source_unit", "occurred_at", "payload"} <= set(schema["properties"])
    assert uuid.UUID(str(new_event_id()))


def test_deterministic_event_id_is_exactly_uuid5_of_the_joined_parts() -> None:
    from ioc_shared.contracts.envelope import _EVENT_NAMESPACE

    for parts in [("a",), ("ingest.record.accepted", "xa-loc-an", "ds", "PA-1", "ab" * 16),
                  (uuid.uuid4(), "grant", 3), ("Lộc Thạnh", 1.5, None), ("",)]:
        fast = deterministic_event_id(*parts)
        slow = uuid.uuid5(_EVENT_NAMESPACE, "\x1f".join(str(p) for p in parts))
        assert fast == slow and str(fast) == str(slow) and hash(fast) == hash(slow)
        assert fast.version == 5 and fast.variant == uuid.RFC_4122


def test_head_reads_what_the_full_parse_reads() -> None:
    parent = Envelope(type="ingest.record.accepted", source_unit="xa-loc-an", payload={"a": 1})
    env = parent.caused(type="routing.incident.received", source_unit="ioc-loc-ninh",
                        payload={"dataset": "d", "record": {"x": "Lộc Ninh"}})
    head = EnvelopeHead.read(env.to_bytes())
    assert head is not None
    assert (head.event_id, head.type, head.source_unit, head.correlation_id, head.payload) == (
        env.event_id, env.type, env.source_unit, env.correlation_id, env.payload)
    assert EnvelopeHead.read(parent.to_bytes()).correlation_id is None  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [
    b"", b"\xff\xfe", b"[]", b"null", b'"text"', b"{}",
    b'{"event_id": "not-a-uuid", "type": "t", "source_unit": "u"}',
    b'{"event_id": 5, "type": "t", "source_unit": "u"}',
    b'{"event_id": "01a22373-ad2c-73de-89ad-3f6171f99594", "type": "", "source_unit": "u"}',
    b'{"event_id": "01a22373-ad2c-73de-89ad-3f6171f99594", "type": 1, "source_unit": "u"}',
    b'{"event_id": "01a22373-ad2c-73de-89ad-3f6171f99594", "type": "t"}',
    b'{"event_id": "01a22373-ad2c-73de-89ad-3f6171f99594", "type": "t", "source_unit": "u",'
    b' "payload": []}',
    b'{"event_id": "01a22373-ad2c-73de-89ad-3f6171f99594", "type": "t", "source_unit": "u",'
    b' "correlation_id": "x"}',
])
def test_head_of_anything_else_is_none(raw: bytes) -> None:
    assert EnvelopeHead.read(raw) is None
