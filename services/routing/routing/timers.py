"""Due-work scheduler: reminders and escalation steps, fired from PostgreSQL rows.

There are no in-memory timers: every instance polls `due_work` and takes due
rows with `FOR UPDATE SKIP LOCKED`, so each row is fired by exactly one
instance, in the same transaction that marks it fired and puts its
notifications in the outbox. A restart simply finds the rows still due.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ioc_shared.contracts.envelope import deterministic_event_id
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.runtime import restart_delay
from opentelemetry import trace

from routing.domain.deadlines import (
    UNIT_DEADLINES,
    chain_step,
    due_at_of,
    following,
    recipients,
    reminder_target,
    still_due,
)
from routing.domain.model import Incident, IncidentEvent, Notification
from routing.domain.policy import EscalationStep
from routing.handlers import RoutingCore, in_trace_of
from routing.publishing import Effects, event_payload
from routing.repository import DueRow

log = get_logger(__name__)
tracer = trace.get_tracer("routing")

REMINDER_EVENT = "routing.incident.reminder-sent"
ESCALATION_EVENT = "routing.incident.escalated"


class TimerWorker:
    def __init__(self, core: RoutingCore, *, poll_s: float = 1.0, batch: int = 200) -> None:
        self.core = core
        self.poll_s = poll_s
        self.batch = batch
        self.fired = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                done = await self.fire_due()
            except Exception as exc:  # a transient database error must not end the timers
                failures += 1
                if failures == 1:   # one line per outage; the backoff grows meanwhile
                    log.error("timers: firing failed; retrying with backoff", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), restart_delay(failures))
                continue
            if failures:
                log.info("timers: firing again", failed_attempts=failures)
                failures = 0
            if done == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.poll_s)

    async def fire_due(self) -> int:
        """Fire (or skip) one batch of due rows; returns how many rows were handled."""
        core = self.core
        now = core.clock()
        effects = core.effects()
        with tracer.start_as_current_span("routing.timers.fire"):
            async with core.pool.acquire() as conn, conn.transaction():
                rows = await core.repo.claim_due_work(conn, now, self.batch)
                if not rows:
                    return 0
                incidents = await core.repo.load_incidents(conn, {r.incident_id for r in rows})
                traces = await core.repo.traceparents(conn, incidents)
                fired: list[int] = []
                skipped: list[int] = []
                for row in rows:
                    incident = incidents.get(row.incident_id)
                    plan = _plan_of(row, incident)
                    if (incident is None or plan is None or row.superseded
                            or incident.assignment_no != row.assignment_no
                            or not still_due(row.deadline, incident.state.value)):
                        skipped.append(row.id)
                        continue
                    # In the incident's trace, linked to this round's span.
                    with in_trace_of(f"routing.timer {row.kind}", traces.get(incident.id),
                                     {"ioc.incident_id": incident.id, "ioc.deadline": row.deadline}):
                        self._fire(row, incident, plan, effects)
                    fired.append(row.id)
                    # Only the next item of this deadline is kept as a row: fewer rows to
                    # write per assignment, and the sequence stops once the deadline is met.
                    nxt = following(plan, row.deadline, row.kind, row.step)
                    if nxt is not None:
                        effects.due.append((incident.id, row.assignment_no, nxt))
                await core.repo.finish_due_work(conn, fired, skipped, now, core.instance_id)
                await core.write(conn, effects)
        if fired:
            self.fired += len(fired)
            log.info("timers fired", fired=len(fired), skipped=len(skipped))
        return len(rows)

    def _fire(self, row: DueRow, incident: Incident, plan: dict[str, Any],
              effects: Effects) -> None:
        core = self.core
        base: dict[str, Any] = {
            "deadline": row.deadline, "step": row.step, "due_at": due_at_of(plan, row.deadline),
            "work_due_at": row.due_at.isoformat(), "assignment_no": row.assignment_no,
            "state": incident.state.value, "category": incident.category,
            "priority": incident.priority, "title": incident.title,
        }
        # Reminders and escalation steps name their recipients the same way: units resolved
        # from the plan, with the contacts the registry gives for the roles asked.
        target = reminder_target(plan) if row.kind == "reminder" else chain_step(plan, row.step)
        found = recipients(target, incident.assigned_unit, core.org)
        data = {**base, "recipients": [{"unit": r.unit, "contact_roles": list(r.roles),
                                        "contacts": list(r.contacts)} for r in found]}
        if isinstance(target, EscalationStep):
            data["level"] = target.level
            event_type = ESCALATION_EVENT
        else:
            event_type = REMINDER_EVENT
        event = IncidentEvent(event_type, incident.id, incident.state, incident.state, core.system,
                              core.clock(), None, data)
        event_id = str(deterministic_event_id("due-work", row.id))
        effects.audit.append((event_id, event))
        effects.publish(effects.topics.events, event_type, incident.id, event_payload(event),
                        event_id=event_id, cause=None)
        for r in found:
            note = Notification(row.kind, r.unit, incident.id, r.roles,
                                {**data, "contacts": list(r.contacts)})
            effects.notify(note, event_id=deterministic_event_id("due-work", row.id, r.unit),
                           cause=None)


def _plan_of(row: DueRow, incident: Incident | None) -> dict[str, Any] | None:
    """What the row's sequence follows: the IOC step's frozen plan, or the assignment's
    snapshot on the incident."""
    if row.deadline in UNIT_DEADLINES:
        return incident.policy if incident is not None else None
    return row.plan
