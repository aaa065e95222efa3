"""Hostile inputs through the real broker, database and HTTP server: each is rejected
with its reason (to the verified sender only), nothing of it reaches a canonical topic,
the next valid record of another unit on the same inbound partition passes within
seconds, and the service stays healthy."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest
from ingest.service import IngestService
from ioc_shared.platform.kafka import make_producer
from ioc_shared.testing import kafka_bootstrap, read_topic

from .helpers import (
    TOKENS,
    field_report,
    inputs_handled,
    read_all,
    signed_headers,
    submission,
)
from .test_ingest_flow import rid, wait_for

pytestmark = pytest.mark.connected
CANONICAL = "phan-anh-hien-truong"
BOM = b"\xef\xbb\xbf"


async def publish_on(topic: str, partition: int,
                     messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    """Publish in order to one partition (hostile input first, then the valid one)."""
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    await producer.start()
    try:
        for key, value, headers in messages:
            await (await producer.send(topic, value, key=key, headers=headers, partition=partition))
    finally:
        await producer.stop()


def hostile(record_id: str) -> dict[str, tuple[bytes, str]]:
    """Each class of hostile submission (signed by xa-loc-an) and its rejection code."""
    report = field_report(record_id)
    dup = submission(report)[:-1] + b',"dataset":"chi-so-y-te"}'
    return {
        "nul-in-record-id": (submission({**report, "record_id": record_id + "\x00"}),
                             "forbidden_character"),
        "nul-in-event-id": (submission(report, event_id="ev-\x00-" + record_id),
                            "forbidden_character"),
        "nul-in-title": (submission({**report, "title": "Rác\x00 thải"}), "forbidden_character"),
        "bidi-override": (submission({**report, "title": "Rác \u202etải"}), "forbidden_character"),
        "ansi-escape": (submission({**report, "address": "\x1b[2JẤp 3"}), "forbidden_character"),
        "huge-dataset-name": (submission(report, dataset="d" * 10_000), "unknown_dataset"),
        "duplicate-keys": (dup, "duplicate_key"),
        "schema-version-string": (orjson.dumps({"dataset": CANONICAL, "schema_version": "2",
                                                "record": report}), "malformed_submission"),
    }


async def wait_raw(topic: str, predicate: Any, timeout: float = 20.0) -> list[Any]:
    """Records matching `predicate` (on the raw record: quarantine copies are not JSON)."""
    records = await read_topic(topic, timeout=timeout,
                               until=lambda rs: any(predicate(r) for r in rs))
    return [r for r in records if predicate(r)]


async def healthy(service: IngestService) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"http://127.0.0.1:{service.http_port}/health")
    assert answer.status_code == 200, answer.text


async def canonical_ids(service: IngestService) -> set[str]:
    """Record ids on the canonical topic once every input sent so far was handled."""
    await inputs_handled(service.settings, service.topics.inbound)
    records = await read_all(service.topics.canonical[CANONICAL])
    return {orjson.loads(r.value)["payload"]["record_id"] for r in records}


@pytest.mark.parametrize("case", list(hostile("x")))
async def test_hostile_kafka_input_is_rejected_and_the_partition_flows(
        service: IngestService, case: str) -> None:
    record_id = rid()
    value, code = hostile(record_id)[case]
    valid_id = rid("OK")
    valid = submission(field_report(valid_id))
    partition = uuid.uuid4().int % 6
    await publish_on(service.topics.inbound, partition, [
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value)),
        (b"xa-loc-thanh-huyen", valid, signed_headers("xa-loc-thanh-huyen-system", valid))])
    # The next valid record of another unit on the same partition passes.
    (accepted,) = await wait_for(service.topics.canonical[CANONICAL],
                                 lambda v, r: v and v["payload"]["record_id"] == valid_id,
                                 timeout=15)
    assert accepted.key == f"xa-loc-thanh-huyen/{valid_id}".encode()
    (copy,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == value)
    event_id = dict(copy.headers)["ioc-quarantine-event-id"].decode()
    (rejection,) = await wait_for(service.topics.rejected,
                                  lambda v, r: v and v["event_id"] == event_id)
    body = orjson.loads(rejection.value)
    assert body["payload"]["code"] == code and rejection.key == b"xa-loc-an"
    assert len(body["subject"]) <= 200
    if code == "unknown_dataset":
        assert body["payload"]["dataset"] is None      # never the raw 10,000 characters
    (feed,) = await wait_for(service.topics.unit_rejections["xa-loc-an"],   # type: ignore[index]
                             lambda v, r: v and v["event_id"] == event_id)
    assert feed.value == rejection.value
    assert record_id not in await canonical_ids(service)
    await healthy(service)


async def test_a_record_whose_effects_fail_is_parked_answered_and_the_partition_flows(
        service: IngestService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not bad input: its handler effect fails with a non-transient error (here the claim
    of this one record id). After the consumer's attempts it is parked with its raw bytes,
    its sender is answered `internal_error`, and the next record on the partition passes."""
    record_id = rid("BUG")
    value = submission(field_report(record_id))
    repository = service.pipeline.repository
    original = repository.record_batch

    async def failing_for_one(claims: Any, *args: Any) -> Any:
        if any(c.accepted.record_id == record_id for c in claims):
            raise ValueError("a bug in recording this record")
        return await original(claims, *args)

    monkeypatch.setattr(repository, "record_batch", failing_for_one)
    valid_id = rid("OK")
    valid = submission(field_report(valid_id))
    await publish_on(service.topics.inbound, 5, [
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value)),
        (b"xa-loc-thanh-huyen", valid, signed_headers("xa-loc-thanh-huyen-system", valid))])
    (_,) = await wait_for(service.topics.canonical[CANONICAL],
                          lambda v, r: v and v["payload"]["record_id"] == valid_id, timeout=30)
    (answer,) = await wait_for(service.topics.rejected, lambda v, r: v and v["payload"][
        "code"] == "internal_error" and v["payload"]["origin"].startswith(
        f"{service.topics.inbound}:5:") and v["payload"]["unit"] == "xa-loc-an"
        and v["payload"]["quarantined"] is False)
    origin = orjson.loads(answer.value)["payload"]["origin"]
    (feed,) = await wait_for(service.topics.unit_rejections["xa-loc-an"],   # type: ignore[index]
                             lambda v, r: v and v["event_id"] == orjson.loads(answer.value)[
                                 "event_id"])
    assert feed.value == answer.value
    assert service.pipeline.repository is repository
    pool = repository.pool
    row = await pool.fetchrow(
        f"SELECT consumer, value, attempts FROM {service.settings.db_schema}.consumer_parked "
        "WHERE topic = $1 AND partition = 5 AND \"offset\" = $2", service.topics.inbound,
        int(origin.rsplit(":", 1)[1]))
    assert row is not None and row["consumer"] == "ingest-inbound" and row["value"] == value
    assert record_id not in await canonical_ids(service)
    await healthy(service)


async def test_bom_is_stripped_and_the_record_accepted(service: IngestService) -> None:
    record_id = rid()
    value = BOM + submission(field_report(record_id))
    await publish_on(service.topics.inbound, 0, [
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])
    (_,) = await wait_for(service.topics.canonical[CANONICAL],
                   lambda v, r: v and v["payload"]["record_id"] == record_id, timeout=15)


async def test_bad_signature_claiming_another_unit_reaches_only_the_operators(
        service: IngestService) -> None:
    record_id = rid()
    value = submission(field_report(record_id))
    valid_id = rid("OK")
    valid = submission(field_report(valid_id))
    await publish_on(service.topics.inbound, 2, [
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value,
                                             secret="forged-secret-0000000000")),
        (b"xa-loc-thanh-huyen", valid, signed_headers("xa-loc-thanh-huyen-system", valid))])
    (_,) = await wait_for(service.topics.canonical[CANONICAL],
                   lambda v, r: v and v["payload"]["record_id"] == valid_id, timeout=15)
    (copy,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == value)
    marks = dict(copy.headers)
    assert marks["ioc-quarantine-unit"] == b"unknown"
    event_id = marks["ioc-quarantine-event-id"].decode()
    (rejection,) = await wait_for(service.topics.unauthenticated,
                                  lambda v, r: v and v["event_id"] == event_id)
    assert b"xa-loc-an" not in (rejection.key or b"")
    assert orjson.loads(rejection.value)["payload"]["unit"] is None
    # Not on the claimed unit's feed, nor on the IOC-internal rejected topic.
    await inputs_handled(service.settings, service.topics.inbound)
    for topic in (service.topics.unit_rejections["xa-loc-an"], service.topics.rejected):  # type: ignore[index]
        records = await read_all(topic)
        assert event_id not in {orjson.loads(r.value)["event_id"] for r in records}
    assert record_id not in await canonical_ids(service)
    await healthy(service)


async def test_two_units_with_the_same_record_id_make_two_records(service: IngestService) -> None:
    record_id = rid("PA")
    first = submission(field_report(record_id))
    second = submission(field_report(record_id, title="Đèn đường hỏng"))
    await publish_on(service.topics.inbound, 1, [
        (b"xa-loc-an", first, signed_headers("xa-loc-an-system", first)),
        (b"xa-loc-thanh-huyen", second, signed_headers("xa-loc-thanh-huyen-system", second))])
    records = await wait_for(service.topics.canonical[CANONICAL],
                             lambda v, r: v and v["payload"]["record_id"] == record_id,
                             count=2, timeout=15)
    assert {r.key for r in records} == {f"xa-loc-an/{record_id}".encode(),
                                        f"xa-loc-thanh-huyen/{record_id}".encode()}
    assert len({orjson.loads(r.value)["event_id"] for r in records}) == 2


async def test_quality_round_survives_a_huge_dataset_name(service: IngestService) -> None:
    value = submission(field_report(rid()), dataset="q" * 10_000)
    await publish_on(service.topics.inbound, 3, [
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])
    (_,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == value)
    published = 0
    for _ in range(20):
        published = await service.quality.publish_once()   # would fail on a 10,000-char subject
        if published:
            break
        await asyncio.sleep(0.25)
    snapshots = await wait_for(service.topics.quality, lambda v, r: v and v["payload"]["unit"]
                               == "xa-loc-an" and v["payload"]["dataset"] is None)
    assert snapshots and all("q" * 100 not in r.value.decode() for r in snapshots)
    assert all(orjson.loads(r.value)["subject"].startswith("xa-loc-an/unknown/") for r in snapshots)


# --- HTTP ------------------------------------------------------------------------

def url(service: IngestService, dataset: str = CANONICAL) -> str:
    return f"http://127.0.0.1:{service.http_port}/intake/{dataset}"


AUTH = {"Authorization": f"Bearer {TOKENS['xa-loc-an-system']}"}


async def post(service: IngestService, body: bytes, headers: dict[str, str] | None = None,
               dataset: str = CANONICAL) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(url(service, dataset), content=body, headers={
            "Content-Type": "application/json", **AUTH, **(headers or {})})


async def valid_http_record_of_another_unit_passes(service: IngestService) -> None:
    valid_id = rid("OK")
    async with httpx.AsyncClient(timeout=20) as client:
        answer = await client.post(url(service), json=field_report(valid_id), headers={
            "Authorization": f"Bearer {TOKENS['xa-loc-thanh-huyen-system']}"})
    assert answer.json()["results"][0]["status"] == "accepted", answer.text
    await healthy(service)


@pytest.mark.parametrize(("field", "text"), [
    ("record_id", "PA-\x00"), ("title", "Rác\x00 thải"), ("title", "Rác \u202etải"),
    ("title", "a\u200bb"),
])
async def test_http_forbidden_characters_are_rejected_per_record(
        service: IngestService, field: str, text: str) -> None:
    record_id = rid()
    record = {**field_report(record_id), field: text if field != "record_id" else record_id + text}
    answer = await post(service, orjson.dumps([record]))
    assert answer.status_code == 200
    (result,) = answer.json()["results"]
    assert result["code"] == "forbidden_character"
    assert result["problems"][0]["field"] == f"$.record.{field}"
    await valid_http_record_of_another_unit_passes(service)
    assert record_id not in await canonical_ids(service)


async def test_http_refusals_answer_json_and_leave_the_same_audit(service: IngestService) -> None:
    record = field_report(rid())
    duplicate = orjson.dumps(record)[:-1] + b',"title":"other"}'
    cases = [
        (duplicate, AUTH, {}, 400, "duplicate_key"),
        (b"{not json", AUTH, {}, 400, "malformed_json"),
        (b'{"record_id": ' + b'{"a":' * 600 + b"1" + b"}" * 601, AUTH, {}, 400, "malformed_json"),
        (b'{"a": "x\\":", "b": ' + b"[" * 1000 + b"]" * 1000 + b"}", AUTH, {}, 400,
         "malformed_json"),
        (b"\xff\xfe\x00", AUTH, {}, 400, "undecodable"),
        (orjson.dumps(record), AUTH, {"Content-Type": "application/xml"}, 415,
         "unsupported_media_type"),
        (orjson.dumps(record), {"Authorization": f"Bearer {TOKENS['xa-loc-an-system']}x"}, {},
         401, "unauthenticated"),
        # The signing key is not a bearer token.
        (orjson.dumps(record), {"Authorization": "Bearer dev-secret-xa-loc-an-0001"}, {}, 401,
         "unauthenticated"),
    ]
    for body, auth, extra, status, code in cases:
        async with httpx.AsyncClient(timeout=20) as client:
            answer = await client.post(url(service), content=body, headers={
                "Content-Type": "application/json", **auth, **extra})
        assert answer.status_code == status, (code, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["code"] == code
        origin_end = answer.json()["request_id"].encode()
        (copy,) = await wait_raw(service.topics.quarantine, lambda r, end=origin_end: dict(
            r.headers).get("ioc-quarantine-origin", b"").endswith(end))
        assert copy.value == body
        marks = dict(copy.headers)
        assert marks["ioc-quarantine-code"] == code.encode()
        topic = service.topics.unauthenticated if status == 401 else service.topics.rejected
        event_id = marks["ioc-quarantine-event-id"].decode()
        (rejection,) = await wait_for(topic, lambda v, r, e=event_id: v and v["event_id"] == e)
        assert orjson.loads(rejection.value)["payload"]["channel"] == "http"
        if status == 401:
            assert orjson.loads(rejection.value)["payload"]["unit"] is None
    await valid_http_record_of_another_unit_passes(service)


async def test_http_bom_is_stripped_and_a_huge_dataset_path_is_bounded(service: IngestService) -> None:
    record_id = rid()
    answer = await post(service, BOM + orjson.dumps(field_report(record_id)))
    assert answer.json()["results"][0]["status"] == "accepted", answer.text
    answer = await post(service, orjson.dumps(field_report(rid())), dataset="d" * 10_000)
    assert answer.status_code == 200 and answer.json()["dataset"] is None
    assert answer.json()["results"][0]["code"] == "unknown_dataset"
    await valid_http_record_of_another_unit_passes(service)


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_http_body_limit_holds_for_a_chunked_body_without_length(
        service: IngestService) -> None:
    """50 MB chunked, no Content-Length, to the real server (this process): 413 once the
    limit is passed, without the rest being read into memory."""
    total = 50 * 1024 * 1024
    chunk = b" " * (256 * 1024)
    before = rss_bytes()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write((f"POST /intake/{CANONICAL} HTTP/1.1\r\nHost: ingest\r\n"
                  f"Authorization: Bearer {TOKENS['xa-loc-an-system']}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    sent = 0
    try:
        while sent < total and not answer.done():
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, timeout=10,
                               return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                drained.cancel()
                break
            if drained.exception() is not None:   # the server closed the connection
                break
            sent += len(chunk)
        head = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head
    assert sent < total                       # the server stopped reading long before 50 MB
    assert rss_bytes() - before < 25 * 1024 * 1024
    await valid_http_record_of_another_unit_passes(service)


async def test_personal_fields_appear_only_on_the_restricted_topic_and_in_no_log(
        service: IngestService, capfd: pytest.CaptureFixture[str]) -> None:
    from structlog.testing import capture_logs

    tag = uuid.uuid4().hex[:8]
    name = f"Nguyễn Thị Riêng {tag}"
    # 091 and any seven digits is a valid Vietnamese mobile number (092 is not: 1 in 100
    # random 09 numbers was rejected, and the test with it).
    digits = f"1{uuid.uuid4().int % 10**7:07d}"
    phone, e164 = f"09{digits}", f"+849{digits}"
    kafka_id, http_id, bad_id = rid(), rid(), rid()
    good = submission(field_report(kafka_id, reporter_name=name, reporter_phone=phone))
    bad = submission(field_report(bad_id, reporter_name=name, reporter_phone=phone,
                                  category="không có"))
    with capture_logs() as logs:
        await publish_on(service.topics.inbound, 4, [
            (b"xa-loc-an", good, signed_headers("xa-loc-an-system", good)),
            (b"xa-loc-an", bad, signed_headers("xa-loc-an-system", bad))])
        answer = await post(service, orjson.dumps(
            field_report(http_id, reporter_name=name, reporter_phone=phone)))
        assert answer.json()["results"][0]["status"] == "accepted", answer.text
        restricted = await wait_for(
            service.topics.restricted[CANONICAL],   # type: ignore[index]
            lambda v, r: v and v["payload"]["record_id"] in (kafka_id, http_id), count=2)
        (_,) = await wait_for(service.topics.quarantine, lambda v, r: r.value == bad)
    assert len(restricted) == 2
    for record in restricted:
        fields = orjson.loads(record.value)["payload"]["fields"]
        assert fields == {"reporter_name": name, "reporter_phone": e164}
    canonical = await wait_for(service.topics.canonical[CANONICAL], lambda v, r: v and v[
        "payload"]["record_id"] in (kafka_id, http_id), count=2)
    assert len(canonical) == 2
    refs = {orjson.loads(r.value)["payload"]["record"]["reporter_ref"] for r in canonical}
    assert len(refs) == 1      # same person, same unit: the same pseudonym
    secrets = (name.encode(), phone.encode(), e164.encode(), digits.encode())
    # Every topic ingest writes but the restricted one and quarantine (raw bytes, operators
    # only); the inbound topic holds what the units sent.
    others = [s.name for s in service.topics.specs
              if s.name not in (service.topics.quarantine, service.topics.inbound,
                                *(service.topics.restricted or {}).values())]
    await inputs_handled(service.settings, service.topics.inbound)
    for topic in others:
        for record in await read_all(topic):
            blob = (record.value or b"") + (record.key or b"") + b"".join(
                v or b"" for _, v in record.headers)
            assert not any(s in blob for s in secrets), topic
    out, err = capfd.readouterr()
    assert not any(s.decode() in out + err + repr(logs) for s in secrets)


async def test_http_internal_error_answers_json_with_a_trace_id_and_is_audited(
        service: IngestService, monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(service.intake.pipeline, "process", broken)
    record = field_report(rid())
    with capture_logs() as logs:
        answer = await post(service, orjson.dumps(record))
    assert answer.status_code == 500
    body = answer.json()
    assert body["code"] == "internal_error" and len(body["trace_id"]) == 32
    (entry,) = [e for e in logs if e["event"] == "internal error in HTTP intake"]
    assert entry["log_level"] == "error" and entry["trace_id"] == body["trace_id"]
    assert entry["error"] == "RuntimeError"
    end = body["request_id"].encode()
    (copy,) = await wait_raw(service.topics.quarantine, lambda r: dict(r.headers).get(
        "ioc-quarantine-origin", b"").endswith(end))
    assert copy.value == orjson.dumps(record)
    assert dict(copy.headers)["ioc-quarantine-code"] == b"internal_error"
    monkeypatch.undo()
    await valid_http_record_of_another_unit_passes(service)


async def test_an_input_just_under_the_broker_limit_is_quarantined_without_stalling(
        service: IngestService) -> None:
    """Its quarantine copy (value + original and quarantine headers) would pass the
    broker's 1 MiB limit: it is cut, marked, and the partition flows on."""
    record_id = rid()
    base = len(submission({**field_report(record_id), "padding": ""}))
    # As large as the test's producer sends (1 MiB per request, with the batch's overhead).
    value = submission({**field_report(record_id), "padding": "p" * (1_048_100 - base)})
    valid_id = rid("OK")
    valid = submission(field_report(valid_id))
    await publish_on(service.topics.inbound, 5, [
        (b"xa-loc-an", value, signed_headers("xa-loc-an-system", value)),
        (b"xa-loc-thanh-huyen", valid, signed_headers("xa-loc-thanh-huyen-system", valid))])
    (_,) = await wait_for(service.topics.canonical[CANONICAL],
                   lambda v, r: v and v["payload"]["record_id"] == valid_id, timeout=15)
    (copy,) = await wait_raw(service.topics.quarantine,
                             lambda r: dict(r.headers).get("ioc-quarantine-truncated")
                             == str(len(value)).encode())
    assert value.startswith(copy.value) and dict(copy.headers)["ioc-quarantine-code"] == b"too_large"
    await healthy(service)
