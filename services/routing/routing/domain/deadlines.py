"""Deadlines, reminders and the escalation schedule of an assignment.

At assignment the policy in force is frozen into a snapshot (a JSON-ready
dict stored on the incident) and the due work is computed from it, so later
edits of the configuration never change an incident already dispatched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from ioc_shared.calendar_vn import WorkingCalendar

from routing.domain.organisation import Organisation
from routing.domain.policy import (
    IOC_STAGE_STATES,
    RECIPIENT_ASSIGNED,
    RECIPIENT_DISTRICT,
    RECIPIENT_IOC,
    Automation,
    CalendarConfig,
    Duration,
    EscalationStep,
    ReminderTarget,
    RoutingPolicy,
)
from routing.domain.rules import IncidentFacts, RuleMatch, match_rule

# acknowledge, resolve: the responsible unit's; verify, approve, dispatch: the IOC's own steps.
DeadlineKind = Literal["acknowledge", "resolve", "verify", "approve", "dispatch"]
WorkKind = Literal["reminder", "escalation"]
UNIT_DEADLINES: tuple[DeadlineKind, ...] = ("acknowledge", "resolve")


@dataclass(frozen=True, slots=True)
class DueWork:
    kind: WorkKind
    deadline: DeadlineKind
    step: int          # reminder index or escalation step (1 = first step of the chain)
    due_at: datetime
    # An IOC step's deadline: its frozen plan (`stage_plan`) and when the incident entered
    # the state that waits for it; None for the unit deadlines (the incident's snapshot).
    plan: dict[str, Any] | None = field(default=None, compare=False)
    stage_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    unit: str
    roles: tuple[str, ...]
    contacts: tuple[dict[str, str], ...]


def build_snapshot(policy: RoutingPolicy, calendar: WorkingCalendar, *, category: str,
                   priority: str, match: RuleMatch, unit: str, assigned_at: datetime,
                   automation: Automation | None, manual_unit: bool) -> dict[str, Any]:
    return Planner(policy, calendar, assigned_at).snapshot(
        category=category, priority=priority, match=match, unit=unit, automation=automation,
        manual_unit=manual_unit)


@dataclass
class Planner:
    """Snapshots and schedules for one policy at one instant.

    Memoised: a batch of incidents assigned together shares the working-time
    arithmetic of each deadline entry instead of redoing it per incident.
    """

    policy: RoutingPolicy
    calendar: WorkingCalendar
    at: datetime
    _dues: dict[int, tuple[str, str]] = field(default_factory=dict)
    _work: dict[tuple[int, int], list[DueWork]] = field(default_factory=dict)
    _static: dict[int, dict[str, Any]] = field(default_factory=dict)
    _matches: dict[IncidentFacts, RuleMatch] = field(default_factory=dict)

    def match(self, org: Organisation, facts: IncidentFacts) -> RuleMatch:
        """`match_rule`, once per distinct facts in the batch (without commune centres,
        coordinates do not change the outcome, so they are left out of the key)."""
        key = facts if org.commune_centres else replace(facts, location=None)
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = match_rule(self.policy, org, facts)
        return found

    def _static_parts(self, escalation_entry: int) -> dict[str, Any]:
        static = self._static.get(escalation_entry)
        if static is None:
            esc = self.policy.escalation[escalation_entry]
            static = self._static[escalation_entry] = {
                "reminders_before": [r.model_dump(exclude_none=True) for r in esc.reminders_before],
                "remind": esc.remind.model_dump(mode="json"),
                "chain": [st.model_dump(mode="json", exclude_none=True) for st in esc.chain],
                "calendar": self.policy.calendar.model_dump(mode="json"),
            }
            static["version"] = policy_version(static)
        return static

    def snapshot(self, *, category: str, priority: str, match: RuleMatch, unit: str,
                 automation: Automation | None, manual_unit: bool) -> dict[str, Any]:
        index, entry = self.policy.deadline_for(category, priority)
        dues = self._dues.get(index)
        if dues is None:
            dues = (entry.acknowledge.after(self.at, self.calendar).isoformat(),
                    entry.resolve.after(self.at, self.calendar).isoformat())
            self._dues[index] = dues
        escalation_entry, _ = self.policy.escalation_for(category, priority)
        static = self._static_parts(escalation_entry)
        return {
            # Why this rule: the area line and the lines of the matching rule (the skipped
            # rules are what `dry-run` is for).
            "rule": {"id": match.rule_id, "unit": match.unit, "area": match.area,
                     "explanation": [match.explanation[0], *match.explanation[-2:]]},
            "unit": unit,
            "unit_chosen_by": "operator" if manual_unit else "rule",
            "automation": automation.id if automation is not None else None,
            "deadline_entry": index,
            "escalation_entry": escalation_entry,
            "acknowledge": entry.acknowledge.model_dump(exclude_none=True),
            "resolve": entry.resolve.model_dump(exclude_none=True),
            "acknowledge_due_at": dues[0],
            "resolve_due_at": dues[1],
            "reminders_before": static["reminders_before"],
            "remind": static["remind"],
            "chain": static["chain"],
            "calendar": static["calendar"],
            "version": static["version"],
            "assigned_at": self.at.isoformat(),
        }

    def first_work(self, snapshot: dict[str, Any]) -> list[DueWork]:
        """The first due item of each deadline (each fired item schedules the next)."""
        key = int(snapshot["deadline_entry"]), int(snapshot.get("escalation_entry", 0))
        work = self._work.get(key)
        if work is None:
            work = first_per_deadline(schedule(snapshot, self.calendar))
            self._work[key] = work
        return work

    def stage_work(self, category: str, priority: str, state: str) -> list[DueWork] | None:
        """The first due item of the IOC step that `state` waits for (None: no such step,
        or no `ioc_deadlines` configured)."""
        plan = stage_plan(self.policy, self.calendar, category=category, priority=priority,
                          state=state, entered_at=self.at)
        return None if plan is None else first_per_deadline(schedule(plan, self.calendar))


# Parts of a snapshot shared by every incident assigned under the same configuration;
# storage may keep them once per `version` instead of once per incident.
SHARED_SNAPSHOT_KEYS = ("reminders_before", "remind", "chain", "calendar")


def policy_version(shared: dict[str, Any]) -> str:
    body = json.dumps({k: shared[k] for k in SHARED_SNAPSHOT_KEYS if k in shared},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def snapshot_summary(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What events carry of the snapshot (the full one stays with the incident)."""
    return {"rule": snapshot["rule"]["id"], "unit_chosen_by": snapshot["unit_chosen_by"],
            "automation": snapshot["automation"], "deadline_entry": snapshot["deadline_entry"],
            "acknowledge": snapshot["acknowledge"], "resolve": snapshot["resolve"],
            "version": snapshot["version"]}


def snapshot_due(snapshot: dict[str, Any], deadline: DeadlineKind) -> datetime:
    return datetime.fromisoformat(snapshot[f"{deadline}_due_at"])


def stage_plan(policy: RoutingPolicy, calendar: WorkingCalendar, *, category: str,
               priority: str, state: str, entered_at: datetime) -> dict[str, Any] | None:
    """The IOC step `state` waits for, frozen at entry: deadline, reminders, chain, calendar."""
    stage = next((s for s, states in IOC_STAGE_STATES.items() if state in states), None)
    found = policy.ioc_deadlines_for(category, priority) if stage is not None else None
    if stage is None or found is None:
        return None
    index, entry = found
    within = entry.within(stage)
    return {
        "deadline": stage, "ioc_entry": index, "within": within.model_dump(exclude_none=True),
        "entered_at": entered_at.isoformat(),
        "due_at": within.after(entered_at, calendar).isoformat(),
        "reminders_before": [r.model_dump(exclude_none=True) for r in entry.reminders_before],
        "remind": entry.remind.model_dump(mode="json"),
        "chain": [st.model_dump(mode="json", exclude_none=True) for st in entry.chain],
        "calendar": policy.calendar.model_dump(mode="json"),
    }


def _deadlines(snapshot: dict[str, Any]) -> list[tuple[DeadlineKind, datetime]]:
    if "deadline" in snapshot:  # an IOC step's plan
        return [(snapshot["deadline"], datetime.fromisoformat(snapshot["due_at"]))]
    return [(d, snapshot_due(snapshot, d)) for d in UNIT_DEADLINES]


def due_at_of(snapshot: dict[str, Any], deadline: str) -> str:
    """The deadline's instant as ISO 8601 text, from an assignment snapshot or a step's plan."""
    if "deadline" in snapshot:
        return str(snapshot["due_at"])
    return str(snapshot[f"{deadline}_due_at"])


def schedule(snapshot: dict[str, Any], calendar: WorkingCalendar) -> list[DueWork]:
    """Reminders before each deadline and the escalation steps after it, in time order.

    `snapshot`: an assignment's snapshot, or an IOC step's plan (`stage_plan`).
    """
    is_stage = "deadline" in snapshot
    start = datetime.fromisoformat(snapshot["entered_at" if is_stage else "assigned_at"])
    plan, stage_at = (snapshot, start) if is_stage else (None, None)
    reminders = [Duration.model_validate(r) for r in snapshot["reminders_before"]]
    chain = [EscalationStep.model_validate(s) for s in snapshot["chain"]]
    work: list[DueWork] = []
    for deadline, due in _deadlines(snapshot):
        for i, lead in enumerate(reminders, start=1):
            at = lead.before(due, calendar)
            if start < at < due:
                work.append(DueWork("reminder", deadline, i, at, plan, stage_at))
        for i, step in enumerate(chain, start=1):
            work.append(DueWork("escalation", deadline, i,
                                max(due, step.after.after(due, calendar)), plan, stage_at))
    work.sort(key=_order)
    return work


def _order(w: DueWork) -> tuple[datetime, int, int]:
    return w.due_at, 0 if w.kind == "reminder" else 1, w.step


def first_per_deadline(work: list[DueWork]) -> list[DueWork]:
    firsts: dict[str, DueWork] = {}
    for w in sorted(work, key=_order):
        firsts.setdefault(w.deadline, w)
    return list(firsts.values())


def following(snapshot: dict[str, Any], deadline: str, kind: str, step: int) -> DueWork | None:
    """The item after (kind, step) in the sequence of `deadline`, from the frozen snapshot."""
    sequence = [w for w in schedule(snapshot, calendar_of(snapshot)) if w.deadline == deadline]
    for i, w in enumerate(sequence):
        if w.kind == kind and w.step == step:
            return sequence[i + 1] if i + 1 < len(sequence) else None
    return None


def calendar_of(snapshot: dict[str, Any]) -> WorkingCalendar:
    """The working calendar as configured when the incident was assigned."""
    return _calendar(json.dumps(snapshot["calendar"], sort_keys=True))


@lru_cache(maxsize=32)
def _calendar(config_json: str) -> WorkingCalendar:
    return CalendarConfig.model_validate(json.loads(config_json)).build()


def chain_step(snapshot: dict[str, Any], step: int) -> EscalationStep:
    return EscalationStep.model_validate(snapshot["chain"][step - 1])


def reminder_target(snapshot: dict[str, Any]) -> ReminderTarget:
    """Who reminders go to (snapshots frozen before `remind` existed: the unit's officer)."""
    return ReminderTarget.model_validate(snapshot.get("remind", {}))


def recipients(step: EscalationStep | ReminderTarget, assigned_unit: str | None,
               org: Organisation) -> list[Recipient]:
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
    if work_deadline == "resolve":
        return state in ("assigned", "acknowledged", "in_progress")
    return state in IOC_STAGE_STATES.get(work_deadline, ())
