"""The state machine: decide whether a command may change an incident, and how.

`decide` validates everything first and mutates the incident only when the
command is accepted, so a rejected command leaves no trace but its answer.
"""

from __future__ import annotations

from routing.domain.commands import Command
from routing.domain.deadlines import snapshot_due, snapshot_summary
from routing.domain.model import Context, Incident, IncidentEvent, Notification, Outcome
from routing.domain.policy import Automation
from routing.domain.reasons import ROLE_NAMES, Reason, Rejection, illegal, reject
from routing.domain.states import (
    EVENT_TYPES,
    ROLE_LEADER,
    ROLE_OPERATOR,
    TRANSITIONS,
    WITH_UNIT,
    Actor,
    State,
    Verb,
)

# Who may do what (Đ13.2: only the IOC leader approves; a unit acts only on what it holds).
OPERATOR_VERBS = frozenset({Verb.VERIFY, Verb.REJECT, Verb.ASSIGN, Verb.MERGE, Verb.REOPEN,
                            Verb.CLOSE})
UNIT_VERBS = frozenset({Verb.ACKNOWLEDGE, Verb.UPDATE_STATUS, Verb.RETURN, Verb.RESOLVE})


def authorise(verb: Verb, actor: Actor, incident: Incident) -> Rejection | None:
    if verb is Verb.APPROVE:
        return None if actor.has(ROLE_LEADER) else reject(Reason.ROLE_REQUIRED,
                                                          ROLE_NAMES[ROLE_LEADER])
    if verb in OPERATOR_VERBS:
        return None if actor.has(ROLE_OPERATOR) else reject(Reason.ROLE_REQUIRED,
                                                            ROLE_NAMES[ROLE_OPERATOR])
    if verb in UNIT_VERBS:
        return None if _holds(actor, incident) else reject(Reason.NOT_ASSIGNED_TO_UNIT)
    if verb is Verb.TRANSFER:
        # The IOC reassigns, or the unit hands over to another unit it agreed with.
        if actor.has(ROLE_OPERATOR) or _holds(actor, incident):
            return None
        return reject(Reason.NOT_ASSIGNED_TO_UNIT)
    if verb is Verb.ANSWER_SURVEY:
        # The channel the reporter used (the source unit's system) or an operator on the phone.
        if actor.unit == incident.source_unit or actor.has(ROLE_OPERATOR):
            return None
        return reject(Reason.ROLE_REQUIRED, ROLE_NAMES[ROLE_OPERATOR])
    return None  # pragma: no cover - every verb is covered above


def _holds(actor: Actor, incident: Incident) -> bool:
    return incident.assigned_unit is not None and actor.unit == incident.assigned_unit


def _validate(cmd: Command, incident: Incident, ctx: Context,
              primary: Incident | None) -> Rejection | None:
    """Checks of the command's content, after authorisation and state legality."""
    verb = cmd.verb
    if verb in (Verb.REJECT, Verb.RETURN, Verb.TRANSFER, Verb.REOPEN) and not cmd.reason:
        return reject(Reason.REASON_REQUIRED)
    if verb is Verb.RESOLVE and not cmd.note:
        return reject(Reason.RESOLUTION_NOTE_REQUIRED)
    if verb is Verb.UPDATE_STATUS and incident.state is State.IN_PROGRESS and not cmd.note:
        return reject(Reason.NOTE_REQUIRED)
    if verb is Verb.TRANSFER:
        if not cmd.unit:
            return reject(Reason.MALFORMED, "thiếu đơn vị nhận chuyển (unit)")
        if cmd.unit == incident.assigned_unit:
            return reject(Reason.SAME_UNIT, cmd.unit)
    if verb in (Verb.ASSIGN, Verb.TRANSFER) and cmd.unit:
        if cmd.unit not in ctx.org.unit_ids:
            return reject(Reason.UNKNOWN_UNIT, cmd.unit)
        if not ctx.org.handles_incidents(cmd.unit):
            return reject(Reason.UNIT_DOES_NOT_HANDLE_INCIDENTS, ctx.org.name_of(cmd.unit))
    if verb is Verb.MERGE:
        if not cmd.primary_id:
            return reject(Reason.MALFORMED, "thiếu mã sự cố chính (primary_id)")
        if cmd.primary_id == incident.id:
            return reject(Reason.MERGE_INTO_SELF)
        if primary is None:
            return reject(Reason.UNKNOWN_PRIMARY, cmd.primary_id)
        if primary.state in (State.MERGED, State.REJECTED, State.CLOSED):
            return reject(Reason.PRIMARY_NOT_OPEN, cmd.primary_id)
    if verb is Verb.ANSWER_SURVEY:
        if incident.survey_answered:
            return reject(Reason.SURVEY_ALREADY_ANSWERED)
        low, high = ctx.policy.survey.min_score, ctx.policy.survey.max_score
        if cmd.score is None or not low <= cmd.score <= high:
            return reject(Reason.INVALID_SCORE, f"{low} đến {high}")
    return None


def decide(incident: Incident, cmd: Command, actor: Actor, ctx: Context,
           primary: Incident | None = None) -> Outcome | Rejection:
    """Apply `cmd` to `incident` if allowed; the outcome lists every resulting event."""
    if incident.state is State.MERGED:
        return reject(Reason.MERGED, incident.primary_id or "")
    denied = authorise(cmd.verb, actor, incident)
    if denied is not None:
        return denied
    allowed_from, _ = TRANSITIONS[cmd.verb]
    if incident.state not in allowed_from:
        return illegal(cmd.verb, incident.state)
    invalid = _validate(cmd, incident, ctx, primary)
    if invalid is not None:
        return invalid
    before = incident.state
    outcome = _apply(incident, cmd, actor, ctx, primary)
    if incident.state is not before:
        with_ioc_deadline(outcome, incident, ctx)
    return outcome


def with_ioc_deadline(outcome: Outcome, incident: Incident, ctx: Context) -> Outcome:
    """Schedule the deadline of the IOC step the incident now waits for (Đ13.2: verify,
    approve, forward quickly), unless the decision gave it to a unit. The work of the state
    it left is skipped when due (`still_due`, or a later entry supersedes it)."""
    if outcome.schedule is None:
        outcome.schedule = ctx.planner.stage_work(incident.category, incident.priority,
                                                  incident.state.value)
    return outcome


def _apply(incident: Incident, cmd: Command, actor: Actor, ctx: Context,
           primary: Incident | None) -> Outcome:
    verb, before = cmd.verb, incident.state
    event_type = EVENT_TYPES[verb]
    data: dict[str, object] = {"command_id": str(cmd.command_id)}
    if verb is Verb.ASSIGN:
        return assign(incident, actor, ctx, unit=cmd.unit, reason=cmd.reason,
                      event_type=event_type, extra=data)
    if verb is Verb.TRANSFER:
        data["from_unit"] = incident.assigned_unit
        return assign(incident, actor, ctx, unit=cmd.unit, reason=cmd.reason,
                      event_type=event_type, extra=data)
    if verb is Verb.REOPEN:
        if incident.last_unit is not None and before is not State.REJECTED:
            return assign(incident, actor, ctx, unit=incident.last_unit, reason=cmd.reason,
                          event_type=event_type, extra=data)
        return _move(incident, State.RECEIVED, event_type, actor, ctx, cmd.reason, data)
    outcome = Outcome()
    if verb is Verb.RETURN:
        data["unit"] = incident.assigned_unit
        incident.assigned_unit = None   # Đ4.3: back with the IOC until it reassigns
        outcome.notifications.append(Notification(
            "returned", ctx.org.ioc_unit, incident.id, ("incident-officer", "leader"),
            {"from_unit": data["unit"], "reason": cmd.reason}))
    elif verb is Verb.MERGE:
        assert primary is not None
        incident.primary_id = primary.id
        incident.assigned_unit = None
        data["primary_id"] = primary.id
        outcome.events.append(IncidentEvent(
            "routing.incident.duplicate-merged", primary.id, primary.state, primary.state, actor,
            ctx.now, cmd.reason, {"duplicate_id": incident.id, "command_id": str(cmd.command_id)}))
    elif verb in (Verb.UPDATE_STATUS, Verb.RESOLVE):
        data["note"] = cmd.note
    elif verb is Verb.CLOSE:
        outcome.survey_requested = True
    elif verb is Verb.ANSWER_SURVEY:
        incident.survey_answered = True
        data.update(score=cmd.score, comment=cmd.comment, unit=incident.last_unit)
    target = TRANSITIONS[verb][1]
    assert target is not None
    moved = _move(incident, target, event_type, actor, ctx, cmd.reason, data)
    # The duplicate's own event comes first, then the note on the primary.
    outcome.events[:0] = moved.events
    return outcome


def _move(incident: Incident, target: State, event_type: str, actor: Actor, ctx: Context,
          reason: str | None, data: dict[str, object]) -> Outcome:
    before = incident.state
    incident.state = target
    if target is State.RESOLVED or target is State.CLOSED:
        incident.ack_due_at = incident.resolve_due_at = None
    return Outcome(events=[IncidentEvent(event_type, incident.id, before, target, actor, ctx.now,
                                         reason, dict(data))])


def assign(incident: Incident, actor: Actor, ctx: Context, *, unit: str | None,
           reason: str | None, event_type: str = EVENT_TYPES[Verb.ASSIGN],
           automation: Automation | None = None,
           extra: dict[str, object] | None = None,
           roles: tuple[str, ...] = ("incident-officer", "head")) -> Outcome:
    """Give the incident to exactly one unit and freeze the policy in force (snapshot)."""
    match = ctx.planner.match(ctx.org, incident.facts())
    chosen = unit or match.unit
    snapshot = ctx.planner.snapshot(category=incident.category, priority=incident.priority,
                                    match=match, unit=chosen, automation=automation,
                                    manual_unit=unit is not None and unit != match.unit)
    before = incident.state
    incident.state = State.ASSIGNED
    incident.assigned_unit = chosen
    incident.last_unit = chosen
    incident.assignment_no += 1
    incident.policy = snapshot
    incident.ack_due_at = snapshot_due(snapshot, "acknowledge")
    incident.resolve_due_at = snapshot_due(snapshot, "resolve")
    data: dict[str, object] = {
        **(extra or {}), "unit": chosen, "assignment_no": incident.assignment_no,
        "rule_id": match.rule_id, "acknowledge_due_at": snapshot["acknowledge_due_at"],
        "resolve_due_at": snapshot["resolve_due_at"],
        "policy": snapshot_summary(snapshot),
    }
    event = IncidentEvent(event_type, incident.id, before, State.ASSIGNED, actor, ctx.now, reason,
                          data)
    note = Notification("assigned", chosen, incident.id, roles, {
        "assignment_no": incident.assignment_no, "category": incident.category,
        "priority": incident.priority, "commune": incident.commune, "title": incident.title,
        "acknowledge_due_at": snapshot["acknowledge_due_at"],
        "resolve_due_at": snapshot["resolve_due_at"]})
    return Outcome(events=[event], notifications=[note],
                   schedule=ctx.planner.first_work(snapshot))


def is_with_unit(state: State) -> bool:
    return state in WITH_UNIT
