"""Escalation per category and priority, emergencies around the clock, the IOC's own
deadlines (Đ13.2), reminders with contacts, and the calendar shown to operators."""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from routing.config import load_policy, organisation_from_registry
from routing.domain.deadlines import (
    build_snapshot,
    recipients,
    reminder_target,
    schedule,
    still_due,
)
from routing.domain.intake import receive
from routing.domain.lifecycle import decide
from routing.domain.model import Context, Outcome
from routing.domain.organisation import Organisation
from routing.domain.policy import CalendarConfig, RoutingPolicy, validate_policy
from routing.domain.reasons import Rejection
from routing.domain.rules import IncidentFacts, match_rule
from routing.domain.states import State, Verb
from routing_examples import (
    LEADER,
    NOW,
    OPERATOR,
    ORG,
    POLICY_RAW,
    SYSTEM,
    UNIT_A,
    command,
    ctx,
    incident,
)

VN = ZoneInfo("Asia/Ho_Chi_Minh")
SEED_ORG = organisation_from_registry(load_registry(REPO_ROOT / "config" / "registry.yaml"))
SEED = load_policy(REPO_ROOT / "config" / "routing.yaml", SEED_ORG)
# Friday 5 February 2027, 18:00: Lunar New Year's Eve; `holidays` has the Tết break on 4-10
# February, so the next office hour is Thursday 11 February 07:30.
TET_EVE = datetime(2027, 2, 5, 18, 0, tzinfo=VN)


def seed_table(policy: RoutingPolicy, at: datetime, priority: str = "khan-cap",
               category: str = "moi-truong") -> list[tuple[str, str, int, str]]:
    facts = IncidentFacts("phan-anh-hien-truong", category, priority, "xa-loc-an", "ioc-loc-ninh")
    match = match_rule(policy, SEED_ORG, facts)
    calendar = policy.calendar.build()
    snap = build_snapshot(policy, calendar, category=category, priority=priority, match=match,
                          unit=match.unit, assigned_at=at, automation=None, manual_unit=False)
    return [(w.kind, w.deadline, w.step, f"{w.due_at.astimezone(VN):%a %d/%m %H:%M}")
            for w in schedule(snap, calendar) if w.deadline == "acknowledge"]


def seed_raw() -> dict[str, Any]:
    import yaml

    raw: dict[str, Any] = yaml.safe_load((REPO_ROOT / "config" / "routing.yaml").read_text("utf-8"))
    return raw


def problems_of(raw: dict[str, Any], org: Organisation = SEED_ORG) -> list[str]:
    return validate_policy(RoutingPolicy.model_validate(raw), org)


# --- emergencies around the clock --------------------------------------------------


def test_emergency_missed_on_tet_eve_reaches_every_level_that_evening() -> None:
    assert seed_table(SEED, TET_EVE) == [
        ("reminder", "acknowledge", 1, "Fri 05/02 18:45"),
        ("escalation", "acknowledge", 1, "Fri 05/02 19:00"),   # unit officer, at the deadline
        ("escalation", "acknowledge", 2, "Fri 05/02 19:30"),   # unit head
        ("escalation", "acknowledge", 3, "Fri 05/02 20:00"),   # IOC leader
        ("escalation", "acknowledge", 4, "Fri 05/02 21:00"),   # district leadership
    ]


def test_ordinary_incidents_keep_their_working_time_chain() -> None:
    rows = seed_table(SEED, datetime(2026, 6, 3, 9, 0, tzinfo=VN), priority="binh-thuong")
    assert ("escalation", "acknowledge", 2, "Thu 04/06 09:30") in rows  # +4 working hours


def test_one_working_time_chain_for_all_would_reach_the_unit_head_after_tet() -> None:
    raw = seed_raw()
    raw["escalation"] = [dict(raw["escalation"][-1], emergency_in_working_time=True)]
    policy = RoutingPolicy.model_validate(raw)
    assert validate_policy(policy, SEED_ORG) == []        # said explicitly: accepted
    rows = seed_table(policy, TET_EVE)
    assert ("escalation", "acknowledge", 1, "Fri 05/02 19:00") in rows
    assert ("escalation", "acknowledge", 2, "Thu 11/02 11:30") in rows   # after the holiday


def test_check_config_refuses_an_emergency_chain_in_working_time_not_said_explicitly() -> None:
    raw = seed_raw()
    raw["escalation"] = [raw["escalation"][-1]]           # the old global form, as a list
    found = problems_of(raw)
    assert len(found) == 1 and found[0].startswith(
        "escalation[0]: emergencies (khan-cap) follow this entry but reminders_before[0], "
        "chain[1] (level=unit-head), chain[2] (level=ioc-leader), chain[3] "
        "(level=district-leadership) count office time"), found
    # The earlier single-mapping form of the file is read, and refused the same way.
    raw["escalation"] = raw["escalation"][0]
    assert [p[:14] for p in problems_of(raw)] == ["escalation[0]:"]


def test_an_emergency_entry_for_one_category_leaves_the_others_refused() -> None:
    raw = seed_raw()
    raw["escalation"][0]["category"] = ["moi-truong"]
    found = problems_of(raw)
    assert [p.split(":")[0] for p in found] == ["escalation[1]"], found


def test_check_config_refuses_an_ioc_chain_in_working_time_for_emergencies() -> None:
    raw = seed_raw()
    raw["ioc_deadlines"] = [raw["ioc_deadlines"][-1]]
    found = problems_of(raw)
    assert len(found) == 1 and found[0].startswith(
        "ioc_deadlines[0]: emergencies (khan-cap) follow this entry"), found
    raw["ioc_deadlines"][0]["emergency_in_working_time"] = True
    assert problems_of(raw) == []


def test_ioc_deadlines_cannot_name_the_assigned_unit() -> None:
    raw = seed_raw()
    raw["ioc_deadlines"][0]["remind"] = {"recipients": ["@assigned"]}
    assert any(p.startswith("ioc_deadlines[0]: @assigned means nothing") for p in problems_of(raw))


def test_escalation_entries_must_end_with_one_that_matches_everything() -> None:
    raw = seed_raw()
    raw["escalation"] = [raw["escalation"][0]]
    assert any(p.startswith("escalation[0]: the last entry must match every incident")
               for p in problems_of(raw))


# --- the calendar an operator compares with the government's decision ---------------


def test_tet_2027_break_and_configured_changes_are_listed_for_the_operator() -> None:
    calendar = CalendarConfig(extra_days_off=(date(2027, 2, 11),),
                              compensatory_working_days=(date(2027, 2, 20),)).build()
    listed = calendar.days_off_and_worked_days(date(2027, 2, 1), date(2027, 3, 1))
    off = [d.day for d, worked, _ in listed if not worked]
    assert off == [4, 5, 6, 7, 8, 9, 10, 11]
    assert [(d, why) for d, worked, why in listed if worked] == [
        (date(2027, 2, 20), "compensatory working day (configuration)")]
    names = {d.day: why for d, _, why in listed}
    assert names[6] == "Lunar New Year" and names[11] == "extra day off (configuration)"
    assert calendar.is_working_day(date(2027, 2, 20)) and not calendar.is_working_day(
        date(2027, 2, 11))


# --- reminders carry the registry's contacts ----------------------------------------


def test_reminders_name_their_recipients_with_contacts_like_escalation_steps() -> None:
    snap = build_snapshot(ctx().policy, ctx().calendar, category="moi-truong",
                          priority="binh-thuong",
                          match=match_rule(ctx().policy, ORG, incident().facts()), unit="xa-a",
                          assigned_at=NOW, automation=None, manual_unit=False)
    found = recipients(reminder_target(snap), "xa-a", ORG)
    assert [(r.unit, r.roles, r.contacts) for r in found] == [
        ("xa-a", ("incident-officer",),
         ({"role": "incident-officer", "title": "Công chức", "name": "Cán bộ A"},))]
    # A snapshot frozen before `remind` existed reminds the unit's incident officer too.
    old = {k: v for k, v in snap.items() if k != "remind"}
    assert recipients(reminder_target(old), "xa-a", ORG) == found


# --- the IOC's own deadlines (Đ13.2) --------------------------------------------------

IOC_STAGES = {
    "ioc_deadlines": [{
        "verify": {"working_hours": 2}, "approve": {"working_hours": 1},
        "dispatch": {"minutes": 30},
        "reminders_before": [{"minutes": 15}],
        "remind": {"recipients": ["@ioc"], "contact_roles": ["incident-officer"]},
        "chain": [{"level": "ioc-leader", "after": {"minutes": 0}, "recipients": ["@ioc"],
                   "contact_roles": ["leader"]},
                  {"level": "district-leadership", "after": {"hours": 1},
                   "recipients": ["@district"], "contact_roles": ["leader"]}],
        "emergency_in_working_time": True,
    }],
}
STAGED = RoutingPolicy.model_validate({**copy.deepcopy(POLICY_RAW), **IOC_STAGES})


def staged_ctx(now: datetime = NOW) -> Context:
    return ctx(now, STAGED)


def local(work: Any) -> str:
    return f"{work.due_at.astimezone(VN):%a %d/%m %H:%M}"


def test_new_incident_waiting_for_verification_gets_the_ioc_deadline() -> None:
    inc = incident(priority="cao")                     # not automated
    outcome = receive(inc, staged_ctx(), SYSTEM)
    assert outcome.schedule is not None
    [first] = outcome.schedule
    assert (first.kind, first.deadline, first.step, local(first)) == (
        "reminder", "verify", 1, "Wed 03/06 10:45")   # 09:00 + 2 working hours - 15 min
    assert first.stage_at == NOW and first.plan is not None
    assert [(w.kind, w.step, local(w)) for w in schedule(first.plan, STAGED.calendar.build())] == [
        ("reminder", 1, "Wed 03/06 10:45"),
        ("escalation", 1, "Wed 03/06 11:00"),          # the IOC leader
        ("escalation", 2, "Wed 03/06 12:00"),          # the district
    ]
    target = reminder_target(first.plan)
    assert [r.unit for r in recipients(target, None, ORG)] == ["ioc"]


def test_automated_assignment_gets_the_unit_deadlines_only() -> None:
    inc = incident()                                   # moi-truong binh-thuong: automated
    outcome = receive(inc, staged_ctx(), SYSTEM)
    assert inc.state is State.ASSIGNED and outcome.schedule is not None
    assert {w.deadline for w in outcome.schedule} == {"acknowledge", "resolve"}
    assert all(w.plan is None and w.stage_at is None for w in outcome.schedule)


def decided(state: State, verb: Verb, actor: Any, **kw: Any) -> tuple[Outcome, Any]:
    inc = incident(state, priority="cao",
                   assigned="xa-a" if state is State.ASSIGNED else None)
    outcome = decide(inc, command(verb, **kw), actor, staged_ctx())
    assert not isinstance(outcome, Rejection), outcome
    return outcome, inc


@pytest.mark.parametrize(("state", "verb", "actor", "kw", "deadline", "due"), [
    (State.RECEIVED, Verb.VERIFY, OPERATOR, {}, "approve", "Wed 03/06 10:00"),
    (State.VERIFIED, Verb.APPROVE, LEADER, {}, "dispatch", "Wed 03/06 09:30"),
    (State.ASSIGNED, Verb.RETURN, UNIT_A, {"reason": "không thuộc thẩm quyền"}, "dispatch",
     "Wed 03/06 09:30"),
    (State.REJECTED, Verb.REOPEN, OPERATOR, {"reason": "xem lại"}, "verify", "Wed 03/06 11:00"),
])
def test_entering_a_state_that_waits_for_the_ioc_schedules_its_deadline(
        state: State, verb: Verb, actor: Any, kw: dict[str, Any], deadline: str,
        due: str) -> None:
    outcome, inc = decided(state, verb, actor, **kw)
    assert outcome.schedule is not None
    assert {w.deadline for w in outcome.schedule} == {deadline}
    [first] = outcome.schedule
    assert first.plan is not None and first.stage_at == NOW
    plan_due = datetime.fromisoformat(first.plan["due_at"]).astimezone(VN)
    assert (first.plan["deadline"], f"{plan_due:%a %d/%m %H:%M}") == (deadline, due)
    assert still_due(deadline, inc.state.value)


@pytest.mark.parametrize(("state", "verb", "actor", "kw"), [
    (State.RECEIVED, Verb.REJECT, OPERATOR, {"reason": "không đúng sự thật"}),
    (State.RECEIVED, Verb.MERGE, OPERATOR, {"primary_id": "inc-0"}),
])
def test_leaving_for_a_state_without_an_ioc_step_schedules_nothing(
        state: State, verb: Verb, actor: Any, kw: dict[str, Any]) -> None:
    inc = incident(state, priority="cao")
    primary = incident(State.ASSIGNED, id="inc-0", assigned="xa-a")
    outcome = decide(inc, command(verb, **kw), actor, staged_ctx(), primary)
    assert not isinstance(outcome, Rejection), outcome
    assert outcome.schedule is None
    assert not still_due("verify", inc.state.value)


def test_ioc_deadlines_are_due_only_in_the_state_that_waits_for_them() -> None:
    waits = {"verify": {"received"}, "approve": {"verified"},
             "dispatch": {"approved", "returned"}}
    for deadline, states in waits.items():
        for state in State:
            assert still_due(deadline, state.value) is (state.value in states), (deadline, state)


def test_without_ioc_deadlines_configured_nothing_is_scheduled_before_assignment() -> None:
    outcome = receive(incident(priority="cao"), ctx(), SYSTEM)
    assert outcome.schedule is None
