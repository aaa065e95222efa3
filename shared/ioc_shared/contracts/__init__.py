"""The bus contract: the envelope every topic carries and the topic catalogue."""

from ioc_shared.contracts.envelope import (
    ENVELOPE_SCHEMA_VERSION,
    Envelope,
    deterministic_event_id,
    new_event_id,
)
from ioc_shared.contracts.topics import TOPICS, TopicSpec, canonical_topic, special_topic

__all__ = [
    "ENVELOPE_SCHEMA_VERSION",
    "TOPICS",
    "Envelope",
    "TopicSpec",
    "canonical_topic",
    "deterministic_event_id",
    "new_event_id",
    "special_topic",
]
