"""Grant projection, record shaping, reconciliation figures, the share log's chain."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from ioc_shared import grants
from ioc_shared.platform.security import KafkaSecurity, KafkaSecurityError
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import Registry, parse_registry
from sync_province.domain import (
    GENESIS,
    Figures,
    Rule,
    Skipped,
    Stream,
    chain_hash,
    day_bounds_ms,
    local_day,
    make_batch,
    retention_at_risk,
    shape,
    verify_chain,
)
from sync_province.http_target import _retry_after
from sync_province.sharelog import checkpoint_valid, load_or_create_key, public_hex, sign_checkpoint

PROVINCE = "ioc-binh-phuoc-sync"
REPORTS = "phan-anh-hien-truong"


def registry(edit: Any = None) -> Registry:
    raw = yaml.safe_load((REPO_ROOT / "config" / "registry.yaml").read_text(encoding="utf-8"))
    if edit:
        edit(raw)
    return parse_registry(raw, "test")


def _grant(raw: dict[str, Any], **changes: Any) -> None:
    g = next(g for g in raw["grants"] if g["id"] == "prov-pa-ioc-binh-phuoc")
    g.update(changes)


RECORD = {"record_id": "r1", "title": "Rác", "commune": "xa-loc-an", "reporter_name": "Nguyễn Văn A",
          "reporter_phone": "0912345678", "reporter_ref": "p-1", "unknown": 1}


def test_default_grant_leaves_out_personal_and_unknown_fields() -> None:
    out = grants.project(registry(), PROVINCE, REPORTS, RECORD)
    assert out == {"record_id": "r1", "title": "Rác", "commune": "xa-loc-an"}


def test_a_grant_naming_fields_gives_exactly_those_personal_included() -> None:
    reg = registry(lambda raw: _grant(raw, fields=["record_id", "reporter_phone"]))
    assert grants.project(reg, PROVINCE, REPORTS, RECORD) == {"record_id": "r1",
                                                               "reporter_phone": "0912345678"}


def test_no_grant_expired_grant_or_unknown_principal_give_nothing() -> None:
    assert grants.project(registry(), PROVINCE, "canh-bao-dich-vu-cong", RECORD) is None
    assert grants.project(registry(), "nobody", REPORTS, RECORD) is None
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    expired = registry(lambda raw: _grant(raw, expires_at=past))
    assert grants.project(expired, PROVINCE, REPORTS, RECORD) is None
    publish_only = registry(lambda raw: _grant(raw, actions=["publish"]))
    assert grants.project(publish_only, PROVINCE, REPORTS, RECORD) is None


def test_several_grants_give_the_union_and_name_every_grant() -> None:
    def two(raw: dict[str, Any]) -> None:
        _grant(raw, fields=["record_id"])
        raw["grants"].append({"id": "prov-pa-2", "unit": "ioc-binh-phuoc", "dataset": REPORTS,
                              "actions": ["read"], "fields": ["title"]})
    found = grants.projection(registry(two), PROVINCE, REPORTS)
    assert found is not None and found.fields == {"record_id", "title"}
    assert found.grant_ids == ("prov-pa-2", "prov-pa-ioc-binh-phuoc")


class Rec:
    def __init__(self, offset: int, value: dict[str, Any] | bytes, headers: list[tuple[str, bytes]],
                 key: bytes = b"xa-loc-an/r1") -> None:
        self.topic, self.partition, self.offset = "ns.ioc.data.x.v1", 2, offset
        self.timestamp = 1_700_000_000_000
        self.key = key
        self.value = value if isinstance(value, bytes) else orjson.dumps(value)
        self.headers = headers


STREAM = Stream(REPORTS, "ns.ioc.data.phan-anh-hien-truong.v1", "ioc.data.phan-anh-hien-truong.v1", REPORTS)
HEADERS = [("ioc-event-id", b"e1"), ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
           ("ioc-producer", b"ingest"), ("ioc-signature", b"secret-ish")]


def _envelope(record: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": "e1", "type": "ingest.record.accepted", "source_unit": "xa-loc-an",
            "payload": {"dataset": REPORTS, "record_id": "r1", "record": record,
                        "provenance": {"principal": "xa-loc-an-system"}}}


def _rule(reg: Registry | None = None) -> Rule:
    return Rule(grants.projection(reg or registry(), PROVINCE, REPORTS), "ingest")


def test_shape_projects_the_record_and_adds_provenance() -> None:
    out = shape(Rec(7, _envelope(RECORD), HEADERS), STREAM, _rule(), "loc-ninh")
    assert not isinstance(out, Skipped)
    headers = dict(out.headers)
    assert headers["ioc-origin-ioc"] == b"loc-ninh" and headers["ioc-origin-offset"] == b"7"
    assert headers["ioc-origin-topic"] == b"ioc.data.phan-anh-hien-truong.v1"
    assert headers["traceparent"].startswith(b"00-") and "ioc-signature" not in headers
    payload = orjson.loads(out.value)["payload"]
    assert payload["record"] == {"record_id": "r1", "title": "Rác", "commune": "xa-loc-an"}
    assert "provenance" not in payload and out.key == b"xa-loc-an/r1" and out.partition == 2


def test_shape_skips_mirrored_foreign_ungranted_and_undecodable_records() -> None:
    mirrored = [*HEADERS, ("ioc-origin-ioc", b"other")]
    assert shape(Rec(1, _envelope(RECORD), mirrored), STREAM, _rule(), "loc-ninh") == Skipped("mirrored")
    foreign = [h for h in HEADERS if h[0] != "ioc-producer"]
    assert shape(Rec(1, _envelope(RECORD), foreign), STREAM, _rule(), "loc-ninh") == Skipped("not-ingest")
    assert shape(Rec(1, _envelope(RECORD), HEADERS), STREAM, Rule(None), "x") == Skipped("not-granted")
    assert shape(Rec(1, b"{not json", HEADERS), STREAM, _rule(), "x") == Skipped("undecodable")


def test_event_topics_forward_only_the_named_types_untouched() -> None:
    events = Stream("ioc.reporting.events.v1", "ns.ioc.reporting.events.v1", "ioc.reporting.events.v1", None)
    rule = Rule(None, forwarded_types=frozenset({"report.published"}))
    published = {"event_id": "e2", "type": "report.published", "payload": {"period": "2026-11"}}
    out = shape(Rec(1, published, [("ioc-event-id", b"e2")]), events, rule, "loc-ninh")
    assert not isinstance(out, Skipped) and orjson.loads(out.value) == published
    draft = {**published, "type": "report.draft-saved"}
    assert shape(Rec(2, draft, []), events, rule, "loc-ninh") == Skipped("not-forwarded")


def test_batch_counts_skips_and_keeps_the_source_range() -> None:
    recs = [Rec(10, _envelope(RECORD), HEADERS), Rec(11, _envelope(RECORD), HEADERS[:2])]
    batch = make_batch(recs, STREAM, _rule(), "loc-ninh")
    assert (batch.first_offset, batch.next_offset) == (10, 12)
    assert len(batch.outgoing) == 1 and batch.skipped == {"not-ingest": 1}
    assert batch.grant_ids == ("prov-pa-ioc-binh-phuoc",) and "reporter_name" not in batch.fields


def test_figures_do_not_depend_on_order_or_repeats() -> None:
    a = Figures.of(["e1", "e2", "e3"])
    assert a == Figures.of(["e3", "e1", "e2", "e1"]) and a.count == 3
    assert a != Figures.of(["e1", "e2"]) and a != Figures.of(["e1", "e2", "e4"])


def test_local_day_is_asia_ho_chi_minh() -> None:
    # 2026-11-30 17:30 UTC is 2026-12-01 00:30 in Vietnam.
    ms = int(datetime(2026, 11, 30, 17, 30, tzinfo=UTC).timestamp() * 1000)
    assert local_day(ms).isoformat() == "2026-12-01"
    start, end = day_bounds_ms(local_day(ms))
    assert start <= ms < end and end - start == 86_400_000


def _chain(n: int) -> list[dict[str, Any]]:
    entries, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = {"seq": seq, "at": "2026-12-01T00:00:00+00:00", "event_ids": [f"e{seq}"],
                 "prev_hash": prev}
        entry["entry_hash"] = chain_hash(prev, entry)
        entries.append(entry)
        prev = entry["entry_hash"]
    return entries


def test_chain_verifies_and_edits_or_removals_are_found() -> None:
    entries = _chain(4)
    assert verify_chain(entries) == []
    edited = [dict(e) for e in entries]
    edited[1]["event_ids"] = ["e9"]
    assert [p.seq for p in verify_chain(edited)] == [2]
    removed = entries[:1] + entries[2:]
    assert {p.seq for p in verify_chain(removed)} == {3}


def test_checkpoint_signature_verifies_only_unchanged_and_with_the_trusted_key(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k.pem")
    assert load_or_create_key(tmp_path / "k.pem").private_bytes_raw() == key.private_bytes_raw()
    cp = sign_checkpoint(key, "loc-ninh", 5, "ab" * 32)
    assert checkpoint_valid("loc-ninh", cp, public_hex(key))
    assert not checkpoint_valid("loc-ninh", {**cp, "head_seq": 6}, public_hex(key))
    other = load_or_create_key(tmp_path / "other.pem")
    assert not checkpoint_valid("loc-ninh", cp, public_hex(other))
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0


def test_retention_risk_and_retry_after() -> None:
    assert retention_at_risk(1_000, 10_000, 2_000, now_ms=9_500)
    assert not retention_at_risk(1_000, 10_000, 2_000, now_ms=5_000)
    assert not retention_at_risk(None, 10_000, 2_000, now_ms=99_000)
    assert not retention_at_risk(1_000, -1, 2_000, now_ms=99_000)      # infinite retention
    assert _retry_after("3") == 3.0 and _retry_after(None) is None and _retry_after("soon") is None


def test_security_refuses_clear_text_and_builds_sasl_ssl_kwargs(tmp_path: Path) -> None:
    # pydantic reports the validator's KafkaSecurityError (a ValueError) as a ValidationError
    with pytest.raises(ValueError, match="sends data in clear"):
        KafkaSecurity(protocol="PLAINTEXT")
    with pytest.raises(ValueError, match="needs a SASL user"):
        KafkaSecurity(sasl_user=None, sasl_password="x")        # type: ignore[arg-type]
    assert issubclass(KafkaSecurityError, ValueError)
    assert KafkaSecurity(protocol="PLAINTEXT", allow_plaintext=True).client_kwargs() == {
        "security_protocol": "PLAINTEXT"}
    (tmp_path / "pw").write_text("s3cret\n")
    kwargs = KafkaSecurity(sasl_user="sync", sasl_password_file=tmp_path / "pw").client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "sync" and kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["ssl_context"].check_hostname


def test_retries_wait_at_least_retry_after_and_back_off_otherwise() -> None:
    from sync_province.pipeline import Pipeline
    from sync_province.targets import Unreachable
    from tenacity import RetryCallState

    pipeline = Pipeline.__new__(Pipeline)
    pipeline._max_wait = 30.0
    pipeline._not_before = 0.0

    def state(exc: Exception, attempt: int) -> RetryCallState:
        s = RetryCallState(None, None, (), {})
        s.attempt_number = attempt
        s.set_exception((type(exc), exc, None))
        return s

    assert pipeline._wait(state(Unreachable("http: 429", 2.0), 1)) >= 2.0
    assert pipeline._wait(state(Unreachable("http: 429", 2.0), 1)) <= 3.0
    # Retry-After holds back every lane of the pipeline, not only the throttled one.
    assert pipeline._not_before >= time.monotonic() + 1.9
    early, late = (pipeline._wait(state(Unreachable("network"), n)) for n in (1, 8))
    assert early < 1.0 and 10.0 <= late <= 30.5


def test_only_answers_that_blame_the_batch_park_it() -> None:
    from sync_province.http_target import BATCH_AT_FAULT

    assert 400 in BATCH_AT_FAULT and 422 in BATCH_AT_FAULT
    assert not {401, 403, 404, 429} & BATCH_AT_FAULT


def test_registry_watcher_reloads_on_change_or_sighup_and_fails_closed(tmp_path: Path) -> None:
    import os

    from sync_province.grants_watch import RegistryWatcher

    path = tmp_path / "registry.yaml"
    path.write_text((REPO_ROOT / "config" / "registry.yaml").read_text(encoding="utf-8"))
    watcher = RegistryWatcher(path, None, PROVINCE)
    assert watcher.projection(REPORTS) is not None and not watcher.check()
    path.write_text("centre: [not, a, registry]\n")
    os.utime(path, (1, 1))
    assert watcher.check() and watcher.error and watcher.projection(REPORTS) is None
    path.write_text((REPO_ROOT / "config" / "registry.yaml").read_text(encoding="utf-8"))
    assert watcher.check() and watcher.projection(REPORTS) is not None
    assert not watcher.check()      # unchanged file: nothing to do ...
    watcher.force()                 # ... unless SIGHUP asks
    assert watcher.check() and watcher.generation == 4
