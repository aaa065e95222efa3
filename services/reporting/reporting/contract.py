"""JSON Schemas of what reporting publishes: `report.published` and its figures, and the
models of its answers and reminders.

`figures` is contract `ioc.reporting.report/1` (`reporting.domain.figures`): fields may be
added (optional); a change that would break a consumer gets `/2`. The AsyncAPI document
(`ioc_shared.contracts.asyncapi`) takes these schemas from here.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from ioc_shared.contracts.payloads import Closed as _Closed
from ioc_shared.contracts.payloads import Origin, check_against
from pydantic import BaseModel, Field

from reporting.domain.figures import CONTRACT, FLOW_MEASURES

_INT = {"type": "integer"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required if required is not None else props),
            "properties": props}


def _rows(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": _obj(props)}


def figures_json_schema() -> dict[str, Any]:
    totals = {m: _INT for m in (*FLOW_MEASURES, "overdue_open", "overdue")}
    duration = _obj({"count": _INT, "median_h": _NUM_OR_NULL, "p90_h": _NUM_OR_NULL})
    compared = {"type": ["object", "null"], "required": ["period", "label", "received", "resolved"],
                "properties": {"period": _STR, "label": _STR, "received": _INT,
                               "resolved": _INT, "rejected": _INT}}
    incidents = _obj({
        "totals": _obj(totals),
        "on_time": _obj({"acknowledge_rate": _NUM_OR_NULL, "resolve_rate": _NUM_OR_NULL}),
        "durations": _obj({"acknowledge": duration, "resolve": duration, "unit": _STR}),
        "by_unit": _rows({"unit": _STR, "name": _STR, "assigned": _INT, "acknowledged": _INT,
                          "resolved": _INT, "resolve_on_time": _INT, "resolve_late": _INT,
                          "on_time_rate": _NUM_OR_NULL, "ack_on_time_rate": _NUM_OR_NULL,
                          "returned": _INT, "transferred": _INT, "escalated": _INT,
                          "survey_responses": _INT, "survey_mean": _NUM_OR_NULL,
                          "resolve_median_h": _NUM_OR_NULL}),
        "by_commune": _rows({"commune": _STR, "name": _STR, "received": _INT, "resolved": _INT}),
        "by_category": _rows({"category": _STR, "name": _STR, "received": _INT,
                              "resolved": _INT, "rejected": _INT}),
        "by_source": _rows({"source": _STR, "name": _STR, "received": _INT}),
        "states": {"type": "object", "additionalProperties": _INT},
        "overdue": _rows({"incident_id": _STR, "unit": _STR, "unit_name": _STR,
                          "category": _STR, "category_name": _STR, "commune": _STR,
                          "commune_name": _STR, "due_on": {"type": "string", "format": "date"},
                          "working_days_late": _INT}),
        "satisfaction": _obj({"responses": _INT, "mean_score": _NUM_OR_NULL}),
        "trend": _rows({"month": _STR, "received": _INT, "resolved": _INT}),
    })
    sharing = _obj({
        "totals": _obj({"accepted": _INT, "rejected": _INT, "late_periods": _INT}),
        "reasons": _rows({"code": _STR, "name": _STR, "n": _INT}),
        "freshness_compliance_rate": _NUM_OR_NULL,
        "pairs": _rows({"unit": _STR, "unit_name": _STR, "dataset": _STR, "dataset_name": _STR,
                        "accepted": _INT, "rejected": _INT,
                        "reasons": {"type": "object", "additionalProperties": _INT},
                        "late_periods": _INT, "recovered": _INT, "rejected_rate": _NUM_OR_NULL}),
        "not_connected": _rows({"unit": _STR, "unit_name": _STR, "dataset": _STR,
                                "dataset_name": _STR}),
        "province_sync": {
            "type": ["array", "null"],
            "description": "null: no status from sync-province received yet. Per stream (a "
                           "dataset, or an event topic) and target: records sent and batches "
                           "parked in the period, the last sync time up to its end, the "
                           "target's failures in the period by reason; a dataset shared with "
                           "the province without any status has target, sent, parked null",
            # Fresh dicts (no shared objects): the YAML of the AsyncAPI document gets no
            # new anchors, so the rest of it keeps its anchor numbers.
            "items": _obj({"dataset": {"type": "string"}, "dataset_name": {"type": "string"},
                           "target": {"type": ["string", "null"]},
                           "sent": {"type": ["integer", "null"]},
                           "parked": {"type": ["integer", "null"]},
                           "last_synced_at": {"type": ["string", "null"]},
                           "failures": {"type": "object",
                                        "additionalProperties": {"type": "integer"}}})},
        "rejection_notices": _obj({"total": _INT, "unidentified": _INT}),
    }, required=["totals", "reasons", "freshness_compliance_rate", "pairs", "not_connected",
                 "province_sync"])
    indicator = _obj({"domain": _STR, "domain_name": _STR, "dataset": _STR, "dataset_name": _STR,
                      "commune": _STR, "commune_name": _STR, "unit": _STR, "unit_name": _STR,
                      "indicator": _STR, "indicator_name": _STR, "records": _INT,
                      "total": {"type": "number"}, "mean": _NUM_OR_NULL,
                      "latest_day": {"type": "string", "format": "date"},
                      "latest_value": _NUM_OR_NULL})
    allowances = _obj({
        "basis": _STR, "total": _INT, "person_months": _INT,
        "lines": _rows({"unit": _STR, "unit_name": _STR, "kind": _STR, "kind_name": _STR,
                        "person_months": _INT, "amount": _INT}),
        "by_unit": _rows({"unit": _STR, "unit_name": _STR, "amount": _INT}),
    })
    schema = _obj({
        "contract": {"const": CONTRACT, "type": "string"},
        "kind": {"enum": ["monthly", "quarterly", "six-monthly", "annual", "thematic", "ad-hoc"],
                 "type": "string"},
        "period": _obj({"key": _STR, "start": {"type": "string", "format": "date"},
                        "end": {"type": "string", "format": "date"}, "label": _STR}),
        "scope": {"type": "object", "additionalProperties": _STR},
        "summary": _STR,
        "incidents": incidents,
        "comparison": _obj({"previous": compared, "last_year": compared}),
        "data_sharing": sharing,
        "indicators": {"type": "array", "items": indicator},
        "allowances": allowances,
        "report_id": _STR, "version": _INT, "status": _STR, "number": _STR_OR_NULL,
        "issued_on": _STR_OR_NULL,
    }, required=["contract", "kind", "period", "scope", "summary", "incidents", "comparison",
                 "data_sharing", "indicators", "allowances"])
    schema["title"] = CONTRACT
    return schema


def published_json_schema() -> dict[str, Any]:
    """The payload of `report.published`."""
    return _obj({
        "report_id": _STR, "kind": _STR,
        "period": _obj({"key": _STR, "start": _STR, "end": _STR, "label": _STR}),
        "version": _INT, "status": {"enum": ["draft", "issued"], "type": "string"},
        "number": _STR_OR_NULL, "issued_on": _STR_OR_NULL,
        "files": {"type": "object", "additionalProperties": _STR},
        "figures": figures_json_schema(),
    })


# --- answers and reminders: pydantic models of their payloads ---------------------------
# For the AsyncAPI document (`MESSAGES`) and for the tests, which check payloads the code
# builds against them (`check_payload`). They forbid unknown fields for that check only;
# the published schemas leave objects open.
COMMAND_RESULT = "reporting.command.result"          # reporting.commands' RESULT
UNAUTHENTICATED_COMMAND = "reporting.command.unauthenticated"
DUE_SOON = "report.due-soon"                         # reporting.reports' (tests hold them equal)
OVERDUE = "report.overdue"


class CommandResult(_Closed):
    """On ioc.reporting.command-results.v1, keyed by the acting unit."""

    command_id: uuid.UUID | None
    command: str | None
    status: str = Field(description="accepted or rejected")
    reason_code: str | None
    message: str = Field(description="In Vietnamese")
    principal: str | None
    unit: str
    report_id: str | None
    report_status: str | None
    number: str | None = Field(description="The issued report's number")
    period: str | None = Field(description="Report period key")
    version: int | None
    duplicate: bool | None = Field(default=None, description="true: answered before")


class UnauthenticatedCommand(_Closed):
    """On ioc.reporting.unauthenticated-commands.v1 (operators only)."""

    command_id: uuid.UUID | None
    command: str | None
    status: str
    reason_code: str
    message: str
    claimed_principal: str | None
    origin: Origin


class Reminder(_Closed):
    """`report.due-soon` / `report.overdue` on ioc.reporting.notifications.v1, keyed by the
    leader's unit."""

    period: str = Field(description="Report period key")
    label: str = Field(description="The period in Vietnamese")
    due_on: date
    unit: str
    contact_role: str
    message: str = Field(description="In Vietnamese")
    statuses: list[str] = Field(description="Statuses of the period's versions so far")


MESSAGES: dict[str, dict[str, type[BaseModel]]] = {
    "ioc.reporting.command-results.v1": {COMMAND_RESULT: CommandResult},
    "ioc.reporting.unauthenticated-commands.v1": {UNAUTHENTICATED_COMMAND: UnauthenticatedCommand},
    "ioc.reporting.notifications.v1": {DUE_SOON: Reminder, OVERDUE: Reminder},
}


def check_payload(event_type: str, payload: dict[str, Any]) -> str | None:
    """Why `payload` does not match its model (None: it does), for the tests' checks."""
    return check_against(MESSAGES, event_type, payload, where="reporting.contract")
