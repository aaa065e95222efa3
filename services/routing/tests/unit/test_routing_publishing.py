"""Outgoing envelopes: the fast serializer keeps the bus contract."""

from __future__ import annotations

from ioc_shared.contracts.topics import ROUTING_EVENTS
from routing.domain.model import IncidentEvent, Outcome
from routing.domain.states import State
from routing.publishing import Effects, RoutingTopics
from routing.settings import RoutingSettings
from routing_examples import NOW, POLICY, SYSTEM, incident


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
