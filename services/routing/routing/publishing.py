"""From domain decisions to envelopes for the outbox, and to audit rows.

`Effects` collects everything one transaction must write besides the incident
rows: the audit trail, new due work, and the outgoing envelopes. Trace
headers are captured when an envelope is added, so the caller adds them while
the span of the message they answer is current.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ioc_shared.contracts.envelope import deterministic_event_id
from ioc_shared.contracts.topics import (
    ROUTING_COMMAND_RESULTS,
    ROUTING_COMMANDS,
    ROUTING_EVENTS,
    ROUTING_NOTIFICATIONS,
    ROUTING_REPORTER_UPDATES,
    ROUTING_UNAUTHENTICATED_COMMANDS,
    canonical_topic,
)
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.serialized import (
    Cause,
    SerializedEnvelope,
    current_trace,
    envelope_headers,
    serialize_envelope,
)

from routing.domain.deadlines import DueWork
from routing.domain.model import Incident, IncidentEvent, Notification, Outcome
from routing.domain.policy import Survey
from routing.domain.reporter import (
    REPORTER_STATUS,
    REPORTER_SURVEY,
    for_duplicate,
    status_update,
    survey_request,
)

COMMAND_RESULT = "routing.command.result"
UNAUTHENTICATED_COMMAND = "routing.command.unauthenticated"
NOTIFICATION_PREFIX = "routing.notification."

OutboxMessage = tuple[str, SerializedEnvelope, bytes | None, dict[str, str]]


@dataclass(frozen=True, slots=True)
class RoutingTopics:
    commands: str
    results: str
    events: str
    notifications: str
    reporter: str
    namespace: str
    # Operators only: answers to commands that failed authentication.
    unauthenticated: str = ""

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RoutingTopics:
        return cls(settings.topic(ROUTING_COMMANDS).name, settings.topic(ROUTING_COMMAND_RESULTS).name,
                   settings.topic(ROUTING_EVENTS).name, settings.topic(ROUTING_NOTIFICATIONS).name,
                   settings.topic(ROUTING_REPORTER_UPDATES).name, settings.topic_namespace,
                   settings.topic(ROUTING_UNAUTHENTICATED_COMMANDS).name)

    def canonical(self, dataset: str) -> str:
        """The name of `dataset`'s canonical topic in this namespace."""
        return (f"{self.namespace}." if self.namespace else "") + canonical_topic(dataset).name


def incident_topic_specs(settings: ServiceSettings, datasets: list[str]) -> list[Any]:
    own = [ROUTING_COMMANDS, ROUTING_COMMAND_RESULTS, ROUTING_EVENTS, ROUTING_NOTIFICATIONS,
           ROUTING_REPORTER_UPDATES, ROUTING_UNAUTHENTICATED_COMMANDS]
    return [settings.topic(s) for s in own] + [settings.topic(canonical_topic(d)) for d in datasets]


def event_payload(event: IncidentEvent) -> dict[str, Any]:
    payload = {
        "incident_id": event.incident_id,
        "from_state": event.from_state.value if event.from_state else None,
        "to_state": event.to_state.value,
        "actor": {"principal": event.actor.principal, "unit": event.actor.unit},
        "reason": event.reason,
        "at": event.at,  # orjson writes the same ISO 8601 text as isoformat()
    }
    payload.update(event.data)
    return payload


# Ids of the messages of one outcome: a stable base id per input, the message's kind and
# index in its low 16 bits (a uuid5 per message was the costliest step of publishing).
_EVENTS, _REPORTER, _NOTIFICATIONS, _SURVEY = 0x0000, 0x4000, 0x8000, 0xC000


def _derive(base: str, n: int) -> str:
    """`base` (a UUID's text) with its low 16 bits (the last four hex digits) set to `n`."""
    return f"{base[:32]}{n & 0xFFFF:04x}"


@dataclass
class Effects:
    topics: RoutingTopics
    source_unit: str
    survey: Survey
    # Occurred/produced time of the envelopes (default: when each is added).
    at: datetime | None = None
    messages: list[OutboxMessage] = field(default_factory=list)
    audit: list[tuple[str, IncidentEvent]] = field(default_factory=list)
    due: list[tuple[str, int, DueWork]] = field(default_factory=list)

    def publish(self, topic: str, type: str, key: str, payload: dict[str, Any], *,
                event_id: uuid.UUID | str, cause: Cause | None,
                trace: dict[str, str] | None = None) -> SerializedEnvelope:
        """Add an envelope; `trace` is the current span's context if the caller has it."""
        env = serialize_envelope(event_id=event_id, type=type, source_unit=self.source_unit,
                                 subject=key, payload=payload, cause=cause, at=self.at)
        self.messages.append((topic, env, None, envelope_headers(env, trace)))
        return env

    def record(self, outcome: Outcome, incident: Incident, *, seed: object,
               cause: Cause | None, trace: dict[str, str] | None = None) -> None:
        """Audit rows, events, reporter updates, notifications and due work of one outcome.

        `trace`: the trace headers of the outcome's messages (default: the current span's).
        """
        if trace is None:
            trace = current_trace()
        base = str(deterministic_event_id(seed))
        dispute = incident.dispute.as_data() if incident.dispute is not None else None
        for i, event in enumerate(outcome.events):
            event_id = _derive(base, _EVENTS + i)
            self.audit.append((event_id, event))
            payload = event_payload(event)
            if dispute is not None and event.incident_id == incident.id:
                payload["dispute"] = dispute   # which record, at which position (Đ4.5)
            self.publish(self.topics.events, event.type, event.incident_id, payload,
                         event_id=event_id, cause=cause, trace=trace)
        latest: tuple[int, dict[str, Any]] | None = None
        for i in range(len(outcome.events) - 1, -1, -1):
            update = status_update(outcome.events[i], incident)
            if update is not None:
                latest = (i, update)
                break
        if latest is not None:
            # One update per decision: received-then-assigned in one go reads "assigned".
            self.publish(self.topics.reporter, REPORTER_STATUS, incident.id, latest[1],
                         event_id=_derive(base, _REPORTER + latest[0]), cause=cause,
                         trace=trace)
        for i, note in enumerate(outcome.notifications):
            self.notify(note, event_id=_derive(base, _NOTIFICATIONS + i), cause=cause,
                        trace=trace)
        if outcome.survey_requested:
            self.publish(self.topics.reporter, REPORTER_SURVEY, incident.id,
                         survey_request(incident, self.survey),
                         event_id=_derive(base, _SURVEY), cause=cause, trace=trace)
        if outcome.schedule is not None:
            self.due += [(incident.id, incident.assignment_no, w) for w in outcome.schedule]

    def notify(self, note: Notification, *, event_id: uuid.UUID | str, cause: Cause | None,
               trace: dict[str, str] | None = None) -> None:
        payload = {"kind": note.kind, "incident_id": note.incident_id, "unit": note.unit,
                   "contact_roles": list(note.roles), **note.data}
        self.publish(self.topics.notifications, NOTIFICATION_PREFIX + note.kind, note.unit, payload,
                     event_id=event_id, cause=cause, trace=trace)

    def relay_status(self, duplicate: Incident, primary: Incident, event: IncidentEvent, *,
                     seed: object, cause: Cause | None) -> None:
        """Tell the reporter of a merged duplicate how the primary incident goes."""
        update = status_update(event, primary)
        if update is not None:
            self.publish(self.topics.reporter, REPORTER_STATUS, duplicate.id,
                         for_duplicate(update, duplicate),
                         event_id=deterministic_event_id(seed, "relay", duplicate.id), cause=cause)


def command_result(effects: Effects, *, unit: str, cause_id: uuid.UUID, cause: Cause | None,
                   status: str, reason_code: str | None, message: str, command_id: uuid.UUID | None,
                   verb: str | None, incident_id: str | None, principal: str | None,
                   state: str | None = None, duplicate: bool = False,
                   trace: dict[str, str] | None = None) -> None:
    """`trace`: the command's own trace context (default: the current span's), so the
    sender finds the answer in the trace it started."""
    payload: dict[str, Any] = {
        "command_id": str(command_id) if command_id else None, "command": verb,
        "incident_id": incident_id, "status": status, "reason_code": reason_code,
        "message": message, "principal": principal, "unit": unit, "state": state,
    }
    if duplicate:
        payload["duplicate"] = True
    effects.publish(effects.topics.results, COMMAND_RESULT, unit, payload,
                    event_id=deterministic_event_id(cause_id, "result"), cause=cause,
                    trace=trace)


def unauthenticated_answer(effects: Effects, *, cause_id: uuid.UUID, origin_topic: str,
                           origin_partition: int, origin_offset: int, reason_code: str,
                           message: str, claimed_principal: str | None,
                           command_id: uuid.UUID | None, verb: str | None,
                           incident_id: str | None) -> None:
    """The answer to a command that failed authentication, for the IOC's operators only.

    Keyed by the command's origin (topic:partition), never by the unit the sender claims:
    whoever can write the commands topic must not be able to write into a unit's feed.
    Everything from the sender is bounded, cleaned text (the caller's `bounded_text`)."""
    payload: dict[str, Any] = {
        "command_id": str(command_id) if command_id else None, "command": verb,
        "incident_id": incident_id, "status": "rejected", "reason_code": reason_code,
        "message": message, "claimed_principal": claimed_principal,
        "origin": {"topic": origin_topic, "partition": origin_partition,
                   "offset": origin_offset},
    }
    effects.publish(effects.topics.unauthenticated, UNAUTHENTICATED_COMMAND,
                    f"{origin_topic}:{origin_partition}", payload,
                    event_id=deterministic_event_id(cause_id, "result"), cause=None)
