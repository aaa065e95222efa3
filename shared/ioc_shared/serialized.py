"""Envelopes a service builds from trusted values, serialized once for the outbox.

Same JSON shape as `ioc_shared.contracts.Envelope` (consumers parse it with
`Envelope.from_bytes`), without the cost of building a validated model for each of
thousands of events per second. Headers carry the event id and type and the W3C
trace context of the span current when the envelope is made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from ioc_shared.contracts.envelope import ENVELOPE_SCHEMA_VERSION
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE
from ioc_shared.platform.telemetry import inject_trace_headers


class Cause(Protocol):
    """What an outgoing envelope takes from the envelope it answers."""

    @property
    def event_id(self) -> uuid.UUID: ...

    @property
    def correlation_id(self) -> uuid.UUID | None: ...


@dataclass(frozen=True, slots=True)
class SerializedEnvelope:
    """An envelope serialized once with orjson (the outbox's `Outgoing`). `event_id` is
    the canonical text form of the UUID (as in the JSON and the headers)."""

    event_id: str
    type: str
    subject: str
    body: bytes

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    def to_bytes(self) -> bytes:
        return self.body


def serialize_envelope(*, event_id: uuid.UUID | str, type: str, source_unit: str, subject: str,
                       payload: dict[str, Any], cause: Cause | None,
                       at: datetime | None = None) -> SerializedEnvelope:
    """`at`: occurred and produced time (default: now); a batch passes its decision time."""
    now = at or datetime.now(UTC)
    body = orjson.dumps({
        "envelope_version": ENVELOPE_SCHEMA_VERSION, "event_id": event_id, "type": type,
        "schema_version": 1, "source_unit": source_unit, "subject": subject,
        "occurred_at": now, "produced_at": now,
        "correlation_id": (cause.correlation_id or cause.event_id) if cause else None,
        "causation_id": cause.event_id if cause else None, "payload": payload,
    }, default=str)
    return SerializedEnvelope(str(event_id), type, subject, body)


def current_trace() -> dict[str, str]:
    """W3C trace context of the current span (what `envelope_headers` adds by default)."""
    carrier: dict[str, str] = {}
    inject_trace_headers(carrier)
    return carrier


def envelope_headers(env: SerializedEnvelope, trace: dict[str, str] | None = None
                     ) -> dict[str, str]:
    """Kafka headers of `env`: its id and type, and `trace` (default: the current span's)."""
    headers = {H_EVENT_ID: env.event_id, H_EVENT_TYPE: env.type}
    headers.update(current_trace() if trace is None else trace)
    return headers
