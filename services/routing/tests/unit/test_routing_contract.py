"""Every payload routing builds matches its model in `routing.contract` (the AsyncAPI
document's schemas), and every model is one the code builds: the documents cannot drift.

The payloads come from the real builders: the domain's decisions through `Effects`,
the timers' firing, the answers to commands.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from routing.contract import (
    ESCALATION_EVENT,
    MESSAGES,
    REMINDER_EVENT,
    Assigned,
    check_payload,
)
from routing.domain.disputes import DisputeCommand, Provenance, open_dispute
from routing.domain.geo import DuplicateCandidate
from routing.domain.intake import flag_duplicates, receive, record_updated
from routing.domain.lifecycle import decide
from routing.domain.model import Incident, Outcome
from routing.domain.states import State, Verb
from routing.publishing import Effects, RoutingTopics, command_result, unauthenticated_answer
from routing.repository import DueRow
from routing.settings import RoutingSettings
from routing.timers import ESCALATION_EVENT as TIMERS_ESCALATION
from routing.timers import REMINDER_EVENT as TIMERS_REMINDER
from routing.timers import TimerWorker
from routing_examples import NOW, OPERATOR, POLICY, SYSTEM, UNIT_A, command, ctx, incident

TOPICS = RoutingTopics.from_settings(RoutingSettings())


def _effects() -> Effects:
    return Effects(TOPICS, "ioc", POLICY.survey, at=NOW)


def _sent(effects: Effects) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, type, payload) of every envelope, read back from the bytes produced."""
    out = []
    for topic, env, _, _ in effects.messages:
        doc = orjson.loads(env.to_bytes())
        out.append((topic, doc["type"], doc["payload"]))
    return out


def _apply(effects: Effects, inc: Incident, verb: Verb, actor: Any, n: int,
           **kw: Any) -> None:
    primary = kw.pop("primary", None)
    outcome = decide(inc, command(verb, **kw), actor, ctx(NOW + timedelta(minutes=n)), primary)
    assert isinstance(outcome, Outcome), outcome
    effects.record(outcome, inc, seed=("walk", inc.id, n), cause=None)


def _lifecycle() -> Effects:
    """One incident through every verb, a merged duplicate, record updates, a dispute,
    timers firing, and the answers to commands."""
    effects = _effects()
    inc = incident(State.RECEIVED)   # automation: verified, approved, assigned to xa-a
    effects.record(receive(inc, ctx(), SYSTEM), inc, seed="receive", cause=None)
    assert inc.state is State.ASSIGNED and inc.assigned_unit == "xa-a"
    _apply(effects, inc, Verb.ACKNOWLEDGE, UNIT_A, 1)
    _apply(effects, inc, Verb.UPDATE_STATUS, UNIT_A, 2, note="Đang xử lý")
    _apply(effects, inc, Verb.RETURN, UNIT_A, 3, reason="Không thuộc thẩm quyền")
    _apply(effects, inc, Verb.ASSIGN, OPERATOR, 4, unit="xa-a")
    _apply(effects, inc, Verb.TRANSFER, OPERATOR, 5, unit="xa-b", reason="Địa bàn xã B")
    inc.assigned_unit = inc.last_unit = "xa-a"   # back to A for the rest of the walk
    _apply(effects, inc, Verb.ACKNOWLEDGE, UNIT_A, 7)
    _apply(effects, inc, Verb.RESOLVE, UNIT_A, 8, note="Đã thu gom")
    _apply(effects, inc, Verb.CLOSE, OPERATOR, 9)
    _apply(effects, inc, Verb.ANSWER_SURVEY, OPERATOR, 10, score=5, comment="Tốt")
    _apply(effects, inc, Verb.REOPEN, OPERATOR, 11, reason="Rác lại xuất hiện")

    other = incident(State.RECEIVED, id="inc-2", category="an-ninh")
    effects.record(receive(other, ctx(), SYSTEM), other, seed="receive-2", cause=None)
    _apply(effects, other, Verb.VERIFY, OPERATOR, 12)
    _apply(effects, other, Verb.REJECT, OPERATOR, 13, reason="Không đúng sự thật")
    _apply(effects, other, Verb.REOPEN, OPERATOR, 14, reason="Có bằng chứng mới")

    dup = incident(State.RECEIVED, id="inc-3", category="an-ninh")
    effects.record(receive(dup, ctx(), SYSTEM), dup, seed="receive-3", cause=None)
    assert inc.location is not None
    candidates = [DuplicateCandidate(inc.id, inc.category, inc.location,
                                     NOW - timedelta(hours=1))]
    effects.record(flag_duplicates(replace_category(dup, inc.category), ctx(), SYSTEM,
                                   candidates), dup, seed="dup", cause=None)
    _apply(effects, dup, Verb.MERGE, OPERATOR, 15, primary_id=inc.id, reason="Trùng",
           primary=inc)
    newer = incident(State.RECEIVED, id="inc-3", category="an-ninh", title="Rác thải nhiều")
    effects.record(record_updated(dup, newer, ctx(), SYSTEM, inc), dup, seed="upd", cause=None)

    cmd = DisputeCommand(uuid.uuid4(), "field-reports", uuid.uuid4(), "ioc.data.x.v1", 0, 7,
                         "Số liệu sai")
    disputed, outcome = open_dispute(cmd, UNIT_A, Provenance("env-dept", "r-9", "xa-a"), ctx(),
                                     SYSTEM)
    effects.record(outcome, disputed, seed="dispute", cause=None)

    _fire_timers(effects, inc)
    command_result(effects, unit="xa-a", cause_id=uuid.uuid4(), cause=None, status="accepted",
                   reason_code=None, message="Đã tiếp nhận", command_id=uuid.uuid4(),
                   verb="acknowledge", incident_id=inc.id, principal="xa-a-system",
                   state="acknowledged")
    command_result(effects, unit="xa-a", cause_id=uuid.uuid4(), cause=None, status="rejected",
                   reason_code="malformed", message="Sai", command_id=None, verb=None,
                   incident_id=None, principal="xa-a-system", duplicate=True)
    unauthenticated_answer(effects, cause_id=uuid.uuid4(), origin_topic=TOPICS.commands,
                           origin_partition=1, origin_offset=9, reason_code="unauthenticated",
                           message="Không xác thực", claimed_principal="who",
                           command_id=None, verb="verify", incident_id="inc-1")
    return effects


def replace_category(inc: Incident, category: str) -> Incident:
    inc.category = category
    return inc


def _fire_timers(effects: Effects, inc: Incident) -> None:
    """A reminder and each escalation step of the incident's frozen plan, as the timer
    worker fires them (its `_fire`, without the database)."""
    inc.state, inc.assigned_unit = State.ASSIGNED, "xa-a"
    again = decide(inc, command(Verb.ACKNOWLEDGE), UNIT_A, ctx())
    assert isinstance(again, Outcome)
    inc.state = State.ASSIGNED
    org = ctx().org
    worker = SimpleNamespace(core=SimpleNamespace(system=SYSTEM, org=org, clock=lambda: NOW))
    assert inc.policy is not None
    rows = [DueRow(1, inc.id, inc.assignment_no, "reminder", "acknowledge", 1, NOW)]
    rows += [DueRow(10 + step, inc.id, inc.assignment_no, "escalation", "acknowledge", step, NOW)
             for step in range(1, len(inc.policy["chain"]) + 1)]
    for row in rows:
        TimerWorker._fire(worker, row, inc, inc.policy, effects)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sent() -> list[tuple[str, str, dict[str, Any]]]:
    return _sent(_lifecycle())


def test_every_payload_routing_builds_matches_its_model(sent: list[tuple[str, str, Any]]) -> None:
    problems = [p for _, t, payload in sent if (p := check_payload(t, payload)) is not None]
    assert not problems, "\n".join(problems)


def test_each_payload_is_on_the_topic_its_model_is_documented_for(
        sent: list[tuple[str, str, Any]]) -> None:
    for topic, event_type, _ in sent:
        assert event_type in MESSAGES[topic], (topic, event_type)


def test_every_documented_routing_message_is_one_the_code_builds(
        sent: list[tuple[str, str, Any]]) -> None:
    """A model nobody builds would document a message that never comes (commands are
    inputs: their parser is the model)."""
    built = {t for _, t, _ in sent}
    documented = {t for topic, models in MESSAGES.items() if topic != TOPICS.commands
                  for t in models}
    assert documented - built == set()


def test_a_payload_that_drifted_is_caught() -> None:
    inc = incident(State.APPROVED)
    outcome = decide(inc, command(Verb.ASSIGN, unit="xa-a"), OPERATOR, ctx())
    assert isinstance(outcome, Outcome)
    payload = orjson.loads(orjson.dumps(outcome.events[0].data | {
        "incident_id": inc.id, "from_state": "approved", "to_state": "assigned",
        "actor": {"principal": "p", "unit": "ioc"}, "reason": None, "at": NOW}))
    assert Assigned.model_validate(payload).unit == "xa-a"
    assert check_payload("routing.incident.assigned", {**payload, "new_field": 1}) is not None
    del payload["assignment_no"]
    assert "assignment_no" in (check_payload("routing.incident.assigned", payload) or "")
    assert check_payload("routing.incident.teleported", {}) is not None


def test_the_contract_names_the_types_the_code_uses() -> None:
    assert (REMINDER_EVENT, ESCALATION_EVENT) == (TIMERS_REMINDER, TIMERS_ESCALATION)
