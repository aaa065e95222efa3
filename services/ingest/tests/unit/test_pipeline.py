"""The batch pipeline with an in-memory repository and sink (no broker, no database)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import orjson
import pytest
from ingest.domain import Code, Ingestor
from ingest.handlers import IngestPipeline
from ingest.messages import H_Q_CODE, H_REPLAY_ID, Outgoing
from ingest.repository import Claim, CounterKey
from ingest.topics import IngestTopics
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.registry import Registry
from opentelemetry.sdk.trace import TracerProvider

from .conftest import NOW, report, signed


class MemoryRepository:
    """Same contract as IngestRepository.record_batch, kept in dicts."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str, str, str], str] = {}
        self.events: dict[tuple[str, str], str] = {}
        self.counters: list[CounterKey] = []

    async def record_batch(self, claims: Sequence[Claim], counters: Sequence[CounterKey],
                           now: datetime, day: date) -> dict[int, str]:
        out = {}
        self.counters += counters
        for c in claims:
            a = c.accepted
            key = (a.unit, a.dataset, a.record_id, a.content_hash)
            prior = self.claims.get(key) or (self.events.get((a.unit, a.client_event_id))
                                             if a.client_event_id else None)
            if prior is None:
                self.claims[key] = c.origin
                if a.client_event_id:
                    self.events[(a.unit, a.client_event_id)] = c.origin
                out[c.ord] = "new"
            else:
                out[c.ord] = "redelivery" if prior == c.origin else "duplicate"
        return out


class MemorySink:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def enqueue(self, messages: Sequence[Outgoing]) -> list[Any]:
        self.sent += messages
        return []


@pytest.fixture
def parts(registry: Registry, ingestor: Ingestor,
          ) -> tuple[IngestPipeline, MemoryRepository, MemorySink]:
    topics = IngestTopics.resolve(ServiceSettings(topic_namespace="unit"), registry)
    repo, sink = MemoryRepository(), MemorySink()
    tracer = TracerProvider().get_tracer("test")
    # Chunks of 2 records, so that batches in these tests span several chunks.
    pipeline = IngestPipeline(ingestor, repo, sink, topics, tracer=tracer,  # type: ignore[arg-type]
                              clock=lambda: NOW, chunk_records=2)
    return pipeline, repo, sink


def on(sink: MemorySink, suffix: str) -> list[Outgoing]:
    return [m for m in sink.sent if m.topic.endswith(suffix)]


def payload(message: Outgoing) -> dict[str, Any]:
    return Envelope.from_bytes(message.value).payload


async def test_batch_routes_each_record_to_exactly_one_place(parts: Any) -> None:
    pipeline, repo, sink = parts
    good, bad = signed(report(), origin="in:0:1"), signed(report(priority="?"), origin="in:0:2")
    outcomes = await pipeline.process([good, bad])
    assert [o.status for o in outcomes] == ["accepted", "rejected"]
    (canonical,) = on(sink, "ioc.data.phan-anh-hien-truong.v1")
    assert canonical.key == b"xa-loc-an/PA-1"     # record ids are unique per unit only
    envelope = Envelope.from_bytes(canonical.value)
    assert envelope.source_unit == "xa-loc-an" and envelope.subject == "xa-loc-an/PA-1"
    assert envelope.payload["record_id"] == "PA-1"
    assert envelope.payload["schema_version"] == 2 and envelope.payload["record"]["commune"] == "xa-loc-an"
    (rejection,) = on(sink, "ioc.ingest.rejected.v1")
    assert rejection.key == b"xa-loc-an"
    (feed,) = on(sink, "ioc.ingest.rejections.xa-loc-an.v1")   # the unit's own copy
    assert feed.value == rejection.value and feed.key == b"xa-loc-an"
    assert on(sink, "ioc.ingest.unauthenticated.v1") == []
    body = payload(rejection)
    assert body["code"] == "schema_violation" and body["field"] == "priority"
    assert body["record_id"] == "PA-1" and "Trường 'priority'" in body["problems"][0]["message_vi"]
    (quarantined,) = on(sink, "ioc.ingest.quarantine.v1")
    assert quarantined.value == bad.value
    assert (H_Q_CODE, b"schema_violation") in quarantined.headers
    assert ("ioc-signature", dict(bad.headers)["ioc-signature"]) in quarantined.headers
    assert [(k.outcome, k.code) for k in repo.counters] == [("rejected", "schema_violation")]


async def test_special_grant_stream_gets_a_projection(parts: Any) -> None:
    pipeline, _, sink = parts
    await pipeline.process([signed(report(reporter_phone="0912345678"), origin="in:0:1")])
    (shared,) = on(sink, "sr-cong-an-pa-2026.v1")
    assert "reporter_phone" not in payload(shared)["record"]
    assert payload(shared)["grant_id"] == "sr-cong-an-pa-2026"


async def test_redelivery_republishes_same_event_and_repeat_is_duplicate(parts: Any) -> None:
    pipeline, _, sink = parts
    first = await pipeline.process([signed(report(), origin="in:0:1")])
    again = await pipeline.process([signed(report(), origin="in:0:1")])     # same delivery
    repeat = await pipeline.process([signed(report(), origin="in:0:9")])    # unit sent it again
    assert [o.status for o in (*first, *again, *repeat)] == ["accepted", "redelivered", "rejected"]
    canonical = on(sink, "ioc.data.phan-anh-hien-truong.v1")
    assert len(canonical) == 2
    assert len({Envelope.from_bytes(m.value).event_id for m in canonical}) == 1
    assert repeat[0].rejected is not None and repeat[0].rejected.code is Code.DUPLICATE


async def test_duplicates_inside_one_batch_and_by_client_event_id(parts: Any) -> None:
    pipeline, _, _ = parts
    same = [signed(report(), origin="in:0:1"), signed(report(), origin="in:0:2"),
            signed({**report(record_id="PA-2"), "event_id": "ev-1"}, origin="in:0:3"),
            signed({**report(record_id="PA-3"), "event_id": "ev-1"}, origin="in:0:4")]
    outcomes = await pipeline.process(same)
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted", "rejected"]


async def test_replayed_input_rejected_again_is_not_requarantined(parts: Any) -> None:
    pipeline, _, sink = parts
    replayed = signed(report(priority="?"), origin="in:0:5")
    replayed = type(replayed)(value=replayed.value, origin=replayed.origin, replay=True,
                              headers=(*replayed.headers, (H_REPLAY_ID, b"r1")))
    await pipeline.process([replayed])
    assert len(on(sink, "ioc.ingest.rejected.v1")) == 1
    assert on(sink, "ioc.ingest.quarantine.v1") == []


async def test_record_span_is_child_of_the_senders_trace(parts: Any) -> None:
    pipeline, _, sink = parts
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    inbound = signed(report(), origin="in:0:1")
    inbound = type(inbound)(value=inbound.value, origin=inbound.origin,
                            headers=(*inbound.headers, ("traceparent", parent.encode())))
    await pipeline.process([inbound])
    (canonical,) = on(sink, "ioc.data.phan-anh-hien-truong.v1")
    traceparent = dict(canonical.headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == trace_id
    assert traceparent.split("-")[2] != "00f067aa0ba902b7"   # a new span of ingest, not the sender's


async def test_garbage_yields_rejection_with_raw_bytes_kept(parts: Any) -> None:
    pipeline, _, sink = parts
    garbage = signed(None, raw=b"\xff\xfe garbage", origin="in:0:7")
    (outcome,) = await pipeline.process([garbage])
    assert outcome.rejected is not None and outcome.rejected.code is Code.UNDECODABLE
    assert on(sink, "ioc.ingest.quarantine.v1")[0].value == b"\xff\xfe garbage"
    assert orjson.loads(on(sink, "ioc.ingest.rejected.v1")[0].value)["payload"]["code"] == "undecodable"


async def test_repeat_across_chunks_of_one_batch_is_duplicate(parts: Any) -> None:
    pipeline, _, sink = parts
    batch = [signed(report(), origin="in:0:1"), signed(report(record_id="PA-2"), origin="in:0:2"),
             signed(report(), origin="in:0:3")]
    outcomes = await pipeline.process(batch)
    assert [o.status for o in outcomes] == ["accepted", "accepted", "rejected"]
    assert len(on(sink, "ioc.data.phan-anh-hien-truong.v1")) == 2


async def test_accepted_record_with_a_phone_also_goes_to_the_restricted_topic(parts: Any) -> None:
    pipeline, _, sink = parts
    await pipeline.process([signed(report(reporter_phone="0912345678"), origin="in:0:1")])
    (canonical,) = on(sink, "ioc.data.phan-anh-hien-truong.v1")
    (personal,) = on(sink, "ioc.restricted.phan-anh-hien-truong.v1")
    assert b"912345678" not in canonical.value and b"reporter_ref" in canonical.value
    assert payload(personal)["fields"] == {"reporter_phone": "+84912345678"}


async def test_a_parked_record_is_answered_internal_error_to_its_verified_sender(
        parts: Any) -> None:
    pipeline, _, sink = parts
    await pipeline.answer_parked(signed(report(), origin="in:3:7"), RuntimeError("bug"))
    (rejection,) = on(sink, "ioc.ingest.rejected.v1")
    (feed,) = on(sink, "ioc.ingest.rejections.xa-loc-an.v1")
    assert feed.value == rejection.value and rejection.key == b"xa-loc-an"
    body = payload(rejection)
    assert body["code"] == "internal_error" and body["unit"] == "xa-loc-an"
    assert body["origin"] == "in:3:7" and body["quarantined"] is False
    # The parked row keeps the bytes: no quarantine copy, nothing for the operators.
    assert on(sink, "ioc.ingest.quarantine.v1") == []
    assert on(sink, "ioc.ingest.unauthenticated.v1") == []


async def test_a_parked_record_of_an_unverified_sender_is_answered_to_the_operators(
        parts: Any) -> None:
    pipeline, _, sink = parts
    forged = signed(report(), secret="forged-secret-0000", origin="in:3:8")
    await pipeline.answer_parked(forged, RuntimeError("bug"))
    (answer,) = on(sink, "ioc.ingest.unauthenticated.v1")
    assert answer.key == b"in:3:8" and payload(answer)["unit"] is None
    assert payload(answer)["code"] == "internal_error"
    assert on(sink, "ioc.ingest.rejected.v1") == []
    assert on(sink, "ioc.ingest.rejections.xa-loc-an.v1") == []
    assert on(sink, "ioc.ingest.quarantine.v1") == []


async def test_a_failed_claim_fails_the_batch_and_publishes_nothing_after_it(parts: Any) -> None:
    pipeline, repo, sink = parts
    original = repo.record_batch
    calls = 0

    async def second_fails(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("database gone")
        return await original(*args)

    repo.record_batch = second_fails  # type: ignore[method-assign]
    batch = [signed(report(record_id=f"PA-{n}"), origin=f"in:0:{n}") for n in range(5)]
    with pytest.raises(ConnectionError):
        await pipeline.process(batch)
    # The first chunk was claimed and handed over; nothing of the later chunks was.
    assert {payload(m)["record_id"] for m in on(sink, "ioc.data.phan-anh-hien-truong.v1")} == {
        "PA-0", "PA-1"}
