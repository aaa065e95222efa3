"""Reconciliation finds and repairs a range deleted at the province; the share log
verifies, and an edited or truncated log is detected; checkpoints reach the province."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from ioc_shared.contracts.topics import SYNC_PROVINCE_STATUS, canonical_topic
from ioc_shared.testing import read_topic
from sync_harness import FIELD_REPORTS, Link
from sync_province.domain import LOCAL_TZ, Figures

pytestmark = pytest.mark.connected


async def _checkpointed(link: Link) -> bool:
    head = await link.pool.fetchval(f"SELECT max(seq) FROM {link.ns}.share_log")
    covered = await link.pool.fetchval(f"SELECT max(head_seq) FROM {link.ns}.share_checkpoints")
    return head is not None and covered == head


async def test_reconciliation_repairs_a_deleted_range_and_the_share_log_verifies(link: Link) -> None:
    await link.start_simulator()
    await link.start_service("http")
    ids = await link.produce(FIELD_REPORTS, 300)
    await link.wait_sim(FIELD_REPORTS, 300)
    deleted = await link.pool.fetch(
        f"DELETE FROM {link.sim_schema}.received WHERE event_id = ANY($1::text[]) RETURNING event_id",
        ids[100:160])
    assert len(deleted) == 60
    today = datetime.now(UTC).astimezone(LOCAL_TZ).date().isoformat()
    done = link.cli("reconcile", "--target", "http", "--stream", FIELD_REPORTS, "--day", today)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["drift"] is True and result["missing"] == 60 and result["repaired"] == 60
    assert result["district"] == {"count": 300, "checksum": Figures.of(ids).checksum}
    assert result["province"]["count"] == 240
    rows = await link.wait_sim(FIELD_REPORTS, 300)
    assert {r["event_id"] for r in rows} == set(ids)
    drift = await read_topic(f"{link.ns}.{SYNC_PROVINCE_STATUS.name}", timeout=10, until=lambda rs: any(
        orjson.loads(r.value)["type"] == "sync-province.drift" for r in rs))
    event = next(orjson.loads(r.value) for r in drift
                 if orjson.loads(r.value)["type"] == "sync-province.drift")
    assert event["payload"]["province"]["count"] == 240 and event["payload"]["district"]["count"] == 300
    again = json.loads(link.cli("reconcile", "--target", "http", "--stream", FIELD_REPORTS,
                                "--day", today).stdout)
    assert again["drift"] is False and again["province"] == again["district"]
    # Re-sending a time range: the province deduplicates by event id.
    start = datetime.now(UTC).astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    resent = link.cli("resend", "--target", "http", "--stream", FIELD_REPORTS, "--from",
                      start.isoformat(), "--to", (start + timedelta(days=1)).isoformat())
    assert json.loads(resent.stdout) == {"resent": 300}, resent.stderr
    assert len(await link.sim_rows(FIELD_REPORTS)) == 300

    # The share log: every shipment, chained; checkpoints signed and sent to the province.
    deadline = time.monotonic() + 20
    while not await _checkpointed(link):
        assert time.monotonic() < deadline, "no checkpoint of the head"
        await asyncio.sleep(0.3)
    assert link.service is not None
    link.service.kill()
    entries = await link.pool.fetch(f"SELECT * FROM {link.ns}.share_log ORDER BY seq")
    assert {e for row in entries for e in row["event_ids"]} == set(ids)
    assert {row["kind"] for row in entries} == {"ship", "repair", "resend"}
    assert all(row["grant_ids"] == ["prov-pa-ioc-binh-phuoc"] for row in entries)
    assert await link.pool.fetchval(f"SELECT count(*) FROM {link.sim_schema}.checkpoints") >= 1
    ok = link.cli("verify-log")
    assert ok.returncode == 0, ok.stderr
    assert f"{len(entries)} entries" in ok.stdout

    first = entries[0]
    await link.pool.execute(f"UPDATE {link.ns}.share_log SET event_ids = $1 WHERE seq = 1",
                            first["event_ids"][1:])
    edited = link.cli("verify-log")
    assert edited.returncode == 1 and "entry 1: content does not match its hash" in edited.stderr
    await link.pool.execute(f"UPDATE {link.ns}.share_log SET event_ids = $1 WHERE seq = 1",
                            first["event_ids"])
    assert link.cli("verify-log").returncode == 0
    await link.pool.execute(f"DELETE FROM {link.ns}.share_log WHERE seq = $1", entries[-1]["seq"])
    truncated = link.cli("verify-log")
    assert truncated.returncode == 1 and "(truncated)" in truncated.stderr


async def test_kafka_target_answers_the_same_reconciliation(link: Link) -> None:
    await link.start_service("kafka")
    ids = await link.produce(FIELD_REPORTS, 120)
    await link.province_records(canonical_topic(FIELD_REPORTS).name, 120)
    today = datetime.now(UTC).astimezone(LOCAL_TZ).date().isoformat()
    done = link.cli("reconcile", "--target", "kafka", "--stream", FIELD_REPORTS, "--day", today)
    result = json.loads(done.stdout)
    assert result["drift"] is False, result
    assert result["province"] == result["district"] == {"count": 120,
                                                        "checksum": Figures.of(ids).checksum}
