"""The province's Kafka cluster as target: exactly once through a SIGKILL, only what is
granted, provenance and trace context kept, SASL really on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from ioc_shared.contracts.topics import canonical_topic
from ioc_shared.testing import read_topic
from sync_harness import FIELD_REPORTS, HEALTH_ALERTS, KT_XH, PROVINCE, REPORT_TOPIC, Link, field_report
from sync_province.sharelog import checkpoint_valid, load_or_create_key, public_hex

pytestmark = pytest.mark.connected


def _h(record) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v.decode() for k, v in record.headers}


async def test_kafka_target_exactly_once_through_sigkill_only_granted(link: Link) -> None:
    await link.produce(FIELD_REPORTS, 400)
    await link.produce(HEALTH_ALERTS, 100, record=lambda i: {
        "reported_at": "2026-12-01T01:00:00+00:00", "commune": "xa-loc-an", "category": "y-te",
        "priority": "cao", "title": f"Sốt xuất huyết {i}"})
    await link.produce(KT_XH, 50, record=lambda i: {"period": "2026-11-01", "indicator": "x",
                                                    "value": i})      # no grant: never leaves
    link.sent.pop(KT_XH)
    await link.produce(FIELD_REPORTS, 30, producer_header=False)        # not ingest's: stays
    report = await link.produce_event("report.published")
    await link.produce_event("report.draft-saved")                       # not forwarded
    service = await link.start_service("kafka")
    # SIGKILL while records flow, then restart: the transaction in flight is aborted.
    more = asyncio.create_task(link.produce(FIELD_REPORTS, 2000))
    await link.province_records(canonical_topic(FIELD_REPORTS).name, 600, timeout=30)
    service.kill()
    await more
    await link.start_service("kafka")
    expected = link.sent[FIELD_REPORTS]
    got = await link.province_records(canonical_topic(FIELD_REPORTS).name, len(expected),
                                      settle=2.0)
    ids = [_h(r)["ioc-event-id"] for r in got]
    assert len(ids) == len(set(ids)), "a record arrived twice"
    if set(ids) != set(expected):
        source = await read_topic(link.topic(FIELD_REPORTS), until=lambda rs: len(rs) >= 2430)
        where = {_h(r)["ioc-event-id"]: (r.partition, r.offset) for r in source}
        missing = sorted(where[e] for e in set(expected) - set(ids))
        got_at = sorted((r.partition, int(_h(r)["ioc-origin-offset"])) for r in got)
        cursor = await link.province_records("ioc.sync-province.cursor.v1", 1, partitions=1,
                                             timeout=5, settle=1)
        raise AssertionError(f"missing at the source positions {missing}; province has "
                             f"{got_at[:5]}...; cursor {[(r.key, r.value) for r in cursor]}\n"
                             + (link.service.log_tail(5000) if link.service else ""))
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in got:
        headers = _h(r)
        by_key[r.key].append(int(headers["ioc-origin-offset"]))
        assert headers["ioc-origin-ioc"] == "loc-ninh"
        assert headers["ioc-origin-topic"] == canonical_topic(FIELD_REPORTS).name
        assert headers["traceparent"].startswith("00-") and headers["tracestate"] == "ioc=test"
        assert headers["ioc-grant-ids"] == "prov-pa-ioc-binh-phuoc"
        payload = orjson.loads(r.value)["payload"]
        assert not {"reporter_name", "reporter_phone", "reporter_ref"} & set(payload["record"])
        assert "provenance" not in payload and payload["record"]["title"]
    assert all(offsets == sorted(offsets) for offsets in by_key.values()), "order per key broken"
    alerts = await link.province_records(canonical_topic(HEALTH_ALERTS).name, 100, settle=0.5)
    assert len(alerts) == 100
    reports = await link.province_records(REPORT_TOPIC, 1, settle=1.0, partitions=1)
    assert [_h(r)["ioc-event-id"] for r in reports] == [report]
    assert not await link.province_records(canonical_topic(KT_XH).name, 1, timeout=2)


async def test_province_kafka_refuses_clients_without_credentials() -> None:
    if not PROVINCE:
        pytest.skip("no provincial broker")
    plain = AIOKafkaAdminClient(bootstrap_servers=PROVINCE, request_timeout_ms=3000)
    with pytest.raises((KafkaError, OSError)):
        await asyncio.wait_for(plain.start(), 15)
        await plain.list_topics()
    await plain.close()
    from ioc_shared.platform.security import KafkaSecurity
    wrong = KafkaSecurity(sasl_user=os.environ["IOC_PROVINCE_KAFKA_SASL_USER"],
                          sasl_password="not-the-password",
                          ca_file=Path(os.environ["IOC_PROVINCE_KAFKA_CA_FILE"]))
    guessing = AIOKafkaAdminClient(bootstrap_servers=PROVINCE, request_timeout_ms=3000,
                                   **wrong.client_kwargs())
    with pytest.raises((KafkaError, OSError)):
        await asyncio.wait_for(guessing.start(), 15)
        await guessing.list_topics()
    await guessing.close()


@contextlib.contextmanager
def province_frozen():  # type: ignore[no-untyped-def]
    """The provincial broker stopped dead (SIGSTOP): connections hang, requests time out."""
    pid = int(Path(os.environ["IOC_PROVINCE_KAFKA_PID_FILE"]).read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_kafka_target_catches_up_after_the_province_was_away(link: Link) -> None:
    with province_frozen():
        await link.start_service("kafka")
        await link.produce(FIELD_REPORTS, 500)
        deadline = time.monotonic() + 30
        while True:
            row = next(r for r in await link.status() if r["stream"] == FIELD_REPORTS)
            if row["lag_records"] > 0 and row["unreachable_s"] > 1:
                break
            assert time.monotonic() < deadline, row
            await asyncio.sleep(0.3)
        code, health = await link.health()
        assert code == 503 and health["checks"]["province-kafka"] is False
    await link.produce(FIELD_REPORTS, 300)
    got = await link.province_records(canonical_topic(FIELD_REPORTS).name, 800, timeout=60,
                                      settle=1.5)
    ids = [_h(r)["ioc-event-id"] for r in got]
    assert len(ids) == len(set(ids)) == 800 and set(ids) == set(link.sent[FIELD_REPORTS])
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for r in got:
        by_key[r.key].append(int(_h(r)["ioc-origin-offset"]))
    assert all(offsets == sorted(offsets) for offsets in by_key.values())
    # Same partition and timestamp as at the district.
    source = await read_topic(link.topic(FIELD_REPORTS), until=lambda rs: len(rs) >= 800)
    at_source = {(r.partition, r.offset): (r.timestamp, r.key) for r in source}
    for r in got:
        assert at_source[(r.partition, int(_h(r)["ioc-origin-offset"]))] == (r.timestamp, r.key)
    # The share log's head, signed, reached the province's checkpoint topic.
    checkpoints = await link.province_records("ioc.sync-province.checkpoints.v1", 1, partitions=1,
                                              settle=1.0)
    checkpoint = orjson.loads(checkpoints[-1].value)
    key = load_or_create_key(link.tmp / "share-log.pem")
    assert checkpoint_valid("loc-ninh", checkpoint, public_hex(key))


async def test_a_record_larger_than_a_record_batch_leaves_with_the_others_in_order(
        link: Link) -> None:
    """The Kafka target fills record batches of 512 KiB: a 600 KB record takes one of its
    own, between the others of its partition."""
    big = "Rác thải " * 66_000                          # ~600 KB of title
    sizes = [10, 1, 10]
    for n, size in enumerate(sizes):
        await link.produce(FIELD_REPORTS, size, units=("xa-loc-an",), record=lambda i, n=n: {
            **field_report(i), "title": big if n == 1 else f"Rác thải số {i}"})
    await link.start_service("kafka")
    expected = link.sent[FIELD_REPORTS]
    got = await link.province_records(canonical_topic(FIELD_REPORTS).name, len(expected),
                                      settle=1.0)
    ids = [_h(r)["ioc-event-id"] for r in got]
    assert sorted(ids) == sorted(expected)
    assert any(len(r.value) > 512 * 1024 for r in got)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for r in got:
        by_partition[r.partition].append(int(_h(r)["ioc-origin-offset"]))
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())
