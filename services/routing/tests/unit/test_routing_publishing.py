"""Outgoing envelopes: the fast serializer keeps the bus contract."""

from __future__ import annotations

import uuid

from ioc_shared.contracts import Envelope
from ioc_shared.contracts.topics import ROUTING_EVENTS
from routing.domain.model import IncidentEvent, Outcome
from routing.domain.states import State
from routing.publishing import Effects, RoutingTopics, serialize_envelope
from routing.settings import RoutingSettings
from routing_examples import NOW, POLICY, SYSTEM, incident


def test_serialized_envelope_parses_as_the_contract_envelope() -> None:
    cause = Envelope(type="ingest.record.accepted", source_unit="xa-a", subject="R-1")
    event_id = uuid.uuid4()
    out = serialize_envelope(event_id=event_id, type="routing.incident.received",
                             source_unit="ioc", subject="inc-1",
                             payload={"at": NOW.isoformat(), "steps": (1, 2)}, cause=cause)
    env = Envelope.from_bytes(out.to_bytes())
    assert (env.event_id, env.type, env.subject, env.source_unit) == (
        event_id, "routing.incident.received", "inc-1", "ioc")
    assert env.causation_id == cause.event_id and env.correlation_id == cause.event_id
    assert env.payload == {"at": NOW.isoformat(), "steps": [1, 2]}
    assert out.key == b"inc-1"


def test_effects_of_an_outcome_go_to_the_right_topics_with_headers() -> None:
    settings = RoutingSettings(topic_namespace="ns")
    topics = RoutingTopics.from_settings(settings)
    assert topics.events == f"ns.{ROUTING_EVENTS.name}"
    effects = Effects(topics, "ioc", POLICY.survey)
    inc = incident(State.RECEIVED)
    outcome = Outcome(events=[IncidentEvent("routing.incident.received", inc.id, None,
                                            State.RECEIVED, SYSTEM, NOW)])
    effects.record(outcome, inc, seed="seed", cause=None)
    assert [(t, h["ioc-event-type"]) for t, _, _, h in effects.messages] == [
        (topics.events, "routing.incident.received"),
        (topics.reporter, "routing.reporter.status-changed")]
    assert len(effects.audit) == 1
