"""Whole-submission decisions: identity, permission, versions, schema, upgrade, names."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson
import pytest
from ingest.domain import Accepted, Code, Inbound, Ingestor, Rejected
from ioc_shared.registry import Registry

from .conftest import NOW, report, signed


def accepted(decision: object) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def rejected(decision: object) -> Rejected:
    assert isinstance(decision, Rejected), decision
    return decision


def field_codes(decision: object) -> dict[str | None, Code]:
    return {p.field: p.code for p in rejected(decision).problems}


def test_valid_record_is_normalized(ingestor: Ingestor) -> None:
    acc = accepted(ingestor.decide(signed(report(
        title="  Rác   thải ", reporter_phone="0912 345 678", location="11,85;106,60",
        category="Môi trường")), NOW))
    assert acc.unit == "xa-loc-an"
    assert acc.record["title"] == "Rác thải"
    assert acc.record["reporter_phone"] == "+84912345678"
    assert acc.record["location"] == {"lat": 11.85, "lon": 106.6}
    assert acc.record["category"] == "moi-truong"
    assert acc.record["commune"] == "xa-loc-an"
    assert acc.record["reported_at"] == "2026-11-28T07:30:00Z"
    assert acc.canonical_version == 2


def test_identity_comes_from_signature_not_payload(ingestor: Ingestor) -> None:
    body = report(unit="xa-loc-thanh-nang", source_unit="ubnd-huyen")
    acc = accepted(ingestor.decide(signed(body), NOW))
    assert acc.unit == "xa-loc-an"
    assert "unit" not in acc.record and "source_unit" not in acc.record


def test_event_id_is_deterministic_and_content_sensitive(ingestor: Ingestor) -> None:
    first = accepted(ingestor.decide(signed(report(), origin="a:0:1"), NOW))
    again = accepted(ingestor.decide(signed(report(), origin="a:0:2"), NOW))
    revised = accepted(ingestor.decide(signed(report(priority="khan-cap")), NOW))
    assert first.event_id == again.event_id
    assert revised.event_id != first.event_id


@pytest.mark.parametrize(("name", "expected"), [
    ("Lộc Thành", "xa-loc-thanh-huyen"), ("Lộc Thạnh", "xa-loc-thanh-nang"),
    ("xã Lộc Thạnh", "xa-loc-thanh-nang"), ("UBND xã Lộc Thành", "xa-loc-thanh-huyen"),
    ("Lộc Hoà", "xa-loc-hoa"), ("Lộc Hòa", "xa-loc-hoa"), ("LỘC HÒA", "xa-loc-hoa"),
    ("TT. Lộc Ninh", "tt-loc-ninh"), ("Thị trấn Lộc Ninh", "tt-loc-ninh"),
    ("Loc Khanh", "xa-loc-khanh"), ("Loc Dien", "xa-loc-dien"), ("xa-loc-an", "xa-loc-an"),
])
def test_commune_names_and_aliases(ingestor: Ingestor, name: str, expected: str) -> None:
    for form in ("NFC", "NFD"):
        value = unicodedata.normalize(form, name)
        acc = accepted(ingestor.decide(signed(report(commune=value)), NOW))
        assert acc.record["commune"] == expected


@pytest.mark.parametrize("name", ["Loc Thanh", "Lộc Xyz", "Phòng Nội vụ", "Hà Nội"])
def test_ambiguous_or_unknown_communes(ingestor: Ingestor, name: str) -> None:
    decision = ingestor.decide(signed(report(commune=name)), NOW)
    assert rejected(decision).code is Code.SCHEMA_VIOLATION
    assert field_codes(decision)["commune"] is Code.UNKNOWN_COMMUNE


def test_schema_violations_name_every_field(ingestor: Ingestor) -> None:
    body = report(priority="siêu gấp", title="x" * 201, reporter_phone="123", location="10.7,106.7",
                  colour="đỏ")
    del body["record"]["channel"]
    decision = ingestor.decide(signed(body), NOW)
    rej = rejected(decision)
    assert rej.code is Code.SCHEMA_VIOLATION
    assert rej.unit == "xa-loc-an" and rej.record_id == "PA-1"
    assert field_codes(decision) == {
        "priority": Code.NOT_IN_ENUM, "title": Code.TOO_LONG, "reporter_phone": Code.INVALID_PHONE,
        "location": Code.OUTSIDE_DISTRICT, "colour": Code.UNKNOWN_FIELD, "channel": Code.MISSING}
    for problem in rej.problems:
        assert problem.expected
        assert problem.message_vi.startswith(f"Trường '{problem.field}'")


def test_future_and_absurd_timestamps(ingestor: Ingestor) -> None:
    future = rejected(ingestor.decide(signed(report(reported_at="2026-11-29T09:00:00Z")), NOW))
    assert future.code is Code.FUTURE_TIMESTAMP
    absurd = rejected(ingestor.decide(signed(report(reported_at="1970-01-02")), NOW))
    assert absurd.code is Code.ABSURD_TIMESTAMP


def test_deadlines_may_lie_in_the_future(registry: Registry, ingestor: Ingestor) -> None:
    body = {"dataset": "ho-so-dich-vu-cong", "schema_version": 1, "record": {
        "record_id": "HS-1", "procedure": "Cấp giấy phép xây dựng", "handling_unit": "Phòng KT-HT",
        "received_at": "27/11/2026 08:00", "due_at": "15/12/2026 17:00", "status": "Đang xử lý",
        "fee": "1.500.000"}}
    acc = accepted(ingestor.decide(signed(body), NOW))
    assert acc.record["handling_unit"] == "phong-kt-ht"
    assert acc.record["fee"] == 1_500_000
    assert acc.record["status"] == "dang-xu-ly"


def test_upgrade_v1_to_v2_renames_and_defaults(ingestor: Ingestor) -> None:
    body = report(location_text="Ấp 3, gần chợ")
    body["schema_version"] = 1
    for field in ("priority", "channel"):
        del body["record"][field]
    acc = accepted(ingestor.decide(signed(body), NOW))
    assert acc.source_version == 1 and acc.canonical_version == 2
    assert acc.record["address"] == "Ấp 3, gần chợ"
    assert "location_text" not in acc.record
    assert acc.record["priority"] == "binh-thuong" and acc.record["channel"] == "ung-dung"


def test_v1_record_with_v2_only_field_is_rejected(ingestor: Ingestor) -> None:
    body = report()
    body["schema_version"] = 1   # priority and channel do not exist in v1
    assert field_codes(ingestor.decide(signed(body), NOW)) == {
        "priority": Code.UNKNOWN_FIELD, "channel": Code.UNKNOWN_FIELD}


@pytest.mark.parametrize(("body", "code"), [
    ({**report(), "dataset": "khong-co"}, Code.UNKNOWN_DATASET),
    ({**report(), "schema_version": 7}, Code.UNKNOWN_SCHEMA_VERSION),
    ({**report(), "dataset": "chi-so-y-te"}, Code.NOT_PERMITTED),
    ({"dataset": "phan-anh-hien-truong", "record": {}}, Code.MALFORMED_SUBMISSION),
    ([1, 2, 3], Code.MALFORMED_SUBMISSION),
    ({**report(), "event_id": 17}, Code.MALFORMED_SUBMISSION),
])
def test_submission_level_rejections(ingestor: Ingestor, body: Any, code: Code) -> None:
    rej = rejected(ingestor.decide(signed(body), NOW))
    assert rej.code is code
    assert rej.unit == "xa-loc-an"


def test_owner_may_publish_without_grant(ingestor: Ingestor) -> None:
    body = {"dataset": "chi-so-y-te", "schema_version": 1, "record": {
        "record_id": "YT-1", "period_start": "23/11/2026", "commune": "Lộc Tấn",
        "indicator": "Ca sốt xuất huyết", "value": "12"}}
    acc = accepted(ingestor.decide(signed(body, "trung-tam-y-te-system"), NOW))
    assert acc.record["indicator"] == "ca-sot-xuat-huyet" and acc.record["value"] == 12


def test_bad_signature_is_unauthenticated_and_addressed_to_nobody(ingestor: Ingestor) -> None:
    rej = rejected(ingestor.decide(signed(report(), secret="not-the-right-secret-000"), NOW))
    assert rej.code is Code.UNAUTHENTICATED
    # Never the claimed unit: anyone could flood its feed by claiming to be it.
    assert rej.unit is None and rej.principal is None and rej.extra["identity_verified"] is False


def test_missing_headers_and_unknown_principal(ingestor: Ingestor) -> None:
    bare = Inbound(value=orjson.dumps(report()), headers=(), origin="t:0:1")
    assert rejected(ingestor.decide(bare, NOW)).code is Code.UNAUTHENTICATED
    stranger = Inbound(value=b"{}", origin="t:0:2",
                       headers=(("ioc-principal", b"ke-la"), ("ioc-signature", b"0" * 64)))
    assert rejected(ingestor.decide(stranger, NOW)).code is Code.UNKNOWN_UNIT


@pytest.mark.parametrize(("raw", "code"), [
    (b"\xff\xfe\x00garbage", Code.UNDECODABLE), (b"{not json", Code.MALFORMED_JSON),
    (b"", Code.MALFORMED_JSON), (b"x" * (256 * 1024 + 1), Code.TOO_LARGE),
])
def test_bytes_level_rejections(ingestor: Ingestor, raw: bytes, code: Code) -> None:
    assert rejected(ingestor.decide(signed(None, raw=raw), NOW)).code is code


def test_dataset_record_size_limit(ingestor: Ingestor) -> None:
    # 64 KiB per record for this dataset, below the 256 KiB message limit of this ingestor.
    body = report(description="a" * 3000, address="b" * 10)
    body["padding"] = "p" * 70_000
    assert rejected(ingestor.decide(signed(body), NOW)).code is Code.TOO_LARGE
