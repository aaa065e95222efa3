"""The event envelope carried by every message on every topic.

Trace context is not part of the envelope: it travels in Kafka headers
(W3C `traceparent`/`tracestate`), so that any consumer can join the trace
without parsing the body.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import orjson
import uuid6
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

ENVELOPE_SCHEMA_VERSION = 1

# Namespace for event ids derived from business keys, so that re-processing the
# same input yields the same event id and consumers can deduplicate.
_EVENT_NAMESPACE = uuid.UUID("6f0a3c1e-9b7d-4c52-8a61-3d2e1f0b7c44")
_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes
# uuid5 bits: version 5 in the time_hi field, RFC 4122 variant in clock_seq_hi.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (5 << 76) | (0x8000 << 48)


def new_event_id() -> uuid.UUID:
    """A fresh, time-ordered (UUIDv7) event id."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def deterministic_event_id(*parts: object) -> uuid.UUID:
    """A stable event id for an effect derived from the given parts.

    Exactly `uuid.uuid5(_EVENT_NAMESPACE, "\\x1f".join(map(str, parts)))`, built without
    `UUID.__init__`'s argument checks (it runs several times per record on hot paths).
    """
    name = "\x1f".join(map(str, parts)).encode()
    digest = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    event_id = object.__new__(uuid.UUID)
    object.__setattr__(event_id, "int", int.from_bytes(digest[:16]) & _CLEAR | _SET)
    object.__setattr__(event_id, "is_safe", uuid.SafeUUID.unknown)
    return event_id


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Frozen, versioned wrapper around every event and command payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    envelope_version: int = Field(default=ENVELOPE_SCHEMA_VERSION, ge=1)
    event_id: uuid.UUID = Field(default_factory=new_event_id)
    type: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9_.\-]+$")
    schema_version: int = Field(default=1, ge=1)
    source_unit: str = Field(min_length=1, max_length=100)
    subject: str | None = Field(
        default=None, max_length=200, description="Entity the event is about; the Kafka key."
    )
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    produced_at: AwareDatetime = Field(default_factory=utc_now)
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at", "produced_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Self:
        return cls.model_validate_json(raw)

    def caused(self, *, type: str, source_unit: str, payload: dict[str, Any],
               subject: str | None = None, event_id: uuid.UUID | None = None) -> Envelope:
        """A follow-up event caused by this one, in the same correlation."""
        return Envelope(
            event_id=event_id or new_event_id(),
            type=type,
            source_unit=source_unit,
            subject=subject if subject is not None else self.subject,
            correlation_id=self.correlation_id or self.event_id,
            causation_id=self.event_id,
            payload=payload,
        )

    @property
    def key(self) -> bytes | None:
        return self.subject.encode() if self.subject else None


@dataclass(frozen=True, slots=True)
class EnvelopeHead:
    """The fields a consumer decides on, read from an envelope without validating it all.

    For hot paths that consume envelopes another service of this system produced and
    validated: a tenth of the cost of `Envelope.from_bytes`. Times, schema version and
    subject are not read; the payload is not validated (the consumer checks what it uses).
    """

    event_id: uuid.UUID
    type: str
    source_unit: str
    correlation_id: uuid.UUID | None
    payload: dict[str, Any]

    @classmethod
    def read(cls, raw: bytes | str) -> EnvelopeHead | None:
        """The head of `raw`, or None unless it is a JSON object with a valid event id,
        non-empty type and source unit strings and an object payload."""
        try:
            data = orjson.loads(raw)
            event_id = uuid.UUID(data["event_id"])
            correlation = data.get("correlation_id")
            head = cls(event_id, data["type"], data["source_unit"],
                       uuid.UUID(correlation) if correlation is not None else None,
                       data.get("payload", {}))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        if not (isinstance(head.type, str) and head.type and isinstance(head.source_unit, str)
                and head.source_unit and isinstance(head.payload, dict)):
            return None
        return head


def envelope_json_schema() -> str:
    return json.dumps(Envelope.model_json_schema(), indent=2, ensure_ascii=False)
