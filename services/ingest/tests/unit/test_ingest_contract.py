"""Every message ingest builds matches the AsyncAPI document (docs/contracts) and, for the
payloads built as dicts, its model in `ingest.contract`: the documents cannot drift.

The messages come from the real builders (`Deciding` over a batch of good and bad
submissions, freshness transitions, quality counters), not from hand-made payloads.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import jsonschema
import orjson
import pytest
from ingest.contract import MESSAGES, QUALITY_TYPE, check_payload
from ingest.domain import Ingestor, Transition, WatchState
from ingest.messages import Deciding
from ingest.periodic import QUALITY_TYPE as PERIODIC_QUALITY_TYPE
from ingest.periodic import QualityPublisher
from ioc_shared.contracts.asyncapi import asyncapi_document
from ioc_shared.contracts.topics import (
    INGEST_QUARANTINE,
    INGEST_REJECTED,
    INGEST_UNAUTHENTICATED,
    canonical_topic,
    restricted_topic,
    special_topic,
    unit_rejections_topic,
)
from ioc_shared.registry import Cadence, Registry

from .conftest import NOW, report, signed


@pytest.fixture(scope="module")
def document(registry: Registry) -> dict[str, Any]:
    return asyncapi_document(registry)


def schema_of(document: dict[str, Any], topic: str, event_type: str) -> dict[str, Any]:
    channel = next(c for c in document["channels"].values() if c["address"] == topic)
    ref = channel["messages"][event_type]["$ref"].rsplit("/", 1)[-1]
    found: dict[str, Any] = document["components"]["messages"][ref]["payload"]
    return found


def deciding(registry: Registry, ingestor: Ingestor) -> Deciding:
    grants = registry.special_grants()
    units = sorted({p.unit for p in registry.principals.values()})
    return Deciding(
        ingestor,
        canonical={d: canonical_topic(d).name for d in registry.datasets},
        restricted={d: restricted_topic(d).name for d in registry.datasets
                    if registry.personal_fields(d)},
        special={g.id: special_topic(g.unit, g.dataset, g.id).name for g in grants},
        rejected=INGEST_REJECTED.name, quarantine=INGEST_QUARANTINE.name,
        unauthenticated=INGEST_UNAUTHENTICATED.name,
        unit_feeds={u: unit_rejections_topic(u).name for u in units})


@pytest.fixture(scope="module")
def built(registry: Registry, ingestor: Ingestor) -> list[tuple[str, dict[str, Any]]]:
    """(topic, envelope) of everything one batch of mixed submissions produces."""
    inbounds = [
        signed(report(record_id="PA-1", reporter_name="Nguyễn Văn A",
                      reporter_phone="0912345678", location={"lat": 11.83, "lon": 106.6}),
               origin="t:0:1"),
        signed(report(record_id="PA-2"), origin="t:0:2"),
        signed(report(record_id="PA-3", priority="không-có"), origin="t:0:3"),   # rejected
        signed({"dataset": "phan-anh-hien-truong"}, origin="t:0:4"),            # malformed
        signed(report(record_id="PA-5"), secret="wrong", origin="t:0:5"),        # unverified
    ]
    decided = deciding(registry, ingestor).batch(inbounds, NOW, [[] for _ in inbounds])
    return [(m.topic, orjson.loads(m.value)) for _, messages in decided for m in messages
            if m.topic != INGEST_QUARANTINE.name]


def test_the_batch_built_every_kind_of_message(built: list[tuple[str, Any]]) -> None:
    kinds = {(topic.split(".")[1], env["type"]) for topic, env in built}
    assert kinds >= {("data", "ingest.record.accepted"),
                     ("restricted", "phan-anh-hien-truong.personal"),
                     ("share", "ingest.record.shared"), ("ingest", "ingest.record.rejected")}
    assert {topic for topic, _ in built} >= {INGEST_REJECTED.name, INGEST_UNAUTHENTICATED.name,
                                             unit_rejections_topic("xa-loc-an").name}


def test_every_message_ingest_builds_validates_against_the_document(
        built: list[tuple[str, Any]], document: dict[str, Any]) -> None:
    for topic, env in built:
        jsonschema.validate(env, schema_of(document, topic, env["type"]))


def test_the_canonical_record_in_the_document_is_the_one_ingest_publishes(
        built: list[tuple[str, Any]], document: dict[str, Any]) -> None:
    """Personal fields leave the canonical record for the restricted topic (a pseudonym
    stays); the document says so, and a canonical record with them would not validate."""
    topic = canonical_topic("phan-anh-hien-truong").name
    env = next(e for t, e in built if t == topic and e["payload"]["record_id"] == "PA-1")
    record = env["payload"]["record"]
    assert "reporter_phone" not in record and record["reporter_ref"].startswith("r-")
    schema = schema_of(document, topic, "ingest.record.accepted")
    assert "reporter_phone" not in schema["properties"]["payload"]["properties"]["record"][
        "properties"]
    personal = schema_of(document, restricted_topic("phan-anh-hien-truong").name,
                         "phan-anh-hien-truong.personal")
    fields = personal["properties"]["payload"]["properties"]["fields"]
    assert fields["properties"]["reporter_phone"]["x-personal-data"] is True


def test_payloads_built_as_dicts_match_their_models(built: list[tuple[str, Any]]) -> None:
    problems = [p for _, env in built if not env["type"].startswith("ingest.record.a")
                and not env["type"].startswith("ingest.record.s")
                and (p := check_payload(env["type"], env["payload"])) is not None]
    assert not problems, "\n".join(problems)


def test_freshness_and_quality_payloads_match_their_models(registry: Registry) -> None:
    state = WatchState("xa-loc-an", "phan-anh-hien-truong", Cadence.DAILY,
                       NOW - timedelta(days=3), last_accepted_at=NOW - timedelta(days=2))
    late = Transition("late", state, NOW, deadline=NOW - timedelta(hours=1))
    recovered = Transition("recovered", replace(state, late_since=NOW - timedelta(hours=1)), NOW)
    for t in (late, recovered):
        assert check_payload(t.event_type, orjson.loads(orjson.dumps(t.payload()))) is None
        assert t.event_type in MESSAGES["ioc.ingest.freshness.v1"]
    publisher = QualityPublisher(None, registry, "q")  # type: ignore[arg-type]
    rows = [{"updated_at": NOW, "outcome": "accepted", "code": "", "n": 4},
            {"updated_at": NOW, "outcome": "rejected", "code": "schema_violation", "n": 2}]
    for unit in ("xa-loc-an", "unknown"):
        _, envelope, _, _ = publisher._message((date(2026, 11, 28), unit, "chi-so-y-te"), rows)
        assert envelope.type == QUALITY_TYPE == PERIODIC_QUALITY_TYPE
        payload = orjson.loads(envelope.to_bytes())["payload"]
        assert check_payload(envelope.type, payload) is None


def test_a_payload_that_drifted_is_caught(built: list[tuple[str, Any]]) -> None:
    payload = next(e["payload"] for t, e in built if t == INGEST_REJECTED.name)
    assert check_payload("ingest.record.rejected", payload) is None
    assert check_payload("ingest.record.rejected", {**payload, "surprise": 1}) is not None
    assert check_payload("ingest.record.rejected", {**payload, "problems_total": "2"}) is not None
    assert check_payload("ingest.record.teleported", payload) is not None
