"""The status and drift payloads sync-province publishes match their models in
`sync_province.contract` (the AsyncAPI document's schemas): built by the real code
(`StatusReporter.snapshot`, `Pipeline.lag`, `Pipeline.reconcile`) over in-memory state."""

from __future__ import annotations

import time
from datetime import date
from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from sync_province import status
from sync_province.contract import DRIFT_TYPE, MESSAGES, STATUS_TYPE, check_payload
from sync_province.domain import Stream
from sync_province.pipeline import Pipeline, Progress
from sync_province.targets import LinkHealth, Unreachable

STREAM = Stream("phan-anh-hien-truong", "ioc.data.phan-anh-hien-truong.v1",
                "ioc.data.phan-anh-hien-truong.v1", "phan-anh-hien-truong")


def _pipeline(failing: bool) -> Any:
    progress = Progress()
    first = progress.of(STREAM.source_topic, 0)
    first.next_offset, first.end_offset, first.last_synced_at = 5, 9, time.time()
    first.oldest_unsynced_ms = int(time.time() * 1000) - 4000
    progress.of(STREAM.source_topic, 1).end_offset = 2
    progress.sent[STREAM.name] = 5
    progress.skipped[STREAM.name] = {"not_granted": 1}
    health = LinkHealth()
    if failing:
        health.failed("timeout")
    fake = SimpleNamespace(progress=progress, _by_topic={STREAM.source_topic: STREAM},
                           target=SimpleNamespace(name="http" if failing else "kafka",
                                                  health=health),
                           streams=[STREAM], paused={STREAM.name} if failing else set(),
                           registry_generation=3)
    fake.lag = lambda: Pipeline.lag(fake)  # type: ignore[arg-type]
    return fake


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(row))   # as it goes on the topic
    return loaded


def test_status_rows_match_their_model() -> None:
    registry = CollectorRegistry()
    reporter = status.StatusReporter(
        [_pipeline(False), _pipeline(True)], district_bootstrap="x", district="loc-ninh",
        metrics=registry, publish=None, unreachable_after_s=30,  # type: ignore[arg-type]
        retention_margin_s=60)
    reporter.retention_ms[STREAM.source_topic] = 1000
    rows = reporter.snapshot()
    assert len(rows) == 2 and status.STATUS_TYPE == STATUS_TYPE and status.DRIFT_TYPE == DRIFT_TYPE
    problems = [p for r in rows if (p := check_payload(STATUS_TYPE, _payload(r)))]
    assert not problems, "\n".join(problems)
    # The same progress, as counters on /metrics (conventional names: `_total`).
    labels = {"target": "kafka", "stream": STREAM.name}
    assert registry.get_sample_value("sync_province_records_sent_total", labels) == 5
    assert registry.get_sample_value("sync_province_records_skipped_total",
                                     {**labels, "reason": "not_granted"}) == 1
    assert registry.get_sample_value("sync_province_failures_total",
                                     {"target": "http", "reason": "timeout"}) == 1
    assert registry.get_sample_value("sync_province_records_sent", labels) is None


async def test_drift_results_match_their_model() -> None:
    ours = [SimpleNamespace(event_id=f"e-{i}") for i in range(3)]   # what reconcile reads

    async def read_range(*_: Any) -> list[Any]:
        return [SimpleNamespace(outgoing=ours)]

    async def day_event_ids(*_: Any) -> set[str]:
        return {"e-0", "e-9"}

    async def resend(*_: Any, **__: Any) -> dict[str, int]:
        return {"resent": 2}

    async def unreachable(*_: Any) -> set[str]:
        raise Unreachable("no answer")

    fake = SimpleNamespace(read_range=read_range, resend=resend,
                           target=SimpleNamespace(name="http", day_event_ids=day_event_ids))
    results = [await Pipeline.reconcile(fake, STREAM, date(2026, 11, 30))]  # type: ignore[arg-type]
    fake.target.day_event_ids = unreachable
    results.append(await Pipeline.reconcile(fake, STREAM, date(2026, 11, 30)))  # type: ignore[arg-type]
    assert "error" in results[1] and results[0]["repaired"] == 2
    problems = [p for r in results if (p := check_payload(DRIFT_TYPE, _payload(r)))]
    assert not problems, "\n".join(problems)
    assert set(MESSAGES["ioc.sync-province.status.v1"]) == {STATUS_TYPE, DRIFT_TYPE}


def test_a_payload_that_drifted_is_caught() -> None:
    drift = {"stream": "s", "day": "2026-11-30", "error": "x"}
    assert check_payload(DRIFT_TYPE, drift) is None
    assert check_payload(DRIFT_TYPE, {**drift, "missing": "3"}) is not None
    assert check_payload(DRIFT_TYPE, {**drift, "surprise": 1}) is not None
    assert check_payload(STATUS_TYPE, drift) is not None


def _province_schema(topic: str) -> dict[str, Any]:
    from ioc_shared.contracts.asyncapi import asyncapi_document, default_registry

    document = asyncapi_document(default_registry())
    channel = next(c for c in document["channels"].values() if c["address"] == topic)
    assert channel["servers"] == [{"$ref": "#/servers/province"}]
    [ref] = channel["messages"].values()
    found: dict[str, Any] = document["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
    return found


def test_what_leaves_for_the_province_matches_the_document() -> None:
    """A canonical record shaped as sync-province sends it (`domain.shape`, the registry's
    grants to the province): value and headers as the province channel documents them."""
    import jsonschema
    from ioc_shared.grants import projection
    from ioc_shared.platform.settings import REPO_ROOT
    from ioc_shared.registry import load_registry
    from sync_province.contract import province_defaults
    from sync_province.domain import Rule, shape

    prefix, principal, _ = province_defaults()
    registry = load_registry(REPO_ROOT / "config" / "registry.yaml")
    found = projection(registry, principal, STREAM.name)
    assert found is not None
    envelope = {"envelope_version": 1, "event_id": "0193a0c4-7b7e-7000-8000-000000000001",
                "type": "ingest.record.accepted", "schema_version": 1,
                "source_unit": "xa-loc-an", "subject": "xa-loc-an/PA-1",
                "occurred_at": "2026-11-30T01:00:00Z", "produced_at": "2026-11-30T01:00:01Z",
                "correlation_id": None, "causation_id": None,
                "payload": {"dataset": STREAM.name, "schema_version": 2, "record_id": "PA-1",
                            "record": {"record_id": "PA-1", "reported_at": "2026-11-30T01:00:00Z",
                                       "commune": "xa-loc-an", "category": "moi-truong",
                                       "priority": "cao", "title": "Rác", "channel": "ung-dung",
                                       "reporter_ref": "r-" + "0" * 32},
                            "client_event_id": None,
                            "provenance": {"principal": "p", "channel": "kafka", "origin": "o"}}}
    source = SimpleNamespace(topic=STREAM.source_topic, partition=2, offset=9, timestamp=0,
                             key=b"xa-loc-an/PA-1", value=orjson.dumps(envelope),
                             headers=[("ioc-producer", b"ingest"),
                                      ("ioc-event-type", b"ingest.record.accepted")])
    out = shape(source, STREAM, Rule(found, "ingest"), prefix)  # type: ignore[arg-type]
    assert not hasattr(out, "reason"), out
    message = _province_schema(f"{prefix}.{STREAM.contract_topic}")
    sent = orjson.loads(out.value)   # type: ignore[union-attr]
    jsonschema.validate(sent, message["payload"])
    assert "provenance" not in sent["payload"] and "reporter_ref" not in sent["payload"]["record"]
    documented = set(message["headers"]["properties"])
    assert {k for k, _ in out.headers} <= documented  # type: ignore[union-attr]


def test_cursor_and_checkpoints_on_the_province_match_their_models() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from sync_province.contract import Checkpoint, Cursor, province_defaults
    from sync_province.sharelog import sign_checkpoint

    prefix, _, _ = province_defaults()
    checkpoint = orjson.loads(orjson.dumps(
        sign_checkpoint(Ed25519PrivateKey.generate(), "loc-ninh", 7, "ab" * 32)))
    Checkpoint.model_validate_json(orjson.dumps(checkpoint), strict=True)
    Cursor.model_validate_json(orjson.dumps({"next_offset": 12}), strict=True)
    import jsonschema
    jsonschema.validate(checkpoint, _province_schema(
        f"{prefix}.ioc.sync-province.checkpoints.v1")["payload"])
