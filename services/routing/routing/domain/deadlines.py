"""Deadlines, reminders and the escalation schedule of an assignment.

At assignment the policy in force is frozen into a snapshot (a JSON-ready
dict stored on the incident) and the due work is computed from it, so later
edits of the configuration never change an incident already dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from routing.domain.calendar import WorkingCalendar
from routing.domain.organisation import Organisation
from routing.domain.policy import (
    RECIPIENT_ASSIGNED,
    RECIPIENT_DISTRICT,
    RECIPIENT_IOC,
    Automation,
    Duration,
    EscalationStep,
    RoutingPolicy,
)
from routing.domain.rules import RuleMatch

DeadlineKind = Literal["acknowledge", "resolve"]
WorkKind = Literal["reminder", "escalation"]


@dataclass(frozen=True, slots=True)
class DueWork:
    kind: WorkKind
    deadline: DeadlineKind
    step: int          # reminder index or escalation step (1 = first step of the chain)
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Recipient:
    unit: str
    roles: tuple[str, ...]
    contacts: tuple[dict[str, str], ...]


def build_snapshot(policy: RoutingPolicy, calendar: WorkingCalendar, *, category: str,
                   priority: str, match: RuleMatch, unit: str, assigned_at: datetime,
                   automation: Automation | None, manual_unit: bool) -> dict[str, Any]:
    index, entry = policy.deadline_for(category, priority)
    ack_due = entry.acknowledge.after(assigned_at, calendar)
    resolve_due = entry.resolve.after(assigned_at, calendar)
    return {
        "rule": {"id": match.rule_id, "unit": match.unit, "area": match.area,
                 "explanation": list(match.explanation)},
        "unit": unit,
        "unit_chosen_by": "operator" if manual_unit else "rule",
        "automation": automation.id if automation is not None else None,
        "deadline_entry": index,
        "acknowledge": entry.acknowledge.model_dump(exclude_none=True),
        "resolve": entry.resolve.model_dump(exclude_none=True),
        "acknowledge_due_at": ack_due.isoformat(),
        "resolve_due_at": resolve_due.isoformat(),
        "reminders_before": [r.model_dump(exclude_none=True)
                             for r in policy.escalation.reminders_before],
        "chain": [s.model_dump(mode="json", exclude_none=True) for s in policy.escalation.chain],
        "calendar": policy.calendar.model_dump(mode="json"),
        "assigned_at": assigned_at.isoformat(),
    }


def snapshot_due(snapshot: dict[str, Any], deadline: DeadlineKind) -> datetime:
    return datetime.fromisoformat(snapshot[f"{deadline}_due_at"])


def schedule(snapshot: dict[str, Any], calendar: WorkingCalendar) -> list[DueWork]:
    """Reminders before each deadline and the escalation steps after it, in time order."""
    assigned_at = datetime.fromisoformat(snapshot["assigned_at"])
    reminders = [Duration.model_validate(r) for r in snapshot["reminders_before"]]
    chain = [EscalationStep.model_validate(s) for s in snapshot["chain"]]
    work: list[DueWork] = []
    deadlines: tuple[DeadlineKind, ...] = ("acknowledge", "resolve")
    for deadline in deadlines:
        due = snapshot_due(snapshot, deadline)
        for i, lead in enumerate(reminders, start=1):
            at = lead.before(due, calendar)
            if assigned_at < at < due:
                work.append(DueWork("reminder", deadline, i, at))
        for i, step in enumerate(chain, start=1):
            work.append(DueWork("escalation", deadline, i, max(due, step.after.after(due, calendar))))
    work.sort(key=lambda w: w.due_at)
    return work


def chain_step(snapshot: dict[str, Any], step: int) -> EscalationStep:
    return EscalationStep.model_validate(snapshot["chain"][step - 1])


def recipients(step: EscalationStep, assigned_unit: str | None, org: Organisation) -> list[Recipient]:
    units: list[str] = []
    for name in step.recipients:
        if name == RECIPIENT_ASSIGNED:
            unit = assigned_unit
        elif name == RECIPIENT_IOC:
            unit = org.ioc_unit
        elif name == RECIPIENT_DISTRICT:
            unit = org.district_unit
        else:
            unit = name
        if unit and unit not in units:
            units.append(unit)
    return [Recipient(u, tuple(step.contact_roles),
                      tuple({"role": c.role, "title": c.title, "name": c.name}
                            for c in org.contacts_of(u, tuple(step.contact_roles))))
            for u in units]


def still_due(work_deadline: str, state: str) -> bool:
    """A deadline only matters while the incident still waits for what it asks."""
    if work_deadline == "acknowledge":
        return state == "assigned"
    return state in ("assigned", "acknowledged", "in_progress")
