"""Deadlines, reminders and the escalation schedule frozen at assignment."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from routing.domain.deadlines import build_snapshot, chain_step, recipients, schedule, still_due
from routing.domain.policy import RoutingPolicy
from routing.domain.rules import IncidentFacts, match_rule
from routing_examples import CALENDAR, NOW, ORG, POLICY, POLICY_RAW

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def snapshot(priority: str = "binh-thuong", policy: RoutingPolicy = POLICY,
             at: datetime = NOW) -> dict:  # type: ignore[type-arg]
    facts = IncidentFacts("field-reports", "moi-truong", priority, "xa-a", "xa-c")
    match = match_rule(policy, ORG, facts)
    return build_snapshot(policy, policy.calendar.build(), category="moi-truong", priority=priority,
                          match=match, unit=match.unit, assigned_at=at, automation=None,
                          manual_unit=False)


def table(snap: dict) -> list[tuple[str, str, int, str]]:  # type: ignore[type-arg]
    return [(w.kind, w.deadline, w.step, f"{w.due_at.astimezone(VN):%a %d/%m %H:%M}")
            for w in schedule(snap, CALENDAR)]


def test_normal_priority_schedule_in_working_time() -> None:
    # Assigned Wednesday 3/6/2026 09:00: acknowledge within 4 working hours, resolve in 5 days.
    assert table(snapshot()) == [
        ("reminder", "acknowledge", 1, "Wed 03/06 14:00"),
        ("escalation", "acknowledge", 1, "Wed 03/06 15:00"),     # unit officer, at the deadline
        ("escalation", "acknowledge", 2, "Thu 04/06 09:30"),     # unit head, +4 working hours
        ("escalation", "acknowledge", 3, "Thu 04/06 17:00"),     # IOC leader, +1 working day
        ("escalation", "acknowledge", 4, "Fri 05/06 17:00"),     # district, +2 working days
        ("reminder", "resolve", 1, "Wed 10/06 16:00"),
        ("escalation", "resolve", 1, "Wed 10/06 17:00"),
        ("escalation", "resolve", 2, "Thu 11/06 11:30"),
        ("escalation", "resolve", 3, "Thu 11/06 17:00"),
        ("escalation", "resolve", 4, "Fri 12/06 17:00"),
    ]


def test_emergency_acknowledgement_runs_on_the_wall_clock() -> None:
    rows = table(snapshot("khan-cap"))
    assert ("escalation", "acknowledge", 1, "Wed 03/06 10:00") in rows
    assert ("reminder", "acknowledge", 1, "Wed 03/06 09:00") not in rows  # not after assignment
    assert ("escalation", "resolve", 1, "Thu 04/06 17:00") in rows


def test_later_policy_edits_do_not_change_a_frozen_snapshot() -> None:
    frozen = snapshot()
    before = table(frozen)
    edited = dict(POLICY_RAW, deadlines=[{"acknowledge": {"minutes": 5},
                                          "resolve": {"minutes": 10}}])
    edited_policy = RoutingPolicy.model_validate(edited)
    assert table(frozen) == before
    assert ("escalation", "acknowledge", 1, "Wed 03/06 09:05") in table(snapshot(policy=edited_policy))
    assert frozen["acknowledge"] == {"working_hours": 4.0}
    assert frozen["rule"]["id"] == "env-local" and frozen["unit"] == "xa-a"


def test_recipients_of_each_step_come_from_the_registry_contacts() -> None:
    snap = snapshot()
    first = recipients(chain_step(snap, 1), "xa-a", ORG)
    assert [(r.unit, [c["name"] for c in r.contacts]) for r in first] == [("xa-a", ["Cán bộ A"])]
    head = recipients(chain_step(snap, 2), "xa-a", ORG)
    assert [c["role"] for c in head[0].contacts] == ["head"]
    last = recipients(chain_step(snap, 4), "xa-a", ORG)
    assert [r.unit for r in last] == ["district", "ioc"]
    assert all(r.roles == ("leader",) for r in last)


def test_deadline_only_matters_while_the_incident_waits_for_it() -> None:
    assert still_due("acknowledge", "assigned")
    assert not still_due("acknowledge", "acknowledged")
    assert still_due("resolve", "in_progress")
    assert not still_due("resolve", "resolved") and not still_due("resolve", "returned")
