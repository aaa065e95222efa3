"""Data disputes (Đ4.5): who gets one is read from the record's provenance, never the command."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson
from routing.domain.disputes import (
    DISPUTE_CATEGORY,
    DisputeCommand,
    Provenance,
    ReadRecord,
    admit,
    open_dispute,
    parse_dispute,
    provenance,
)
from routing.domain.model import Dispute, dispute_incident_id
from routing.domain.policy import RoutingPolicy, validate_policy
from routing.domain.reasons import Reason, Rejection
from routing.domain.states import State
from routing.publishing import Effects, RoutingTopics, unauthenticated_answer
from routing.settings import RoutingSettings
from routing_examples import OPERATOR, ORG, POLICY_RAW, SOURCE, SYSTEM, UNIT_B, ctx

TOPIC = "ioc.data.field-reports.v1"
EVENT = uuid.UUID("7b0f3f5e-8d5e-4c1e-9a31-2f6a8f1d9c11")
DISPUTE_POLICY = RoutingPolicy.model_validate({
    **POLICY_RAW,
    "rules": [{"id": "disputes", "when": {"category": [DISPUTE_CATEGORY]}, "unit": "@owner"},
              *POLICY_RAW["rules"]]})
ORG_D = dataclasses.replace(ORG, categories=ORG.categories | {DISPUTE_CATEGORY})


def payload(**kw: Any) -> dict[str, Any]:
    return {"command_id": str(uuid.uuid4()), "dataset": "field-reports", "event_id": str(EVENT),
            "topic": TOPIC, "partition": 2, "offset": 41, "reason": "Sai tọa độ", **kw}


def command(**kw: Any) -> DisputeCommand:
    parsed = parse_dispute(payload(**kw))
    assert isinstance(parsed, DisputeCommand)
    return parsed


def canonical(owner: str = "xa-a", *, event_id: uuid.UUID = EVENT,
              dataset: str = "field-reports", producer: str | None = "ingest") -> ReadRecord:
    doc = {"event_id": str(event_id), "type": "ingest.record.accepted", "source_unit": owner,
           "subject": f"{owner}/PA-9",
           "payload": {"dataset": dataset, "schema_version": 2,
                       "record": {"record_id": "PA-9", "commune": "xa-b"}}}
    return ReadRecord(producer, doc)


def test_a_dispute_names_a_record_and_a_reason_but_never_its_owner_or_sender() -> None:
    cid = uuid.uuid4()
    parsed = parse_dispute(payload(command_id=str(cid), reason="  Sai to\u0323a độ ",
                                   owner_unit="police", unit="police", principal="ioc-leader"))
    assert parsed == DisputeCommand(cid, "field-reports", EVENT, TOPIC, 2, 41, "Sai tọa độ")
    assert not any(f.name in ("owner_unit", "unit", "principal")
                   for f in dataclasses.fields(DisputeCommand))


def test_a_dispute_without_a_reason_or_a_position_is_refused() -> None:
    no_reason = parse_dispute(payload(reason="   "))
    assert isinstance(no_reason, Rejection) and no_reason.reason is Reason.REASON_REQUIRED
    for bad in ({"partition": -1}, {"offset": "x"}, {"event_id": "nope"}, {"reason": "a" * 2001},
                {"topic": ""}):
        refused = parse_dispute(payload(**bad))
        assert isinstance(refused, Rejection) and refused.reason is Reason.MALFORMED, bad
    missing = payload()
    del missing["offset"]
    refused = parse_dispute(missing)
    assert isinstance(refused, Rejection) and "offset" in refused.message


def test_only_a_unit_that_may_receive_the_dataset_or_an_operator_may_dispute_it() -> None:
    cmd = command()
    unknown = admit(cmd, UNIT_B, dataset_known=False, may_receive=True, canonical_topic=TOPIC)
    assert isinstance(unknown, Rejection) and unknown.reason is Reason.UNKNOWN_DATASET
    assert "field-reports" in unknown.message
    denied = admit(cmd, UNIT_B, dataset_known=True, may_receive=False, canonical_topic=TOPIC)
    assert isinstance(denied, Rejection) and denied.reason is Reason.DATASET_NOT_PERMITTED
    assert admit(cmd, UNIT_B, dataset_known=True, may_receive=True, canonical_topic=TOPIC) is None
    assert admit(cmd, OPERATOR, dataset_known=True, may_receive=False,
                 canonical_topic=TOPIC) is None
    elsewhere = admit(cmd, OPERATOR, dataset_known=True, may_receive=True,
                      canonical_topic="ns." + TOPIC)
    assert isinstance(elsewhere, Rejection) and elsewhere.reason is Reason.NOT_THE_DATASET_TOPIC


def test_the_owner_is_the_source_unit_of_the_record_read_at_the_position() -> None:
    cmd = command()
    assert provenance(cmd, canonical("xa-a"), "record_id", ORG.unit_ids) == Provenance(
        "xa-a", "PA-9", "xa-b")

    def refused(found: ReadRecord | None) -> Reason:
        out = provenance(cmd, found, "record_id", ORG.unit_ids)
        assert isinstance(out, Rejection)
        return out.reason

    assert refused(None) is Reason.RECORD_NOT_FOUND
    assert refused(canonical(producer=None)) is Reason.RECORD_NOT_FROM_INGEST
    assert refused(canonical(producer="xa-a-system")) is Reason.RECORD_NOT_FROM_INGEST
    assert refused(canonical(event_id=uuid.uuid4())) is Reason.EVENT_ID_MISMATCH
    assert refused(ReadRecord("ingest", None)) is Reason.EVENT_ID_MISMATCH
    assert refused(canonical(dataset="alerts")) is Reason.RECORD_UNUSABLE
    assert refused(canonical(owner="nobody")) is Reason.RECORD_UNUSABLE


def test_the_dispute_is_assigned_to_the_records_owner_and_raised_by_the_sender() -> None:
    cmd = command()
    c = ctx(policy=DISPUTE_POLICY)
    incident, outcome = open_dispute(cmd, UNIT_B, Provenance("xa-a", "PA-9", "xa-b"), c, SYSTEM)
    assert incident.id == dispute_incident_id(EVENT, UNIT_B.principal)
    assert (incident.category, incident.state, incident.assigned_unit) == (
        DISPUTE_CATEGORY, State.ASSIGNED, "xa-a")
    assert (incident.source_unit, incident.dataset, incident.record_id) == (
        "xa-b", "field-reports", "PA-9")
    assert incident.dispute == Dispute(str(EVENT), TOPIC, 2, 41, "xa-a", UNIT_B.principal)
    received, assigned = outcome.events
    assert received.actor == UNIT_B and received.reason == "Sai tọa độ"
    assert assigned.data["rule_id"] == "disputes" and "fallback_from" not in assigned.data
    assert incident.ack_due_at is not None and incident.resolve_due_at is not None
    assert [n.unit for n in outcome.notifications] == ["xa-a"]
    assert outcome.notifications[0].roles == ("data-officer", "head")


def test_one_incident_per_principal_and_disputed_event() -> None:
    assert dispute_incident_id(EVENT, "xa-b-system") == dispute_incident_id(EVENT, "xa-b-system")
    assert dispute_incident_id(EVENT, "xa-b-system") != dispute_incident_id(EVENT, "ioc-operator")
    assert dispute_incident_id(EVENT, "xa-b-system") != dispute_incident_id(uuid.uuid4(),
                                                                          "xa-b-system")


def test_a_dispute_about_data_of_a_unit_that_handles_no_incidents_goes_to_the_fallback() -> None:
    c = ctx(policy=DISPUTE_POLICY)
    incident, outcome = open_dispute(command(), SOURCE, Provenance("district", "PA-9", ""), c,
                                     SYSTEM)
    assert incident.assigned_unit == "ioc"      # default fallback: the IOC (its data officer)
    assert outcome.events[-1].data["fallback_from"] == "district"
    named = RoutingPolicy.model_validate({**DISPUTE_POLICY.model_dump(mode="json"),
                                          "disputes": {"fallback_unit": "env-dept"}})
    incident, _ = open_dispute(command(), SOURCE, Provenance("district", "PA-9", ""),
                               ctx(policy=named), SYSTEM)
    assert incident.assigned_unit == "env-dept"


def test_check_config_accepts_owner_targets_and_refuses_an_unknown_fallback() -> None:
    # The example policy's own findings (emergencies in working time) and nothing more.
    assert validate_policy(DISPUTE_POLICY, ORG_D) == validate_policy(
        RoutingPolicy.model_validate(POLICY_RAW), ORG_D)
    unknown_target = RoutingPolicy.model_validate({
        **POLICY_RAW, "rules": [{"id": "x", "when": {}, "unit": "@owners"}]})
    assert any("'@owners'" in p for p in validate_policy(unknown_target, ORG_D))
    bad = RoutingPolicy.model_validate({**POLICY_RAW, "disputes": {"fallback_unit": "nobody"}})
    assert any("disputes.fallback_unit" in p for p in validate_policy(bad, ORG_D))


def test_every_event_of_a_dispute_names_the_disputed_record_and_its_position() -> None:
    topics = RoutingTopics.from_settings(RoutingSettings(topic_namespace="ns"))
    effects = Effects(topics, "ioc", DISPUTE_POLICY.survey)
    incident, outcome = open_dispute(command(), UNIT_B, Provenance("xa-a", "PA-9", "xa-b"),
                                     ctx(policy=DISPUTE_POLICY), SYSTEM)
    effects.record(outcome, incident, seed="s", cause=None)
    events = [orjson.loads(env.body) for topic, env, _, _ in effects.messages
              if topic == topics.events]
    assert [e["type"] for e in events] == ["routing.incident.received", "routing.incident.assigned"]
    assert all(e["payload"]["dispute"] == {
        "event_id": str(EVENT), "topic": TOPIC, "partition": 2, "offset": 41,
        "owner_unit": "xa-a", "disputed_by": "xa-b-system"} for e in events)


def test_an_unauthenticated_answer_goes_to_the_operators_topic_keyed_by_origin() -> None:
    topics = RoutingTopics.from_settings(RoutingSettings(topic_namespace="ns"))
    assert topics.unauthenticated == "ns.ioc.routing.unauthenticated-commands.v1"
    effects = Effects(topics, "ioc", DISPUTE_POLICY.survey)
    unauthenticated_answer(effects, cause_id=uuid.uuid4(), origin_topic=topics.commands,
                           origin_partition=4, origin_offset=17, reason_code="unauthenticated",
                           message="Lệnh không được xác thực", claimed_principal="xa-a-system",
                           command_id=None, verb="acknowledge", incident_id="inc-1")
    [(topic, env, _, _)] = effects.messages
    body = orjson.loads(env.body)
    assert topic == topics.unauthenticated and env.key == f"{topics.commands}:4".encode()
    assert "unit" not in body["payload"] and "principal" not in body["payload"]
    assert body["payload"]["claimed_principal"] == "xa-a-system"
    assert body["payload"]["origin"] == {"topic": topics.commands, "partition": 4, "offset": 17}
