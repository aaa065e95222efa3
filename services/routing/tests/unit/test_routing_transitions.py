"""Every (command, state) pair: legal ones move as the lifecycle says, the rest are refused."""

from __future__ import annotations

import copy
import unicodedata

import pytest
from routing.domain.lifecycle import decide
from routing.domain.model import Incident, Outcome
from routing.domain.reasons import Reason, Rejection
from routing.domain.states import WITH_UNIT, Actor, State, Verb
from routing_examples import LEADER, OPERATOR, SOURCE, UNIT_A, UNIT_B, command, ctx, incident

S, V = State, Verb
WITH_A_UNIT = {S.ASSIGNED, S.ACKNOWLEDGED, S.IN_PROGRESS, S.RESOLVED, S.CLOSED}

# Written out by hand (not derived from the transition table) so that a change
# of the table shows up here as a failing test.
EXPECTED: dict[Verb, dict[State, State]] = {
    V.VERIFY: {S.RECEIVED: S.VERIFIED},
    V.REJECT: {S.RECEIVED: S.REJECTED, S.VERIFIED: S.REJECTED},
    V.APPROVE: {S.VERIFIED: S.APPROVED},
    V.ASSIGN: {S.APPROVED: S.ASSIGNED, S.RETURNED: S.ASSIGNED},
    V.ACKNOWLEDGE: {S.ASSIGNED: S.ACKNOWLEDGED},
    V.UPDATE_STATUS: {S.ACKNOWLEDGED: S.IN_PROGRESS, S.IN_PROGRESS: S.IN_PROGRESS},
    V.RETURN: {S.ASSIGNED: S.RETURNED, S.ACKNOWLEDGED: S.RETURNED, S.IN_PROGRESS: S.RETURNED},
    V.TRANSFER: {S.ASSIGNED: S.ASSIGNED, S.ACKNOWLEDGED: S.ASSIGNED, S.IN_PROGRESS: S.ASSIGNED},
    V.RESOLVE: {S.ACKNOWLEDGED: S.RESOLVED, S.IN_PROGRESS: S.RESOLVED},
    V.CLOSE: {S.RESOLVED: S.CLOSED},
    V.REOPEN: {S.RESOLVED: S.ASSIGNED, S.CLOSED: S.ASSIGNED, S.REJECTED: S.RECEIVED},
    V.MERGE: {s: S.MERGED for s in (S.RECEIVED, S.VERIFIED, S.APPROVED, S.ASSIGNED,
                                    S.ACKNOWLEDGED, S.IN_PROGRESS, S.RETURNED)},
    V.ANSWER_SURVEY: {S.CLOSED: S.CLOSED},
}

EVENT = {
    V.VERIFY: "verified", V.REJECT: "rejected", V.APPROVE: "approved", V.ASSIGN: "assigned",
    V.ACKNOWLEDGE: "acknowledged", V.UPDATE_STATUS: "progress-updated", V.RETURN: "returned",
    V.TRANSFER: "transferred", V.RESOLVE: "resolved", V.CLOSE: "closed", V.REOPEN: "reopened",
    V.MERGE: "merged", V.ANSWER_SURVEY: "survey-answered",
}

ACTOR: dict[Verb, Actor] = {
    V.VERIFY: OPERATOR, V.REJECT: OPERATOR, V.APPROVE: LEADER, V.ASSIGN: OPERATOR,
    V.ACKNOWLEDGE: UNIT_A, V.UPDATE_STATUS: UNIT_A, V.RETURN: UNIT_A, V.TRANSFER: OPERATOR,
    V.RESOLVE: UNIT_A, V.CLOSE: OPERATOR, V.REOPEN: OPERATOR, V.MERGE: OPERATOR,
    V.ANSWER_SURVEY: SOURCE,
}

# What each verb needs to be complete (so only the state decides).
ARGS: dict[Verb, dict[str, object]] = {
    V.REJECT: {"reason": "Thông tin sai sự thật"}, V.RETURN: {"reason": "Không thuộc thẩm quyền"},
    V.TRANSFER: {"reason": "Thuộc lĩnh vực khác", "unit": "xa-b"},
    V.REOPEN: {"reason": "Người dân phản ánh chưa xử lý xong"},
    V.RESOLVE: {"note": "Đã thu gom rác"}, V.UPDATE_STATUS: {"note": "Đang xử lý"},
    V.MERGE: {"primary_id": "inc-2"}, V.ANSWER_SURVEY: {"score": 4},
}


def in_state(state: State) -> Incident:
    unit = "xa-a" if state in WITH_A_UNIT else None
    inc = incident(state, assigned=unit)
    if state in (S.MERGED,):
        inc.primary_id = "inc-0"
    if state in (S.RETURNED, S.REJECTED):
        inc.last_unit = "xa-a" if state is S.RETURNED else None
    return inc


CASES = [(verb, state) for verb in Verb for state in State]


@pytest.mark.parametrize(("verb", "state"), CASES, ids=[f"{v.value}-from-{s.value}" for v, s in CASES])
def test_transition(verb: Verb, state: State) -> None:
    inc = in_state(state)
    before = copy.deepcopy(inc)
    primary = incident(S.ASSIGNED, id="inc-2", assigned="xa-b")
    result = decide(inc, command(verb, **ARGS.get(verb, {})), ACTOR[verb], ctx(), primary)  # type: ignore[arg-type]
    target = EXPECTED[verb].get(state)
    if target is not None:
        assert isinstance(result, Outcome), result
        assert inc.state is target
        assert result.events[0].type == f"routing.incident.{EVENT[verb]}"
        assert result.events[0].from_state is state and result.events[0].to_state is target
        assert result.events[0].actor == ACTOR[verb]
        # Đ4.3: exactly one responsible unit while a unit holds it, none otherwise.
        if inc.state in WITH_UNIT:
            assert inc.assigned_unit is not None
        if inc.state in (S.RETURNED, S.MERGED):
            assert inc.assigned_unit is None
        return
    assert isinstance(result, Rejection)
    if state is S.MERGED:
        expected = Reason.MERGED
    elif verb in (V.ACKNOWLEDGE, V.UPDATE_STATUS, V.RETURN, V.RESOLVE) and inc.assigned_unit is None:
        expected = Reason.NOT_ASSIGNED_TO_UNIT
    else:
        expected = Reason.ILLEGAL_TRANSITION
    assert result.reason is expected
    assert inc == before, "a refused command must not change the incident"
    assert result.message and unicodedata.is_normalized("NFC", result.message)


def test_illegal_transition_message_names_the_action_and_the_state() -> None:
    result = decide(in_state(S.RECEIVED), command(V.CLOSE), OPERATOR, ctx())
    assert isinstance(result, Rejection)
    assert result.message == "Không thể đóng khi sự cố đã tiếp nhận."


def test_resolve_before_acknowledge_says_to_acknowledge_first() -> None:
    result = decide(in_state(S.ASSIGNED), command(V.RESOLVE, note="Đã xử lý"), UNIT_A, ctx())
    assert isinstance(result, Rejection) and result.reason is Reason.ILLEGAL_TRANSITION
    assert result.message == ("Không thể báo cáo kết quả xử lý khi sự cố đã được giao cho đơn vị "
                              "xử lý. Cần xác nhận tiếp nhận sự cố trước.")
    assert "chuyển" not in result.message       # nothing about a transfer
    early = decide(in_state(S.RECEIVED), command(V.ASSIGN), OPERATOR, ctx())
    assert isinstance(early, Rejection)
    assert early.message.endswith("Cần xác minh, rồi phê duyệt sự cố trước.")


def test_assigning_to_a_unit_that_does_not_handle_incidents_names_it() -> None:
    result = decide(in_state(S.APPROVED), command(V.ASSIGN, unit="ioc"), OPERATOR, ctx())
    assert isinstance(result, Rejection)
    assert result.reason is Reason.UNIT_DOES_NOT_HANDLE_INCIDENTS
    assert result.message.startswith("Đơn vị 'Trung tâm IOC huyện' không tiếp nhận xử lý sự cố")


@pytest.mark.parametrize(("verb", "state", "actor", "reason"), [
    (V.APPROVE, S.VERIFIED, OPERATOR, Reason.ROLE_REQUIRED),        # Đ13.2: leader only
    (V.APPROVE, S.VERIFIED, UNIT_A, Reason.ROLE_REQUIRED),
    (V.VERIFY, S.RECEIVED, UNIT_A, Reason.ROLE_REQUIRED),
    (V.ASSIGN, S.APPROVED, UNIT_A, Reason.ROLE_REQUIRED),
    (V.MERGE, S.RECEIVED, UNIT_A, Reason.ROLE_REQUIRED),
    (V.CLOSE, S.RESOLVED, UNIT_A, Reason.ROLE_REQUIRED),
    (V.REOPEN, S.CLOSED, UNIT_A, Reason.ROLE_REQUIRED),
    (V.ACKNOWLEDGE, S.ASSIGNED, UNIT_B, Reason.NOT_ASSIGNED_TO_UNIT),
    (V.ACKNOWLEDGE, S.ASSIGNED, OPERATOR, Reason.NOT_ASSIGNED_TO_UNIT),
    (V.RESOLVE, S.IN_PROGRESS, UNIT_B, Reason.NOT_ASSIGNED_TO_UNIT),
    (V.TRANSFER, S.ASSIGNED, UNIT_B, Reason.NOT_ASSIGNED_TO_UNIT),
    (V.ANSWER_SURVEY, S.CLOSED, UNIT_B, Reason.ROLE_REQUIRED),
])
def test_authorisation(verb: Verb, state: State, actor: Actor, reason: Reason) -> None:
    inc = in_state(state)
    result = decide(inc, command(verb, **ARGS.get(verb, {})), actor, ctx())  # type: ignore[arg-type]
    assert isinstance(result, Rejection) and result.reason is reason


def test_leader_may_also_act_as_operator_and_unit_may_hand_over() -> None:
    assert isinstance(decide(in_state(S.RECEIVED), command(V.VERIFY), LEADER, ctx()), Outcome)
    inc = in_state(S.ACKNOWLEDGED)
    out = decide(inc, command(V.TRANSFER, unit="xa-b", reason="Địa bàn xã B"), UNIT_A, ctx())
    assert isinstance(out, Outcome) and inc.assigned_unit == "xa-b"


@pytest.mark.parametrize(("verb", "state", "args", "reason"), [
    (V.REJECT, S.RECEIVED, {}, Reason.REASON_REQUIRED),
    (V.RETURN, S.ASSIGNED, {}, Reason.REASON_REQUIRED),
    (V.TRANSFER, S.ASSIGNED, {"unit": "xa-b"}, Reason.REASON_REQUIRED),
    (V.REOPEN, S.CLOSED, {}, Reason.REASON_REQUIRED),
    (V.RESOLVE, S.IN_PROGRESS, {}, Reason.RESOLUTION_NOTE_REQUIRED),
    (V.UPDATE_STATUS, S.IN_PROGRESS, {}, Reason.NOTE_REQUIRED),
    (V.TRANSFER, S.ASSIGNED, {"unit": "xa-a", "reason": "x"}, Reason.SAME_UNIT),
    (V.TRANSFER, S.ASSIGNED, {"unit": "nowhere", "reason": "x"}, Reason.UNKNOWN_UNIT),
    (V.ASSIGN, S.APPROVED, {"unit": "nowhere"}, Reason.UNKNOWN_UNIT),
    (V.ASSIGN, S.APPROVED, {"unit": "ioc"}, Reason.UNIT_DOES_NOT_HANDLE_INCIDENTS),
    (V.ASSIGN, S.RETURNED, {"unit": "district"}, Reason.UNIT_DOES_NOT_HANDLE_INCIDENTS),
    (V.TRANSFER, S.IN_PROGRESS, {"unit": "ioc", "reason": "x"},
     Reason.UNIT_DOES_NOT_HANDLE_INCIDENTS),
    (V.MERGE, S.RECEIVED, {"primary_id": "inc-1"}, Reason.MERGE_INTO_SELF),
    (V.MERGE, S.RECEIVED, {"primary_id": "inc-9"}, Reason.UNKNOWN_PRIMARY),
    (V.ANSWER_SURVEY, S.CLOSED, {"score": 9}, Reason.INVALID_SCORE),
    (V.ANSWER_SURVEY, S.CLOSED, {}, Reason.INVALID_SCORE),
])
def test_content_checks(verb: Verb, state: State, args: dict[str, object], reason: Reason) -> None:
    inc = in_state(state)
    before = copy.deepcopy(inc)
    result = decide(inc, command(verb, **args), ACTOR[verb], ctx())  # type: ignore[arg-type]
    assert isinstance(result, Rejection) and result.reason is reason
    assert inc == before


def test_merge_into_closed_primary_is_refused_and_survey_only_once() -> None:
    closed = incident(S.CLOSED, id="inc-2", assigned="xa-b")
    result = decide(in_state(S.RECEIVED), command(V.MERGE, primary_id="inc-2"), OPERATOR, ctx(),
                    closed)
    assert isinstance(result, Rejection) and result.reason is Reason.PRIMARY_NOT_OPEN
    inc = in_state(S.CLOSED)
    assert isinstance(decide(inc, command(V.ANSWER_SURVEY, score=5), SOURCE, ctx()), Outcome)
    again = decide(inc, command(V.ANSWER_SURVEY, score=5), SOURCE, ctx())
    assert isinstance(again, Rejection) and again.reason is Reason.SURVEY_ALREADY_ANSWERED


def test_assignment_freezes_policy_and_schedules_deadlines() -> None:
    inc = in_state(S.APPROVED)
    out = decide(inc, command(V.ASSIGN), OPERATOR, ctx())
    assert isinstance(out, Outcome)
    assert inc.assigned_unit == "xa-a" and inc.assignment_no == 1
    assert inc.policy is not None and inc.policy["rule"]["id"] == "env-local"
    assert out.schedule and {w.deadline for w in out.schedule} == {"acknowledge", "resolve"}
    assert [(n.kind, n.unit) for n in out.notifications] == [("assigned", "xa-a")]


def test_return_gives_the_incident_back_to_the_ioc() -> None:
    inc = in_state(S.ACKNOWLEDGED)
    out = decide(inc, command(V.RETURN, reason="Không thuộc thẩm quyền"), UNIT_A, ctx())
    assert isinstance(out, Outcome)
    assert inc.assigned_unit is None and inc.last_unit == "xa-a"
    assert [(n.kind, n.unit) for n in out.notifications] == [("returned", "ioc")]
    reassigned = decide(inc, command(V.ASSIGN, unit="xa-b"), OPERATOR, ctx())
    assert isinstance(reassigned, Outcome) and inc.assigned_unit == "xa-b"
    assert inc.assignment_no == 2 and inc.policy is not None
    assert inc.policy["unit_chosen_by"] == "operator"


def test_transfer_restarts_the_deadlines_for_the_new_unit() -> None:
    inc = in_state(S.IN_PROGRESS)
    out = decide(inc, command(V.TRANSFER, unit="xa-b", reason="Địa bàn xã B"), OPERATOR, ctx())
    assert isinstance(out, Outcome) and out.schedule
    assert out.events[0].data["from_unit"] == "xa-a" and inc.assignment_no == 2


def test_reopen_returns_to_the_last_unit_or_to_verification() -> None:
    closed = in_state(S.CLOSED)
    assert isinstance(decide(closed, command(V.REOPEN, reason="Chưa xử lý"), OPERATOR, ctx()), Outcome)
    assert closed.state is S.ASSIGNED and closed.assigned_unit == "xa-a"
    rejected = in_state(S.REJECTED)
    assert isinstance(decide(rejected, command(V.REOPEN, reason="Xác minh lại"), OPERATOR, ctx()),
                      Outcome)
    assert rejected.state is S.RECEIVED and rejected.assigned_unit is None


def test_merge_notes_the_duplicate_on_the_primary() -> None:
    inc = in_state(S.ASSIGNED)
    primary = incident(S.IN_PROGRESS, id="inc-2", assigned="xa-b")
    out = decide(inc, command(V.MERGE, primary_id="inc-2"), OPERATOR, ctx(), primary)
    assert isinstance(out, Outcome)
    assert [(e.type, e.incident_id) for e in out.events] == [
        ("routing.incident.merged", "inc-1"), ("routing.incident.duplicate-merged", "inc-2")]
    assert inc.primary_id == "inc-2" and inc.assigned_unit is None
    # Afterwards the duplicate refuses work: updates belong on the primary.
    refused = decide(inc, command(V.ACKNOWLEDGE), UNIT_A, ctx())
    assert isinstance(refused, Rejection) and refused.reason is Reason.MERGED
    assert "inc-2" in refused.message


def test_close_requests_the_satisfaction_survey() -> None:
    out = decide(in_state(S.RESOLVED), command(V.CLOSE), OPERATOR, ctx())
    assert isinstance(out, Outcome) and out.survey_requested


def test_the_seed_registry_says_which_units_handle_incidents() -> None:
    from ioc_shared.platform.settings import REPO_ROOT
    from ioc_shared.registry import load_registry
    from routing.config import organisation_from_registry

    registry = load_registry(REPO_ROOT / "config" / "registry.yaml",
                             REPO_ROOT / "config" / "credentials.dev.yaml")
    org = organisation_from_registry(registry)
    for unit in ("ioc-loc-ninh", "ioc-binh-phuoc", "so-tt-tt", "ubnd-huyen"):
        assert not org.handles_incidents(unit), unit
    for unit in ("xa-loc-an", "tt-loc-ninh", "phong-tn-mt", "vp-hdnd-ubnd", "cong-an-huyen"):
        assert org.handles_incidents(unit), unit
    assert not org.handles_incidents("nowhere")


def test_a_rule_may_not_send_incidents_to_a_unit_that_does_not_handle_them() -> None:
    from routing.config import RoutingConfigError, parse_policy
    from routing_examples import ORG, POLICY_RAW

    raw = {**POLICY_RAW, "default": {"unit": "ioc"}}
    with pytest.raises(RoutingConfigError) as caught:
        parse_policy(raw, "routing.yaml", ORG)
    assert ("routing.yaml: default: unit 'ioc' does not handle incidents (registry: handles_incidents)"
            in caught.value.problems)
