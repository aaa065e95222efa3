"""Data disputes (Đ4.5: a unit's head answers for the data it provides and for complaints
about it): a consumer or an operator disputes a canonical record, and the unit that owns
it gets an incident.

The owner comes from the record itself (its envelope's `source_unit`, which ingest
verified), read at the position the command names; the command only says which record
and why. Reading that position is I/O (`routing.positions`); the rules are here.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from ioc_shared.commands import invalid_field
from ioc_shared.contracts.hygiene import is_clean
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routing.domain.lifecycle import assign
from routing.domain.model import Context, Dispute, Incident, IncidentEvent, Outcome, dispute_incident_id
from routing.domain.reasons import Reason, Rejection, reject
from routing.domain.states import RECEIVED_EVENT, ROLE_OPERATOR, Actor, State

DISPUTE_TYPE = "routing.command.dispute"
DISPUTE_VERB = "dispute"
DISPUTE_CATEGORY = "tranh-chap-du-lieu"
DISPUTE_PRIORITY = "binh-thuong"
# What a canonical record is (ingest's side of the contract).
RECORD_ACCEPTED = "ingest.record.accepted"
CANONICAL_PRODUCER = "ingest"


class _DisputePayload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    command_id: uuid.UUID
    dataset: str = Field(min_length=1, max_length=100)
    event_id: uuid.UUID
    topic: str = Field(min_length=1, max_length=249)     # Kafka's limit on topic names
    partition: int = Field(ge=0, le=100_000)
    offset: int = Field(ge=0, le=2**63 - 1)
    reason: str = Field(max_length=2000)

    @field_validator("reason")
    @classmethod
    def _clean_text(cls, value: str) -> str:
        return unicodedata.normalize("NFC", value).strip()


@dataclass(frozen=True, slots=True)
class DisputeCommand:
    command_id: uuid.UUID
    dataset: str
    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int
    reason: str

    def incident_id(self, actor: Actor) -> str:
        return dispute_incident_id(self.event_id, actor.principal)

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def parse_dispute(payload: dict[str, Any]) -> DisputeCommand | Rejection:
    try:
        body = _DisputePayload.model_validate(payload)
    except ValidationError as exc:
        return reject(Reason.MALFORMED, invalid_field(exc))
    if not body.reason:
        return reject(Reason.REASON_REQUIRED)
    return DisputeCommand(body.command_id, body.dataset, body.event_id, body.topic,
                          body.partition, body.offset, body.reason)


def admit(cmd: DisputeCommand, actor: Actor, *, dataset_known: bool, may_receive: bool,
          canonical_topic: str) -> Rejection | None:
    """Checks before reading anything: the dataset exists, the sender may receive it (an
    IOC operator may dispute any record), the position is on its canonical topic."""
    if not dataset_known:
        return reject(Reason.UNKNOWN_DATASET, cmd.dataset)
    if not (may_receive or actor.has(ROLE_OPERATOR)):
        return reject(Reason.DATASET_NOT_PERMITTED, cmd.dataset)
    if cmd.topic != canonical_topic:
        return reject(Reason.NOT_THE_DATASET_TOPIC, cmd.topic)
    return None


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """The record found at the named position, as read (nothing judged yet)."""

    producer: str | None           # header ioc-producer
    document: Any                  # strict JSON of the value; None if it was not


@dataclass(frozen=True, slots=True)
class Provenance:
    owner_unit: str
    record_id: str
    commune: str


def provenance(cmd: DisputeCommand, found: ReadRecord | None, record_id_field: str,
               unit_ids: frozenset[str]) -> Provenance | Rejection:
    """Whose the record at the position is, or why it is not the record named."""
    if found is None:
        return reject(Reason.RECORD_NOT_FOUND, cmd.position)
    if found.producer != CANONICAL_PRODUCER:
        return reject(Reason.RECORD_NOT_FROM_INGEST, cmd.position)
    doc = found.document
    if not isinstance(doc, dict) or str(doc.get("event_id")) != str(cmd.event_id):
        return reject(Reason.EVENT_ID_MISMATCH, str(cmd.event_id))
    payload = doc.get("payload")
    body = payload.get("record") if isinstance(payload, dict) else None
    owner = doc.get("source_unit")
    record_id = body.get(record_id_field) if isinstance(body, dict) else None
    if (doc.get("type") != RECORD_ACCEPTED or not isinstance(payload, dict)
            or payload.get("dataset") != cmd.dataset or owner not in unit_ids
            or not isinstance(record_id, str | int) or not _clean(str(record_id), 200)):
        return reject(Reason.RECORD_UNUSABLE, cmd.dataset)
    assert isinstance(body, dict) and isinstance(owner, str)
    commune = body.get("commune")
    return Provenance(owner, str(record_id),
                      commune if isinstance(commune, str) and _clean(commune, 100) else "")


def _clean(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and is_clean(text)


def open_dispute(cmd: DisputeCommand, actor: Actor, found: Provenance, ctx: Context,
                 system: Actor) -> tuple[Incident, Outcome]:
    """The dispute's incident, received from `actor` and assigned by the rules (stock:
    `@owner`); to the policy's fallback (the IOC's data officer) when the unit found does
    not handle incidents."""
    dispute = Dispute(str(cmd.event_id), cmd.topic, cmd.partition, cmd.offset,
                      found.owner_unit, actor.principal)
    incident = Incident(
        id=cmd.incident_id(actor), dataset=cmd.dataset, record_id=found.record_id,
        source_unit=actor.unit, category=DISPUTE_CATEGORY, priority=DISPUTE_PRIORITY,
        commune=found.commune, reported_at=ctx.now,
        title=f"Tranh chấp dữ liệu {cmd.dataset}/{found.record_id}"[:200],
        dispute=dispute, created_at=ctx.now)
    data: dict[str, object] = {
        "command_id": str(cmd.command_id), "dataset": incident.dataset,
        "record_id": incident.record_id, "source_unit": incident.source_unit,
        "category": incident.category, "priority": incident.priority,
        "commune": incident.commune, "reported_at": incident.reported_at.isoformat(),
        "title": incident.title}
    outcome = Outcome(events=[IncidentEvent(RECEIVED_EVENT, incident.id, None, State.RECEIVED,
                                            actor, ctx.now, cmd.reason, data)])
    match = ctx.planner.match(ctx.org, incident.facts())
    unit = match.unit
    extra: dict[str, object] = {"command_id": str(cmd.command_id)}
    if not ctx.org.handles_incidents(unit):
        unit = ctx.policy.disputes.fallback_unit or ctx.org.ioc_unit
        extra["fallback_from"] = match.unit
    outcome.extend(assign(incident, system, ctx, unit=unit, reason=cmd.reason, extra=extra,
                          roles=ctx.policy.disputes.contact_roles))
    return incident, outcome
