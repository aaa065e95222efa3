"""The incident aggregate and what a decision about it produces."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from ioc_shared.calendar_vn import WorkingCalendar

from routing.domain.deadlines import DueWork, Planner
from routing.domain.geo import Point
from routing.domain.organisation import Organisation
from routing.domain.policy import RoutingPolicy
from routing.domain.rules import IncidentFacts
from routing.domain.states import Actor, State

_INCIDENT_NAMESPACE = uuid.UUID("0d4c7f5e-2b1a-4e8f-9c3d-7a6b5e4f3d21")


_NAMESPACE_BYTES = _INCIDENT_NAMESPACE.bytes


def incident_id_for(source_unit: str, dataset: str, record_id: str) -> str:
    """Stable incident id of a record: one incident per (source unit, dataset, record id).

    Record ids are the publishing unit's own: two units may use the same one, and neither
    may reach the other's incident. Exactly `str(uuid.uuid5(_INCIDENT_NAMESPACE,
    f"{source_unit}\x1f{dataset}\x1f{record_id}"))`, formatted from the SHA-1 digest directly
    (uuid.uuid5 and str() cost more than the rest of reading a record). Incidents recorded
    before 0005 keep their ids (uuid5 of dataset and record id only); the intake finds
    every incident by its (source unit, dataset, record id), whatever its id.
    """
    h = hashlib.sha1(_NAMESPACE_BYTES + f"{source_unit}\x1f{dataset}\x1f{record_id}".encode(),
                     usedforsecurity=False).hexdigest()
    # Version 5 in the 13th hex digit, the RFC 4122 variant (10xx) in the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


_VARIANT = "89ab"


def dispute_incident_id(event_id: uuid.UUID, principal: str) -> str:
    """Stable id of the dispute one principal raised about one canonical record (its
    event id): disputing it again finds the same incident."""
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, f"dispute\x1f{event_id}\x1f{principal}"))


@dataclass(frozen=True, slots=True)
class Dispute:
    """Đ4.5: the canonical record a data dispute is about, where it was read, and whose it
    is. `owner_unit` comes from the record's provenance (its envelope's source unit, as
    ingest verified it), never from the command."""

    event_id: str
    topic: str
    partition: int
    offset: int
    owner_unit: str
    principal: str

    def as_data(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "topic": self.topic, "partition": self.partition,
                "offset": self.offset, "owner_unit": self.owner_unit,
                "disputed_by": self.principal}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Dispute:
        return cls(data["event_id"], data["topic"], int(data["partition"]), int(data["offset"]),
                   data["owner_unit"], data["disputed_by"])

# (source unit, dataset, record id): the identity of a published record.
RecordKey = tuple[str, str, str]


@dataclass
class Incident:
    id: str
    dataset: str
    record_id: str
    source_unit: str
    category: str
    priority: str
    commune: str
    reported_at: datetime
    title: str
    location: Point | None = None
    # A reference the reporter chose to give (ticket number, app user id): never name or phone.
    reporter_ref: str | None = None
    state: State = State.RECEIVED
    assigned_unit: str | None = None
    last_unit: str | None = None
    assignment_no: int = 0
    primary_id: str | None = None
    policy: dict[str, Any] | None = None
    ack_due_at: datetime | None = None
    resolve_due_at: datetime | None = None
    survey_answered: bool = False
    created_at: datetime | None = None
    # Set on a data dispute (category tranh-chap-du-lieu): `source_unit` is then the unit
    # that raised it, and the record it names is `dispute.owner_unit`'s.
    dispute: Dispute | None = None

    @property
    def record_key(self) -> RecordKey:
        """What identifies the record this incident is about."""
        return (self.source_unit, self.dataset, self.record_id)

    def facts(self) -> IncidentFacts:
        return IncidentFacts(self.dataset, self.category, self.priority, self.commune,
                             self.source_unit, self.location,
                             self.dispute.owner_unit if self.dispute else self.source_unit)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One recorded change (or note) on an incident: the audit row and the bus event."""

    type: str
    incident_id: str
    from_state: State | None
    to_state: State
    actor: Actor
    at: datetime
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    """A message to a unit: assignment, return to the IOC, reminder, escalation step."""

    kind: str
    unit: str
    incident_id: str
    roles: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    events: list[IncidentEvent] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    # First due work of each deadline of a new assignment (the previous assignment's work
    # no longer applies); each fired item schedules the next one of its deadline.
    schedule: list[DueWork] | None = None
    survey_requested: bool = False

    def extend(self, other: Outcome) -> None:
        self.events += other.events
        self.notifications += other.notifications
        if other.schedule is not None:
            self.schedule = other.schedule
        self.survey_requested = self.survey_requested or other.survey_requested


@dataclass(frozen=True)
class Context:
    """Everything a decision may consult besides the incident itself."""

    policy: RoutingPolicy
    calendar: WorkingCalendar
    org: Organisation
    now: datetime

    @cached_property
    def planner(self) -> Planner:
        """Deadline arithmetic shared by every assignment decided in this context."""
        return Planner(self.policy, self.calendar, self.now)
