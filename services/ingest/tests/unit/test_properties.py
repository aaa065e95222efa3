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


# --- hostile text in every field of every dataset ---------------------------------

# Any code point, NUL and lone surrogates included (hypothesis excludes surrogates by default).
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                   max_size=40)
hostile_values = any_text | json_values | st.sampled_from(
    ["\x00", "PA-\x001", "\u202eabc", "\u200b", "\x1b[31m", "\ud800", "x" * 10_000])


def _datasets_and_fields() -> list[tuple[str, int, tuple[str, ...]]]:
    from ioc_shared.registry import load_registry

    from .conftest import REPO
    registry = load_registry(REPO / "config" / "registry.yaml")
    return [(ds.id, s.version, tuple(s.fields)) for ds in registry.datasets.values()
            for s in ds.schemas]


DATASET_SCHEMAS = _datasets_and_fields()


def _raw(body: Any, ascii_only: bool) -> bytes:
    """JSON as a client might write it, lone surrogates included (escaped, or as the
    invalid UTF-8 a careless encoder writes)."""
    import json
    text = json.dumps(body, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ascii_only=st.booleans())
def test_hostile_text_in_every_field_of_every_dataset(ingestor: Ingestor, data: st.DataObject,
                                                      ascii_only: bool) -> None:
    from ingest.domain import Code
    from ioc_shared.contracts.hygiene import find_forbidden

    dataset, version, fields = data.draw(st.sampled_from(DATASET_SCHEMAS))
    record = {name: data.draw(hostile_values) for name in fields
              if data.draw(st.booleans())}
    envelope_field = data.draw(st.sampled_from(["dataset", "event_id", "schema_version", None]))
    body: dict[str, Any] = {"dataset": dataset, "schema_version": version, "record": record}
    if envelope_field is not None:
        body[envelope_field] = data.draw(hostile_values)
    decision = ingestor.decide(signed(None, raw=_raw(body, ascii_only), origin="t:0:1"), NOW)
    exactly_one(decision)
    assert not (isinstance(decision, Rejected) and decision.code is Code.INTERNAL_ERROR)
    if isinstance(decision, Accepted):
        # Nothing forbidden reaches a canonical record, its key or subject.
        assert find_forbidden(orjson.loads(decision.record_json)) is None
        assert len(decision.record_id) <= 128 and find_forbidden(decision.record_id) is None
    else:
        for text in (decision.dataset, decision.record_id, decision.client_event_id):
            assert text is None or (len(text) <= 200 and find_forbidden(text) is None)
        for problem in decision.problems:
            assert find_forbidden(problem.message_vi) is None and len(problem.field or "") <= 200
    # The next valid record of another unit is not affected.
    after = ingestor.decide(signed(report(), "xa-loc-thanh-huyen-system", origin="t:0:2"), NOW)
    assert isinstance(after, Accepted)


@settings(max_examples=500, deadline=None)
@given(text=any_text)
def test_the_byte_prefilter_misses_no_forbidden_character(text: str) -> None:
    """`may_hold_forbidden` (one scan of the raw bytes) answers False only when
    `find_forbidden` would find nothing, whichever way the JSON was written."""
    import json

    from ingest.domain.submission import may_hold_forbidden
    from ioc_shared.contracts.hygiene import is_clean

    if not is_clean(text):
        assert may_hold_forbidden(json.dumps(text, ensure_ascii=True).encode())
        assert may_hold_forbidden(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):   # orjson cannot write those
            assert may_hold_forbidden(orjson.dumps(text))
