"""Property-based: any bytes, any JSON, any headers -> exactly one decision, never an exception."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest.domain import Accepted, Inbound, Ingestor, Rejected

from .conftest import NOW, report, signed

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25)
field_names = st.sampled_from(["record_id", "reported_at", "commune", "category", "priority",
                               "channel", "title", "description", "address", "location",
                               "reporter_name", "reporter_phone", "unit", "other"])
fuzzy_records = st.dictionaries(field_names, json_values | st.text(max_size=40), max_size=12)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exactly_one(decision: object) -> None:
    assert isinstance(decision, Accepted) != isinstance(decision, Rejected)
    if isinstance(decision, Rejected):
        # The safety net in `decide` turns bugs into rejections; a property test must see them.
        assert "internal_error" not in decision.extra, decision.extra
        assert decision.problems and all(p.message_vi for p in decision.problems)
    else:
        assert isinstance(decision, Accepted)
        orjson.dumps(decision.record)   # canonical records are always serializable


@SETTINGS
@given(raw=st.binary(max_size=2048))
def test_arbitrary_signed_bytes(ingestor: Ingestor, raw: bytes) -> None:
    exactly_one(ingestor.decide(signed(None, raw=raw), NOW))


@SETTINGS
@given(body=json_values)
def test_arbitrary_signed_json(ingestor: Ingestor, body: Any) -> None:
    exactly_one(ingestor.decide(signed(body), NOW))


@SETTINGS
@given(record=fuzzy_records, version=st.sampled_from([1, 2, 3, "2", -1]))
def test_arbitrary_records_of_a_real_dataset(ingestor: Ingestor, record: dict[str, Any],
                                             version: Any) -> None:
    body = {"dataset": "phan-anh-hien-truong", "schema_version": version, "record": record}
    exactly_one(ingestor.decide(signed(body), NOW))


@SETTINGS
@given(headers=st.lists(st.tuples(st.sampled_from(["ioc-principal", "ioc-signature", "x"]),
                                  st.binary(max_size=70)), max_size=4),
       value=st.binary(max_size=200) | st.none())
def test_arbitrary_headers_never_authenticate(ingestor: Ingestor, headers: list[tuple[str, bytes]],
                                              value: bytes | None) -> None:
    decision = ingestor.decide(Inbound(value=value, headers=tuple(headers), origin="t:0:0"), NOW)
    assert isinstance(decision, Rejected)


@SETTINGS
@given(title=st.text(min_size=1, max_size=200).filter(lambda t: t.strip()))
def test_valid_records_survive_any_title(ingestor: Ingestor, title: str) -> None:
    decision = ingestor.decide(signed(report(title=title)), NOW)
    exactly_one(decision)


@given(moment=st.datetimes(timezones=st.timezones()))
def test_iso_utc_is_the_isoformat_of_the_utc_time(moment: Any) -> None:
    from datetime import UTC

    from ingest.domain.normalize import iso_utc

    assert iso_utc(moment) == moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
