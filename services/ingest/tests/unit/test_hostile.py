"""Hostile inputs decided and routed without I/O: each is rejected with its reason and
addressed only to whoever is verified to have sent it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ingest.domain import Accepted, Code, Inbound, Ingestor, Rejected, SchemaCatalog
from ingest.domain.submission import MAX_RECORD_ID
from ingest.messages import personal_event_id
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.registry import Registry, load_registry, reporter_ref
from structlog.testing import capture_logs

from .conftest import NOW, REPO, report, signed
from .test_pipeline import on, parts, payload  # noqa: F401 (the fixture)


def rejected(decision: object) -> Rejected:
    assert isinstance(decision, Rejected), decision
    return decision


@pytest.mark.parametrize(("field", "text", "code_point"), [
    ("record_id", "PA-\x001", "U+0000"), ("title", "Rác\x00 thải", "U+0000"),
    ("title", "Rác \u202etải", "U+202E"), ("title", "Rác\u200bthải", "U+200B"),
    ("address", "Ấp \x1b[31m3", "U+001B"), ("title", "\x85", "U+0085"),
])
def test_forbidden_characters_in_a_record_are_refused_with_path_and_code_point(
        ingestor: Ingestor, field: str, text: str, code_point: str) -> None:
    rej = rejected(ingestor.decide(signed(report(**{field: text})), NOW))
    assert rej.code is Code.FORBIDDEN_CHARACTER
    (problem,) = rej.problems
    assert problem.field == f"$.record.{field}" and code_point in problem.message_vi
    assert rej.unit == "xa-loc-an" and rej.dataset == "phan-anh-hien-truong"
    assert rej.record_id is None if field == "record_id" else rej.record_id == "PA-1"


def test_forbidden_characters_in_keys_event_id_and_escapes(ingestor: Ingestor) -> None:
    body = report()
    body["record"]["ti\u200dtle"] = "x"
    assert rejected(ingestor.decide(signed(body), NOW)).problems[0].field == "$.record.<key>"
    body = {**report(), "event_id": "ev-\x00"}
    assert rejected(ingestor.decide(signed(body), NOW)).code is Code.FORBIDDEN_CHARACTER
    # The same character as a JSON escape, as `json.dumps(ensure_ascii=True)` writes it.
    raw = b'{"dataset":"phan-anh-hien-truong","schema_version":2,"record":{"record_id":"PA-\\u0000"}}'
    assert rejected(ingestor.decide(signed(None, raw=raw), NOW)).code is Code.FORBIDDEN_CHARACTER
    lone = b'{"dataset":"phan-anh-hien-truong","schema_version":2,"record":{"title":"\\udc00"}}'
    assert rejected(ingestor.decide(signed(None, raw=lone), NOW)).code in (
        Code.FORBIDDEN_CHARACTER, Code.MALFORMED_JSON)


def test_duplicate_keys_are_refused_so_the_dataset_cannot_be_swapped(ingestor: Ingestor) -> None:
    raw = (b'{"dataset":"chi-so-y-te","schema_version":2,"record":{"record_id":"PA-1"},'
           b'"dataset":"phan-anh-hien-truong"}')
    rej = rejected(ingestor.decide(signed(None, raw=raw), NOW))
    assert rej.code is Code.DUPLICATE_KEY and "$.dataset" in rej.message_vi


def test_a_bom_is_stripped_and_schema_version_must_be_a_json_integer(ingestor: Ingestor) -> None:
    raw = orjson.dumps(report())
    assert isinstance(ingestor.decide(signed(None, raw=b"\xef\xbb\xbf" + raw), NOW), Accepted)
    for version in ("2", True, 2.0):
        rej = rejected(ingestor.decide(signed({**report(), "schema_version": version}), NOW))
        assert rej.code is Code.MALFORMED_SUBMISSION
        assert rej.problems[0].field == "schema_version"


def test_sender_controlled_strings_are_bounded_before_they_are_addressed(ingestor: Ingestor) -> None:
    rej = rejected(ingestor.decide(signed({**report(), "dataset": "d" * 10_000}), NOW))
    assert rej.code is Code.UNKNOWN_DATASET and rej.dataset is None    # counted as `unknown`
    rej = rejected(ingestor.decide(signed({**report(), "dataset": 7}), NOW))
    assert rej.dataset is None
    rej = rejected(ingestor.decide(signed(report(record_id="P" * (MAX_RECORD_ID + 1))), NOW))
    assert rej.code is Code.SCHEMA_VIOLATION and rej.record_id is None
    rej = rejected(ingestor.decide(signed({**report(), "event_id": "e" * 129}), NOW))
    assert rej.code is Code.MALFORMED_SUBMISSION


def test_personal_fields_leave_the_canonical_record_for_a_pseudonym(
        ingestor: Ingestor, registry: Registry) -> None:
    body = report(reporter_name="  Nguyễn   Văn A ", reporter_phone="0912 345 678")
    acc = ingestor.decide(signed(body), NOW)
    assert isinstance(acc, Accepted)
    canonical = orjson.loads(acc.record_json)
    assert "reporter_name" not in canonical and "reporter_phone" not in canonical
    assert orjson.loads(acc.personal_json) == {"reporter_name": "Nguyễn Văn A",
                                               "reporter_phone": "+84912345678"}
    assert registry.pseudonym_key is not None
    assert canonical["reporter_ref"] == reporter_ref(
        registry.pseudonym_key, "xa-loc-an", "phan-anh-hien-truong",
        ("Nguyễn Văn A", "+84912345678"))
    assert canonical["reporter_ref"].startswith("r-") and len(canonical["reporter_ref"]) == 34
    # The same person from another unit is another pseudonym; no personal data, no ref.
    other = ingestor.decide(signed(body, "xa-loc-thanh-huyen-system"), NOW)
    assert isinstance(other, Accepted)
    assert orjson.loads(other.record_json)["reporter_ref"] != canonical["reporter_ref"]
    bare = ingestor.decide(signed(report()), NOW)
    assert isinstance(bare, Accepted) and bare.personal_json == b""
    assert "reporter_ref" not in orjson.loads(bare.record_json)
    # A sender cannot set the pseudonym itself.
    spoof = ingestor.decide(signed(report(reporter_ref="r-" + "0" * 32)), NOW)
    assert rejected(spoof).code is Code.SCHEMA_VIOLATION


async def test_personal_fields_travel_only_on_the_restricted_topic(parts: Any) -> None:  # noqa: F811
    pipeline, _, sink = parts
    body = report(reporter_name="Trần Thị Bé", reporter_phone="0912345678")
    (outcome,) = await pipeline.process([signed(body, origin="in:0:1")])
    assert outcome.status == "accepted"
    (restricted,) = on(sink, "ioc.restricted.phan-anh-hien-truong.v1")
    (canonical,) = on(sink, "ioc.data.phan-anh-hien-truong.v1")
    envelope = Envelope.from_bytes(restricted.value)
    canonical_id = str(Envelope.from_bytes(canonical.value).event_id)
    assert envelope.type == "phan-anh-hien-truong.personal"
    assert restricted.key == canonical.key == b"xa-loc-an/PA-1"
    assert envelope.subject == "xa-loc-an/PA-1" and envelope.source_unit == "xa-loc-an"
    assert str(envelope.event_id) == personal_event_id(canonical_id)
    assert envelope.payload == {"record_id": "PA-1", "canonical_event_id": canonical_id,
                                "fields": {"reporter_name": "Trần Thị Bé",
                                           "reporter_phone": "+84912345678"}}
    for message in sink.sent:
        if message is not restricted:
            assert b"Tr\xe1\xba\xa7n" not in message.value and b"912345678" not in message.value


def test_a_grant_naming_a_personal_field_still_receives_it(tmp_path: Any) -> None:
    import yaml
    from ingest.domain import project

    raw = yaml.safe_load((REPO / "config" / "registry.yaml").read_text(encoding="utf-8"))
    grant = next(g for g in raw["grants"] if g["id"] == "sr-cong-an-pa-2026")
    grant["fields"] = [*grant["fields"], "reporter_phone"]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    registry = load_registry(path, REPO / "config" / "credentials.dev.yaml")
    acc = Ingestor(SchemaCatalog(registry)).decide(signed(report(reporter_phone="0912345678")), NOW)
    assert isinstance(acc, Accepted)
    (view,) = project(acc, tuple(g for g in registry.grants if g.id == "sr-cong-an-pa-2026"))
    assert view.record["reporter_phone"] == "+84912345678"
    assert "reporter_phone" not in orjson.loads(acc.record_json)


async def test_unauthenticated_input_goes_to_the_operators_topic_keyed_by_origin(
        parts: Any) -> None:  # noqa: F811
    pipeline, repo, sink = parts
    forged = signed(report(), secret="not-the-right-secret-000", origin="in:4:77")
    await pipeline.process([forged])
    assert on(sink, "ioc.ingest.rejected.v1") == []
    assert [m for m in sink.sent if ".rejections." in m.topic] == []
    (message,) = on(sink, "ioc.ingest.unauthenticated.v1")
    assert message.key == b"in:4:77"
    body = payload(message)
    assert body["unit"] is None and body["identity_verified"] is False
    assert body["code"] == "unauthenticated"
    (copy,) = on(sink, "ioc.ingest.quarantine.v1")
    assert (b"ioc-quarantine-unit", b"unknown") in [(k.encode(), v) for k, v in copy.headers]
    assert [(k.unit, k.dataset, k.code) for k in repo.counters] == [
        ("unknown", "unknown", "unauthenticated")]


async def test_unknown_dataset_is_counted_as_unknown(parts: Any) -> None:  # noqa: F811
    pipeline, repo, _ = parts
    await pipeline.process([signed({**report(), "dataset": "x" * 10_000}, origin="in:0:1")])
    assert [(k.unit, k.dataset, k.code) for k in repo.counters] == [
        ("xa-loc-an", "unknown", "unknown_dataset")]


def test_a_bug_is_an_internal_error_logged_without_payload(
        ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("Nguyễn Văn A 0912345678")

    monkeypatch.setattr(ingestor, "_submission", broken)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    inbound = signed(report(reporter_name="Nguyễn Văn A"), origin="in:0:9")
    inbound = Inbound(inbound.value, (*inbound.headers,
                                      ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode())),
                      inbound.origin)
    with capture_logs() as logs:
        rej = rejected(ingestor.decide(inbound, NOW))
    assert rej.code is Code.INTERNAL_ERROR
    (entry,) = logs
    assert entry["log_level"] == "error" and entry["trace_id"] == trace_id
    assert entry["error"] == "ValueError" and entry["origin"] == "in:0:9"
    assert "Nguyễn" not in repr(entry) and "0912345678" not in repr(entry)


def test_thousands_of_unknown_keys_make_a_rejection_the_broker_takes(ingestor: Ingestor) -> None:
    from ingest.messages import rejection_payload

    record = {"x" * 5000: 1, **report()["record"], **{f"k{i}": 0 for i in range(6000)}}
    inbound = signed({**report(), "record": record})
    rej = rejected(ingestor.decide(inbound, NOW))
    assert rej.code is Code.SCHEMA_VIOLATION and len(rej.problems) == 20
    assert all(len(p.field or "") <= 200 for p in rej.problems)
    assert any((p.field or "").startswith("x" * 100) for p in rej.problems)
    body = rejection_payload(rej, inbound, True)
    assert body["problems_total"] == 6001
    assert len(orjson.dumps(body)) < 64 * 1024      # far below the broker's 1 MB


def test_a_very_deep_document_is_malformed_not_an_internal_error(ingestor: Ingestor) -> None:
    deep = b'{"a":' * 1000 + b'"x\\":"' + b"}" * 1000
    assert rejected(ingestor.decide(signed(None, raw=deep), NOW)).code is Code.MALFORMED_JSON
