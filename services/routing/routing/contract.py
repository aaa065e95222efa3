"""The payloads routing publishes, as pydantic models: one per event type and topic.

The AsyncAPI document (`ioc_shared.contracts.asyncapi`) takes their JSON Schemas from
`MESSAGES`; the unit tests check every payload the code builds against them
(`check_payload`), so the documents cannot drift from the code. The models forbid
unknown fields for that check only: the published schemas leave objects open (a
consumer ignores fields it does not know; optional fields are added without notice).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from ioc_shared.contracts.payloads import Closed as _Closed
from ioc_shared.contracts.payloads import Origin, check_against
from pydantic import AwareDatetime, BaseModel, Field

from routing.domain.commands import _Payload as CommandPayload
from routing.domain.disputes import DISPUTE_TYPE
from routing.domain.disputes import _DisputePayload as DisputePayload
from routing.domain.reporter import REPORTER_STATUS, REPORTER_SURVEY
from routing.domain.states import EVENT_TYPES, RECEIVED_EVENT, State, Verb
from routing.publishing import COMMAND_RESULT, NOTIFICATION_PREFIX, UNAUTHENTICATED_COMMAND

# routing.timers (which imports the service's I/O) names them the same way.
REMINDER_EVENT = "routing.incident.reminder-sent"
ESCALATION_EVENT = "routing.incident.escalated"


# --- incident events (ioc.routing.incident-events.v1) ---------------------------------
class ActorRef(_Closed):
    principal: str = Field(description="Verified principal id (or system:routing)")
    unit: str


class DisputeRef(_Closed):
    """Đ4.5: the canonical record a data dispute is about (on every event of a dispute)."""

    event_id: str
    topic: str
    partition: int
    offset: int
    owner_unit: str
    disputed_by: str


class IncidentEvent(_Closed):
    """What every incident event carries; each type adds its own fields."""

    incident_id: str
    from_state: State | None
    to_state: State
    actor: ActorRef
    reason: str | None = Field(description="Why, in Vietnamese (the command's reason)")
    at: AwareDatetime
    dispute: DisputeRef | None = None
    command_id: uuid.UUID | None = Field(default=None, description="The command that caused it")
    automation: str | None = Field(default=None, description="Automation id, when no human acted")


class Received(IncidentEvent):
    dataset: str
    record_id: str
    source_unit: str
    category: str
    priority: str
    commune: str
    reported_at: AwareDatetime
    title: str


class PolicySummary(_Closed):
    rule: str | None
    unit_chosen_by: str = Field(description="rule or operator")
    automation: str | None
    deadline_entry: int
    acknowledge: dict[str, Any] = Field(description="The acknowledge deadline as configured")
    resolve: dict[str, Any]
    version: str = Field(description="Version of the frozen policy parts")


class Assigned(IncidentEvent):
    """The incident goes to exactly one unit, with deadlines frozen at assignment."""

    unit: str
    assignment_no: int
    rule_id: str | None
    acknowledge_due_at: AwareDatetime
    resolve_due_at: AwareDatetime
    policy: PolicySummary
    fallback_from: str | None = Field(default=None, description="Dispute: the unit the rule "
                                      "chose, which does not handle incidents")


class Transferred(Assigned):
    from_unit: str | None


class Reopened(IncidentEvent):
    """Back to the last responsible unit (the assignment's fields), or to verification."""

    unit: str | None = None
    assignment_no: int | None = None
    rule_id: str | None = None
    acknowledge_due_at: AwareDatetime | None = None
    resolve_due_at: AwareDatetime | None = None
    policy: PolicySummary | None = None


class WithNote(IncidentEvent):
    note: str | None


class Returned(IncidentEvent):
    unit: str | None = Field(description="The unit that returned it")


class Merged(IncidentEvent):
    primary_id: str


class SurveyAnswered(IncidentEvent):
    score: int | None
    comment: str | None
    unit: str | None


class DuplicateMerged(IncidentEvent):
    duplicate_id: str


class Candidate(_Closed):
    incident_id: str
    distance_m: float
    apart_s: int


class DuplicateSuspected(IncidentEvent):
    candidates: list[Candidate]


class RecordUpdated(IncidentEvent):
    record_id: str
    changes: dict[str, Any] = Field(description="Changed incident fields, new values")


class UpdateForwarded(RecordUpdated):
    duplicate_id: str


class Contact(_Closed):
    role: str
    title: str
    name: str = Field(description="An official's name (registry), not a citizen's")


class Recipient(_Closed):
    unit: str
    contact_roles: list[str]
    contacts: list[Contact]


class ReminderSent(IncidentEvent):
    deadline: str = Field(description="acknowledge, resolve, or an IOC step")
    step: int
    due_at: AwareDatetime
    work_due_at: AwareDatetime
    assignment_no: int
    state: State
    category: str
    priority: str
    title: str
    recipients: list[Recipient]


class Escalated(ReminderSent):
    level: str


_BY_VERB: dict[Verb, type[IncidentEvent]] = {
    Verb.ASSIGN: Assigned, Verb.TRANSFER: Transferred, Verb.REOPEN: Reopened,
    Verb.UPDATE_STATUS: WithNote, Verb.RESOLVE: WithNote, Verb.RETURN: Returned,
    Verb.MERGE: Merged, Verb.ANSWER_SURVEY: SurveyAnswered,
}
INCIDENT_EVENTS: dict[str, type[IncidentEvent]] = {
    RECEIVED_EVENT: Received,
    **{EVENT_TYPES[v]: _BY_VERB.get(v, IncidentEvent) for v in Verb},
    "routing.incident.duplicate-merged": DuplicateMerged,
    "routing.incident.duplicate-suspected": DuplicateSuspected,
    "routing.incident.record-updated": RecordUpdated,
    "routing.incident.update-forwarded": UpdateForwarded,
    REMINDER_EVENT: ReminderSent,
    ESCALATION_EVENT: Escalated,
}


# --- notifications (ioc.routing.notifications.v1), keyed by the recipient unit ----------
class Notification(_Closed):
    """What every notification carries."""

    kind: str
    incident_id: str
    unit: str = Field(description="The recipient unit (the Kafka key)")
    contact_roles: list[str]


class AssignedNotice(Notification):
    """An incident assigned to this unit, with its deadlines."""

    kind: Literal["assigned"]
    assignment_no: int
    category: str
    priority: str
    commune: str
    title: str
    acknowledge_due_at: AwareDatetime
    resolve_due_at: AwareDatetime


class ReturnedNotice(Notification):
    """An incident a unit returned to the IOC, for the IOC to reassign."""

    kind: Literal["returned"]
    from_unit: str | None
    reason: str | None


class _DueNotice(Notification):
    deadline: str
    step: int
    due_at: AwareDatetime
    work_due_at: AwareDatetime
    assignment_no: int
    state: State
    category: str
    priority: str
    title: str
    recipients: list[Recipient]
    contacts: list[Contact] = Field(description="This recipient's contacts")


class ReminderNotice(_DueNotice):
    """A deadline comes: a reminder to this recipient."""

    kind: Literal["reminder"]


class EscalationNotice(_DueNotice):
    """A deadline passed: an escalation step reaches this recipient."""

    kind: Literal["escalation"]
    level: str


NOTIFICATIONS: dict[str, type[Notification]] = {
    NOTIFICATION_PREFIX + "assigned": AssignedNotice,
    NOTIFICATION_PREFIX + "returned": ReturnedNotice,
    NOTIFICATION_PREFIX + "reminder": ReminderNotice,
    NOTIFICATION_PREFIX + "escalation": EscalationNotice,
}


# --- reporter updates (ioc.routing.reporter-updates.v1) ----------------------------------
class ReporterRef(_Closed):
    """The channel that carried the report and the reference the reporter gave: never a
    name or phone."""

    source_unit: str
    dataset: str
    record_id: str
    reporter_ref: str | None


class StatusChanged(_Closed):
    incident_id: str
    reporter: ReporterRef
    status: State
    status_text: str = Field(description="The status in Vietnamese")
    at: AwareDatetime
    unit: str | None = None
    resolution_note: str | None = None
    primary_id: str | None = None


class SurveyRequested(_Closed):
    incident_id: str
    reporter: ReporterRef
    unit: str | None
    question: str
    min_score: int
    max_score: int


REPORTER_UPDATES: dict[str, type[BaseModel]] = {REPORTER_STATUS: StatusChanged,
                                                REPORTER_SURVEY: SurveyRequested}


# --- answers to commands -----------------------------------------------------------------
class CommandResult(_Closed):
    """On ioc.routing.command-results.v1, keyed by the acting unit."""

    command_id: uuid.UUID | None
    command: str | None
    incident_id: str | None
    status: str = Field(description="accepted or rejected")
    reason_code: str | None
    message: str = Field(description="In Vietnamese")
    principal: str | None
    unit: str
    state: str | None
    duplicate: bool | None = Field(default=None, description="true: answered before")


class UnauthenticatedCommand(_Closed):
    """On ioc.routing.unauthenticated-commands.v1 (operators only)."""

    command_id: uuid.UUID | None
    command: str | None
    incident_id: str | None
    status: str
    reason_code: str
    message: str
    claimed_principal: str | None
    origin: Origin


COMMANDS: dict[str, type[BaseModel]] = {
    **{f"routing.command.{v.value}": CommandPayload for v in Verb}, DISPUTE_TYPE: DisputePayload}

# Topic (catalogue name) -> event type -> payload model.
MESSAGES: dict[str, dict[str, type[BaseModel]]] = {
    "ioc.routing.commands.v1": COMMANDS,
    "ioc.routing.command-results.v1": {COMMAND_RESULT: CommandResult},
    "ioc.routing.incident-events.v1": dict(INCIDENT_EVENTS),
    "ioc.routing.notifications.v1": dict(NOTIFICATIONS),
    "ioc.routing.reporter-updates.v1": REPORTER_UPDATES,
    "ioc.routing.unauthenticated-commands.v1": {UNAUTHENTICATED_COMMAND: UnauthenticatedCommand},
}


def check_payload(event_type: str, payload: dict[str, Any]) -> str | None:
    """Why `payload` does not match its model (None: it does), for the tests' checks."""
    return check_against(MESSAGES, event_type, payload, where="routing.contract")
