"""Status updates addressed to the original reporter, and the satisfaction survey (Đ10.5).

Nothing here may identify the reporter beyond the reference the reporter gave
(a ticket number, an app user id): name and phone stay in the canonical
record and never enter routing's events or logs.
"""

from __future__ import annotations

from typing import Any

from routing.domain.model import Incident, IncidentEvent
from routing.domain.policy import Survey
from routing.domain.reasons import STATE_NAMES
from routing.domain.states import State

REPORTER_STATUS = "routing.reporter.status-changed"
REPORTER_SURVEY = "routing.reporter.survey-requested"

# Transitions a reporter cares about; internal steps (approval, acknowledgement) are folded in.
_VISIBLE = frozenset({
    "routing.incident.received", "routing.incident.rejected", "routing.incident.assigned",
    "routing.incident.transferred", "routing.incident.progress-updated",
    "routing.incident.resolved", "routing.incident.closed", "routing.incident.reopened",
    "routing.incident.merged",
})


def _reporter(incident: Incident) -> dict[str, Any]:
    # The channel that carried the report and the reference the reporter gave, if any.
    return {"source_unit": incident.source_unit, "dataset": incident.dataset,
            "record_id": incident.record_id, "reporter_ref": incident.reporter_ref}


def status_update(event: IncidentEvent, incident: Incident) -> dict[str, Any] | None:
    if event.type not in _VISIBLE or event.incident_id != incident.id:
        return None
    state = event.to_state
    payload: dict[str, Any] = {
        "incident_id": incident.id, "reporter": _reporter(incident), "status": state.value,
        "status_text": STATE_NAMES[state], "at": event.at.isoformat(),
    }
    if state in (State.ASSIGNED, State.RESOLVED) and incident.last_unit:
        payload["unit"] = incident.last_unit
    if state is State.RESOLVED:
        payload["resolution_note"] = event.data.get("note")
    if state is State.MERGED:
        payload["primary_id"] = incident.primary_id
    return payload


def survey_request(incident: Incident, survey: Survey) -> dict[str, Any]:
    return {"incident_id": incident.id, "reporter": _reporter(incident), "unit": incident.last_unit,
            "question": survey.question, "min_score": survey.min_score,
            "max_score": survey.max_score}


def for_duplicate(update: dict[str, Any], duplicate: Incident) -> dict[str, Any]:
    """A status update of the primary, addressed to the reporter of a merged duplicate."""
    return {**update, "incident_id": duplicate.id, "primary_id": update["incident_id"],
            "reporter": _reporter(duplicate)}
