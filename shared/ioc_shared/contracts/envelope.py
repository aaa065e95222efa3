"""The event envelope carried by every message on every topic.

Trace context is not part of the envelope: it travels in Kafka headers
(W3C `traceparent`/`tracestate`), so that any consumer can join the trace
without parsing the body.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Self

import uuid6
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

ENVELOPE_SCHEMA_VERSION = 1

# Namespace for event ids derived from business keys, so that re-processing the
# same input yields the same event id and consumers can deduplicate.
_EVENT_NAMESPACE = uuid.UUID("6f0a3c1e-9b7d-4c52-8a61-3d2e1f0b7c44")


def new_event_id() -> uuid.UUID:
    """A fresh, time-ordered (UUIDv7) event id."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def deterministic_event_id(*parts: object) -> uuid.UUID:
    """A stable event id for an effect derived from the given parts."""
    return uuid.uuid5(_EVENT_NAMESPACE, "\x1f".join(str(p) for p in parts))


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


def envelope_json_schema() -> str:
    return json.dumps(Envelope.model_json_schema(), indent=2, ensure_ascii=False)
