"""Hand-made organisation, policy and incidents for the pure tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from routing.domain.commands import Command
from routing.domain.geo import Point
from routing.domain.model import Context, Incident
from routing.domain.organisation import ContactInfo, Organisation
from routing.domain.policy import RoutingPolicy
from routing.domain.states import Actor, State, Verb

ORG = Organisation(
    unit_ids=frozenset({"ioc", "district", "env-dept", "police", "xa-a", "xa-b", "xa-c"}),
    commune_ids=frozenset({"xa-a", "xa-b", "xa-c"}),
    ioc_unit="ioc", district_unit="district",
    incident_datasets=frozenset({"field-reports", "alerts"}),
    categories=frozenset({"moi-truong", "an-ninh", "giao-thong"}),
    commune_centres={"xa-a": (11.80, 106.60), "xa-b": (11.90, 106.60)},
    incident_units=frozenset({"env-dept", "police", "xa-a", "xa-b", "xa-c"}),
    unit_names={"ioc": "Trung tâm IOC huyện"},
    contacts={"xa-a": (ContactInfo("incident-officer", "Công chức", "Cán bộ A"),
                       ContactInfo("head", "Chủ tịch", "Chủ tịch xã A")),
              "ioc": (ContactInfo("leader", "Lãnh đạo", "Lãnh đạo IOC"),),
              "district": (ContactInfo("leader", "Chủ tịch", "Chủ tịch huyện"),)},
)

POLICY_RAW: dict[str, Any] = {
    "rules": [
        {"id": "police", "when": {"category": ["an-ninh"]}, "unit": "police"},
        {"id": "env-serious", "when": {"category": ["moi-truong"], "priority": ["cao", "khan-cap"]},
         "unit": "env-dept"},
        {"id": "env-north", "when": {"category": ["moi-truong"], "area": ["xa-b"]}, "unit": "@area"},
        {"id": "alerts-from-police", "when": {"dataset": ["alerts"], "source_unit": ["police"]},
         "unit": "police"},
        {"id": "env-local", "when": {"category": ["moi-truong"], "commune": ["xa-a", "xa-c"]},
         "unit": "@commune"},
    ],
    "default": {"unit": "env-dept"},
    "deadlines": [
        {"priority": ["khan-cap"], "acknowledge": {"hours": 1}, "resolve": {"working_days": 1}},
        {"acknowledge": {"working_hours": 4}, "resolve": {"working_days": 5}},
    ],
    "escalation": {
        "reminders_before": [{"working_hours": 1}],
        "chain": [
            {"level": "unit-officer", "after": {"minutes": 0}, "recipients": ["@assigned"],
             "contact_roles": ["incident-officer"]},
            {"level": "unit-head", "after": {"working_hours": 4}, "recipients": ["@assigned"],
             "contact_roles": ["head"]},
            {"level": "ioc-leader", "after": {"working_days": 1}, "recipients": ["@ioc"],
             "contact_roles": ["leader"]},
            {"level": "district-leadership", "after": {"working_days": 2},
             "recipients": ["@district", "@ioc"], "contact_roles": ["leader"]},
        ],
    },
    "automation": [{"id": "env-auto", "category": ["moi-truong"], "priority": ["binh-thuong"],
                    "dataset": ["field-reports"], "verify": True, "approve": True,
                    "assign": True}],
}
POLICY = RoutingPolicy.model_validate(POLICY_RAW)
CALENDAR = POLICY.calendar.build()
# Wednesday 3 June 2026, 09:00 in Lộc Ninh.
NOW = datetime(2026, 6, 3, 2, 0, tzinfo=UTC)

OPERATOR = Actor("ioc-operator", "ioc", frozenset({"ioc-operator"}))
LEADER = Actor("ioc-leader", "ioc", frozenset({"ioc-leader", "ioc-operator"}))
UNIT_A = Actor("xa-a-system", "xa-a", frozenset({"unit-officer"}))
UNIT_B = Actor("xa-b-system", "xa-b", frozenset({"unit-officer"}))
SOURCE = Actor("xa-c-system", "xa-c", frozenset({"unit-system"}))
CENTRE_A = Point(11.80, 106.60)
SYSTEM = Actor("system:routing", "ioc", frozenset({"system"}))


def ctx(now: datetime = NOW, policy: RoutingPolicy = POLICY) -> Context:
    return Context(policy, policy.calendar.build(), ORG, now)


def incident(state: State = State.RECEIVED, *, id: str = "inc-1", category: str = "moi-truong",
             priority: str = "binh-thuong", assigned: str | None = None,
             location: Point | None = CENTRE_A, **kw: Any) -> Incident:
    fields: dict[str, Any] = {"title": "Rác thải", **kw}
    inc = Incident(id=id, dataset="field-reports", record_id=id, source_unit="xa-c",
                   category=category, priority=priority, commune="xa-a", reported_at=NOW,
                   location=location, state=state, assigned_unit=assigned, last_unit=assigned,
                   **fields)
    if assigned is not None:
        inc.assignment_no = 1
    return inc


def command(verb: Verb, **kw: Any) -> Command:
    return Command(verb=verb, command_id=uuid.uuid4(), incident_id="inc-1", **kw)
