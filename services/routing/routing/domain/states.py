"""Incident states, command verbs, and the table of legal transitions.

The table is data so that tests can walk every (verb, state) pair and so that
a reader sees the whole lifecycle in one screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    RECEIVED = "received"
    VERIFIED = "verified"
    REJECTED = "rejected_not_genuine"
    APPROVED = "approved"
    ASSIGNED = "assigned"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    RETURNED = "returned"
    MERGED = "merged"


class Verb(StrEnum):
    VERIFY = "verify"
    REJECT = "reject"
    APPROVE = "approve"
    ASSIGN = "assign"
    ACKNOWLEDGE = "acknowledge"
    UPDATE_STATUS = "update_status"
    RETURN = "return"
    TRANSFER = "transfer"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"
    MERGE = "merge"
    ANSWER_SURVEY = "answer_survey"


# States in which the IOC still follows the incident with a responsible unit.
WITH_UNIT = frozenset({State.ASSIGNED, State.ACKNOWLEDGED, State.IN_PROGRESS})
OPEN = frozenset(State) - {State.REJECTED, State.CLOSED, State.MERGED}

# verb -> (states it may start from, state it leads to; None = decided by the verb's rule)
TRANSITIONS: dict[Verb, tuple[frozenset[State], State | None]] = {
    Verb.VERIFY: (frozenset({State.RECEIVED}), State.VERIFIED),
    Verb.REJECT: (frozenset({State.RECEIVED, State.VERIFIED}), State.REJECTED),
    Verb.APPROVE: (frozenset({State.VERIFIED}), State.APPROVED),
    Verb.ASSIGN: (frozenset({State.APPROVED, State.RETURNED}), State.ASSIGNED),
    Verb.ACKNOWLEDGE: (frozenset({State.ASSIGNED}), State.ACKNOWLEDGED),
    Verb.UPDATE_STATUS: (frozenset({State.ACKNOWLEDGED, State.IN_PROGRESS}), State.IN_PROGRESS),
    Verb.RETURN: (WITH_UNIT, State.RETURNED),
    Verb.TRANSFER: (WITH_UNIT, State.ASSIGNED),
    Verb.RESOLVE: (frozenset({State.ACKNOWLEDGED, State.IN_PROGRESS}), State.RESOLVED),
    Verb.CLOSE: (frozenset({State.RESOLVED}), State.CLOSED),
    # Back to the last responsible unit, or to verification if it was rejected.
    Verb.REOPEN: (frozenset({State.RESOLVED, State.CLOSED, State.REJECTED}), None),
    Verb.MERGE: (OPEN - {State.RESOLVED}, State.MERGED),
    Verb.ANSWER_SURVEY: (frozenset({State.CLOSED}), State.CLOSED),
}

# Event type of each verb's transition on the incident-events topic.
EVENT_TYPES: dict[Verb, str] = {
    Verb.VERIFY: "routing.incident.verified",
    Verb.REJECT: "routing.incident.rejected",
    Verb.APPROVE: "routing.incident.approved",
    Verb.ASSIGN: "routing.incident.assigned",
    Verb.ACKNOWLEDGE: "routing.incident.acknowledged",
    Verb.UPDATE_STATUS: "routing.incident.progress-updated",
    Verb.RETURN: "routing.incident.returned",
    Verb.TRANSFER: "routing.incident.transferred",
    Verb.RESOLVE: "routing.incident.resolved",
    Verb.CLOSE: "routing.incident.closed",
    Verb.REOPEN: "routing.incident.reopened",
    Verb.MERGE: "routing.incident.merged",
    Verb.ANSWER_SURVEY: "routing.incident.survey-answered",
}
RECEIVED_EVENT = "routing.incident.received"

ROLE_LEADER = "ioc-leader"
ROLE_OPERATOR = "ioc-operator"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: always from a verified principal, never from a payload."""

    principal: str
    unit: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles


SYSTEM_ACTOR = Actor("system:routing", "system", frozenset({"system"}))
