"""Through the real broker and database: canonical records, rejections, duplicates, HTTP, replay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from ingest.replay import ReplayFilter, replay_quarantine
from ingest.service import IngestService
from ingest.subscribers import inbound_of
from ioc_shared.platform.consumer import Delivery
from ioc_shared.testing import read_topic

from .helpers import (
    TOKENS,
    field_report,
    inputs_handled,
    publish,
    read_all,
    signed_headers,
    submission,
)

pytestmark = pytest.mark.connected
CANONICAL = "phan-anh-hien-truong"


def rid(prefix: str = "PA") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _json(value: bytes | None) -> Any:
    """The value as JSON, or None (quarantine copies hold whatever was sent)."""
    try:
        return orjson.loads(value) if value and value[:1] == b"{" else None
    except orjson.JSONDecodeError:
        return None


async def wait_for(topic: str, predicate, count: int = 1, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    records = await read_topic(topic, timeout=timeout, until=lambda rs: sum(
        1 for r in rs if predicate(_json(r.value), r)) >= count)
    return [r for r in records if predicate(_json(r.value), r)]


async def test_valid_record_becomes_canonical_envelope_with_trace(service: IngestService) -> None:
    record_id = rid()
    value = submission(field_report(record_id))
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    await publish(service.topics.inbound, [(b"xa-loc-thanh-huyen", value, signed_headers(
        "xa-loc-thanh-huyen-system", value, extra=[("traceparent", parent.encode())]))])
    (rec,) = await wait_for(service.topics.canonical[CANONICAL],
                            lambda v, r: v and v["payload"]["record_id"] == record_id)
    envelope = orjson.loads(rec.value)
    headers = {k: v.decode() for k, v in rec.headers}
    assert rec.key == f"xa-loc-thanh-huyen/{record_id}".encode()
    assert envelope["subject"] == f"xa-loc-thanh-huyen/{record_id}"
    assert envelope["type"] == "ingest.record.accepted"
    assert envelope["source_unit"] == "xa-loc-thanh-huyen"
    assert envelope["payload"]["record"]["commune"] == "xa-loc-thanh-huyen"
    assert envelope["payload"]["record"]["title"] == "Rác thải tràn ra đường"
    assert headers["ioc-event-id"] == envelope["event_id"]
    assert headers["traceparent"].split("-")[1] == trace_id


async def test_publishing_without_grant_is_rejected_to_the_unit_and_quarantined(
        service: IngestService) -> None:
    record_id = rid("YT")
    value = submission({"record_id": record_id, "period_start": "23/11/2026", "commune": "Lộc An",
                        "indicator": "kham-chua-benh", "value": "10"}, dataset="chi-so-y-te", version=1)
    await publish(service.topics.inbound, [(b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])
    (rejection,) = await wait_for(service.topics.rejected,
                                  lambda v, r: v and v["payload"]["record_id"] == record_id)
    body = orjson.loads(rejection.value)["payload"]
    assert rejection.key == b"xa-loc-an"
    assert body["code"] == "not_permitted" and body["dataset"] == "chi-so-y-te"
    assert "quyền" in body["message_vi"]
    (copy,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == value)
    marks = {k: v for k, v in copy.headers}
    assert marks["ioc-quarantine-code"] == b"not_permitted"
    assert marks["ioc-principal"] == b"xa-loc-an-system"


async def test_bad_signature_is_unauthenticated(service: IngestService) -> None:
    record_id = rid()
    value = submission(field_report(record_id))
    await publish(service.topics.inbound, [(b"xa-loc-an", value, signed_headers(
        "xa-loc-an-system", value, secret="someone-else-s-secret-123"))])
    # Unverified content is not parsed, so the rejection is found through its quarantine copy.
    (copy,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == value)
    event_id = dict(copy.headers)["ioc-quarantine-event-id"].decode()
    (rejection,) = await wait_for(service.topics.unauthenticated,
                                  lambda v, r: v and v["event_id"] == event_id)
    body = orjson.loads(rejection.value)["payload"]
    assert body["code"] == "unauthenticated" and body["identity_verified"] is False
    assert body["unit"] is None and rejection.key == dict(copy.headers)["ioc-quarantine-origin"]
    await inputs_handled(service.settings, service.topics.inbound)
    canonical = await read_all(service.topics.canonical[CANONICAL])
    assert not any(orjson.loads(r.value)["payload"]["record_id"] == record_id for r in canonical)


async def test_redelivery_republishes_same_event_and_repeat_is_duplicate(service: IngestService) -> None:
    record_id = rid()
    value = submission(field_report(record_id))
    headers = signed_headers("xa-loc-an-system", value)
    await publish(service.topics.inbound, [(b"xa-loc-an", value, headers)])
    await wait_for(service.topics.canonical[CANONICAL],
        lambda v, r: v and v["payload"]["record_id"] == record_id)
    # Redelivery: the very same inbound record (same topic, partition, offset) processed again,
    # as after a crash between publishing and committing the offset.
    (inbound,) = await wait_for(service.topics.inbound, lambda v, r: r.value == value)
    (outcome,) = await service.pipeline.process([inbound_of(Delivery.of(inbound))])
    assert outcome.status == "redelivered"
    # A genuine repeat: the unit sends the same record again.
    await publish(service.topics.inbound, [(b"xa-loc-an", value, headers)])
    (dup,) = await wait_for(service.topics.rejected,
                            lambda v, r: v and v["payload"]["record_id"] == record_id)
    assert orjson.loads(dup.value)["payload"]["code"] == "duplicate"
    canonical = await wait_for(service.topics.canonical[CANONICAL],
                               lambda v, r: v and v["payload"]["record_id"] == record_id, count=2)
    assert len(canonical) == 2
    assert len({orjson.loads(r.value)["event_id"] for r in canonical}) == 1


async def test_http_intake_answers_per_record(service: IngestService) -> None:
    ids = [rid(), rid(), rid()]
    records = [field_report(ids[0]), field_report(ids[1], category="không có"),
               field_report(ids[2], location={"lat": 10.77, "lon": 106.70})]
    url = f"http://127.0.0.1:{service.http_port}/intake/{CANONICAL}"
    token = {"Authorization": f"Bearer {TOKENS['xa-loc-an-system']}"}
    async with httpx.AsyncClient(timeout=20) as client:
        answer = await client.post(url, json=records, headers=token)
        denied = await client.post(url, json=records, headers={"Authorization": "Bearer wrong"})
        retried = await client.post(url, json=records[:1],
                                    headers={**token, "Idempotency-Key": "k-" + ids[0]})
        retried_again = await client.post(url, json=records[:1],
                                          headers={**token, "Idempotency-Key": "k-" + ids[0]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    first, second, third = body["results"]
    assert first["status"] == "accepted" and first["record_id"] == ids[0]
    assert second["code"] == "schema_violation" and second["problems"][0]["field"] == "category"
    assert third["problems"][0]["code"] == "outside_district"
    assert denied.status_code == 401 and denied.json()["code"] == "unauthenticated"
    # The same record in a new request is a duplicate; a retry of that request is not.
    assert retried.json()["results"][0]["code"] == "duplicate"
    assert retried_again.json()["results"][0]["code"] == "duplicate"
    rejected = await wait_for(service.topics.rejected,
                              lambda v, r: v and v["payload"]["record_id"] in ids[1:], count=2)
    assert {orjson.loads(r.value)["payload"]["channel"] for r in rejected} == {"http"}


async def test_http_intake_continues_the_senders_trace(service: IngestService) -> None:
    record_id = rid()
    trace_id = uuid.uuid4().hex
    url = f"http://127.0.0.1:{service.http_port}/intake/{CANONICAL}"
    headers = {"Authorization": f"Bearer {TOKENS['xa-loc-an-system']}",
               "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    async with httpx.AsyncClient(timeout=20) as client:
        answer = await client.post(url, json=[field_report(record_id)], headers=headers)
    assert answer.json()["accepted"] == 1, answer.text
    (rec,) = await wait_for(service.topics.canonical[CANONICAL],
                            lambda v, r: v and v["payload"]["record_id"] == record_id)
    assert dict(rec.headers)["traceparent"].decode().split("-")[1] == trace_id


async def test_http_csv_for_a_tabular_dataset(service: IngestService) -> None:
    ids = [rid("YT"), rid("YT")]
    csv_body = ("record_id,period_start,commune,indicator,value\n"
                f"{ids[0]},23/11/2026,Lộc Tấn,Ca sốt xuất huyết,\"1.250\"\n"
                f"{ids[1]},23/11/2026,Lộc Xyz,kham-chua-benh,abc\n")
    async with httpx.AsyncClient(timeout=20) as client:
        answer = await client.post(
            f"http://127.0.0.1:{service.http_port}/intake/chi-so-y-te",
            content=csv_body.encode(), headers={
                "Authorization": f"Bearer {TOKENS['trung-tam-y-te-system']}",
                "Content-Type": "text/csv; charset=utf-8"})
    results = answer.json()["results"]
    assert results[0]["status"] == "accepted"
    assert {p["field"]: p["code"] for p in results[1]["problems"]} == {
        "commune": "unknown_commune", "value": "wrong_type"}
    (rec,) = await wait_for(service.topics.canonical["chi-so-y-te"],
                            lambda v, r: v and v["payload"]["record_id"] == ids[0])
    assert orjson.loads(rec.value)["payload"]["record"]["value"] == 1250


async def test_replay_of_quarantine_is_not_quarantined_again(service: IngestService) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    record_id = rid()
    value = submission(field_report(record_id, priority="rất gấp"))
    await publish(service.topics.inbound, [(b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])
    await wait_for(service.topics.quarantine, lambda v, r: r.value == value)
    summary = await replay_quarantine(
        service.settings, service.topics,
        ReplayFilter(since=since, codes=frozenset({"schema_violation"}), units=frozenset({"xa-loc-an"})),
        note="kiểm thử")
    assert summary.replayed >= 1
    rejected = await wait_for(service.topics.rejected,
                              lambda v, r: v and v["payload"]["record_id"] == record_id, count=2)
    assert sorted(orjson.loads(r.value)["payload"]["replay"] for r in rejected) == [False, True]
    await inputs_handled(service.settings, service.topics.inbound)
    copies = await read_all(service.topics.quarantine)
    assert sum(1 for r in copies if r.value == value) == 1


async def test_quality_counters_are_published(service: IngestService) -> None:
    value = submission(field_report(rid()))
    await publish(service.topics.inbound, [(b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])
    # Handled: its counters were committed before its outputs were confirmed.
    await inputs_handled(service.settings, service.topics.inbound)
    for _ in range(40):
        if await service.quality.publish_once():
            break
        await asyncio.sleep(0.25)
    (snapshot, *_) = await wait_for(
        service.topics.quality, lambda v, r: v and v["payload"]["unit"] == "xa-loc-an"
        and v["payload"]["dataset"] == CANONICAL)
    body = orjson.loads(snapshot.value)["payload"]
    assert body["accepted"] >= 1


async def test_undecodable_header_does_not_block_the_partition(service: IngestService) -> None:
    """FastStream decodes headers as UTF-8; one bad header must become a rejection, not a poison batch."""
    poison = b"\x00\xff not even json"
    record_id = rid()
    value = submission(field_report(record_id))
    await publish(service.topics.inbound, [
        (b"xa-loc-an", poison, [("ioc-principal", b"\xff\xfe"), ("ioc-signature", b"\xc3")]),
        (b"xa-loc-an", b"null header", [("ioc-principal", None)]),   # a null header value
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])
    (copy,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == poison)
    assert dict(copy.headers)["ioc-principal"] == b"\xff\xfe"        # exact bytes kept
    assert dict(copy.headers)["ioc-quarantine-code"] == b"unauthenticated"
    await wait_for(service.topics.quarantine, lambda v, r: r.value == b"null header")
    await wait_for(service.topics.canonical[CANONICAL],
        lambda v, r: v and v["payload"]["record_id"] == record_id)
