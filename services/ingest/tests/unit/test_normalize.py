"""Normalization of values as Vietnamese unit systems write them."""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ingest.domain import Code
from ingest.domain import normalize as n

HCM = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.mark.parametrize(("raw", "expected"), [
    ("1.000.000", 1_000_000), ("1,5", 1.5), ("12,5%", 12.5), ("1.234,5", 1234.5),
    ("1,234.5", 1234.5), ("1.5", 1.5), ("1 000 000", 1_000_000), ("\u00a01.500 ", 1500),
    ("-3", -3), (42, 42), (2.25, 2.25), ("0,75", 0.75),
])
def test_vietnamese_numbers(raw: object, expected: float) -> None:
    assert n.parse_number(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "1,2,3", "", True, None, float("nan"), "1..2"])
def test_not_numbers(raw: object) -> None:
    with pytest.raises(n.FieldProblem) as err:
        n.parse_number(raw)
    assert err.value.code is Code.WRONG_TYPE


def test_integer_rejects_fraction_but_accepts_integral_float() -> None:
    assert n.as_integer("2.000") == 2000
    assert n.as_integer(3.0) == 3
    with pytest.raises(n.FieldProblem):
        n.as_integer("1,5")


@pytest.mark.parametrize(("raw", "expected"), [
    ("28/11/2026 14:30", datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
    ("28/11/2026 14:30:15", datetime(2026, 11, 28, 7, 30, 15, tzinfo=UTC)),
    ("14h30 28/11/2026", datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
    ("28-11-2026 08:05", datetime(2026, 11, 28, 1, 5, tzinfo=UTC)),
    ("28/11/2026", datetime(2026, 11, 27, 17, 0, tzinfo=UTC)),          # local midnight
    ("2026-11-28T14:30:00", datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),  # naive ISO = local
    ("2026-11-28 14:30", datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
    ("2026-11-28T14:30:00+07:00", datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
    ("2026-11-28T07:30:00Z", datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
    (1795851000, datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
    (1795851000000, datetime(2026, 11, 28, 7, 30, tzinfo=UTC)),
])
def test_datetimes_become_aware_utc(raw: object, expected: datetime) -> None:
    result = n.as_datetime(raw, HCM)
    assert result == expected
    assert result.utcoffset() is not None and result.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", ["31/02/2026", "hôm qua", "28/11/26 14:30", "2026-13-01", [],
                                 "25:00 28/11/2026"])
def test_bad_datetimes(raw: object) -> None:
    with pytest.raises(n.FieldProblem):
        n.as_datetime(raw, HCM)


@pytest.mark.parametrize(("raw", "expected"), [
    ("28/11/2026", date(2026, 11, 28)), ("2026-11-28", date(2026, 11, 28)),
    ("1.11.2026", date(2026, 11, 1)), ("11/2026", date(2026, 11, 1)),
])
def test_dates(raw: str, expected: date) -> None:
    assert n.as_date(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("0912 345 678", "+84912345678"), ("0912.345.678", "+84912345678"),
    ("+84 912 345 678", "+84912345678"), ("84912345678", "+84912345678"),
    ("(0271) 3866 123", "+842713866123"), (912345678, "+84912345678"),
])
def test_phones_to_e164(raw: object, expected: str) -> None:
    assert n.as_phone(raw) == expected


@pytest.mark.parametrize("raw", ["12345", "0912 345", "số điện thoại", "+1 202"])
def test_invalid_phones(raw: str) -> None:
    with pytest.raises(n.FieldProblem) as err:
        n.as_phone(raw)
    assert err.value.code is Code.INVALID_PHONE


def test_text_is_nfc_and_trimmed() -> None:
    decomposed = unicodedata.normalize("NFD", "  Lộc   Thành ")
    assert decomposed != "Lộc Thành"
    assert n.as_text(decomposed, single_line=True, max_length=None) == "Lộc Thành"
    multi = n.as_text("  dòng 1  \r\n  dòng 2 ", single_line=False, max_length=None)
    assert multi == "dòng 1\n  dòng 2"


def test_text_too_long_counts_characters_not_bytes() -> None:
    assert n.as_text("Đường", single_line=True, max_length=5) == "Đường"
    with pytest.raises(n.FieldProblem) as err:
        n.as_text("Đường!", single_line=True, max_length=5)
    assert err.value.code is Code.TOO_LONG


@pytest.mark.parametrize(("raw", "expected"), [
    ({"lat": 11.85, "lon": 106.6}, (11.85, 106.6)), ("11.85,106.6", (11.85, 106.6)),
    ("11,85;106,60", (11.85, 106.6)), ([11.85, 106.6], (11.85, 106.6)),
    ({"latitude": "11,85", "longitude": "106,6"}, (11.85, 106.6)), ("11.85 106.6", (11.85, 106.6)),
])
def test_geo_forms(raw: object, expected: tuple[float, float]) -> None:
    assert n.as_geo(raw) == expected


def test_geo_outside_district() -> None:
    bbox = (11.65, 106.45, 12.05, 106.75)
    n.check_in_area(12.08, 106.6, bbox, 0.05)   # near the border: accepted
    with pytest.raises(n.FieldProblem) as err:
        n.check_in_area(10.78, 106.70, bbox, 0.05)   # Ho Chi Minh City
    assert err.value.code is Code.OUTSIDE_DISTRICT


@pytest.mark.parametrize(("raw", "expected"), [
    ("Môi trường", "moi-truong"), ("MOI TRUONG", "moi-truong"), ("moi_truong", "moi-truong"),
    ("Khẩn cấp", "khan-cap"), ("  An ninh trật tự ", "an-ninh-trat-tu"),
])
def test_enum_keys_are_tolerant(raw: str, expected: str) -> None:
    assert n.enum_key(raw) == expected


def test_booleans() -> None:
    assert n.as_boolean("Có") is True
    assert n.as_boolean("không") is False
    with pytest.raises(n.FieldProblem):
        n.as_boolean("maybe")


def test_email_domain_lowercased() -> None:
    assert n.as_email(" Can.Bo@LocNinh.GOV.vn ") == "Can.Bo@locninh.gov.vn"
    with pytest.raises(n.FieldProblem):
        n.as_email("không-phải-email")


@given(st.text(max_size=60), st.booleans())
def test_text_normalizer_agrees_with_clean_text(raw: str, single_line: bool) -> None:
    # The hot-path normalizer skips work (NFC of ASCII, collapsing collapsed text): same result.
    normalize = n.text_normalizer(single_line=single_line, max_length=None)
    assert normalize(raw) == n.clean_text(raw, single_line=single_line)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.none() | st.timezones()), st.sampled_from(["seconds", "auto"]))
def test_iso_datetimes_parse_alike_with_or_without_surrounding_space(moment: datetime,
                                                                    spec: str) -> None:
    # Plain ISO text takes a shortcut; with a leading space it takes the general path.
    text = moment.isoformat(timespec=spec)
    assert n.as_datetime(text, HCM) == n.as_datetime(f" {text} ", HCM)
