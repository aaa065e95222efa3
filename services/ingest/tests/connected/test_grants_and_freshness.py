"""Time-dependent behaviour with registries built for the test: grant expiry, freshness."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from ingest.service import IngestService
from ioc_shared.testing import read_topic

from .helpers import (
    SEED_REGISTRY,
    drop_schema,
    field_report,
    inputs_handled,
    isolated_settings,
    publish,
    read_all,
    signed_headers,
    submission,
)

pytestmark = pytest.mark.connected
DATASET = "phan-anh-hien-truong"


def registry_with(tmp_path: Path, change: Any) -> Path:
    raw = yaml.safe_load(SEED_REGISTRY.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


async def send_report(service: IngestService, record_id: str) -> None:
    value = submission(field_report(record_id))
    await publish(service.topics.inbound, [(b"xa-loc-an", value, signed_headers("xa-loc-an-system", value))])


async def subjects(topic: str, wanted: set[str], timeout: float) -> set[str]:
    records = await read_topic(topic, timeout=timeout, until=lambda rs: wanted <= {
        orjson.loads(r.value)["payload"]["record_id"] for r in rs})
    return {orjson.loads(r.value)["payload"]["record_id"] for r in records}


async def test_special_request_stream_stops_at_expiry(tmp_path: Path) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=8)

    def short_grant(raw: dict[str, Any]) -> None:
        for grant in raw["grants"]:
            if grant["id"] == "sr-cong-an-pa-2026":
                grant["expires_at"] = expires.isoformat()

    settings = isolated_settings(registry_with(tmp_path, short_grant))
    async with IngestService(settings, configure_logs=False) as service:
        shared_topic = service.topics.special["sr-cong-an-pa-2026"]
        before, after = f"PA-{uuid.uuid4().hex[:8]}", f"PA-{uuid.uuid4().hex[:8]}"
        await send_report(service, before)
        assert before in await subjects(service.topics.canonical[DATASET], {before}, 20)
        shared = await read_topic(shared_topic, timeout=20, until=lambda rs: len(rs) >= 1)
        (view,) = shared
        record = orjson.loads(view.value)["payload"]["record"]
        assert "reporter_phone" not in record and record["record_id"] == before
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
        await send_report(service, after)
        assert after in await subjects(service.topics.canonical[DATASET], {after}, 20)
        await inputs_handled(service.settings, service.topics.inbound)
        final = await read_all(shared_topic)
        assert [orjson.loads(r.value)["payload"]["record_id"] for r in final] == [before]
    await drop_schema(settings)


async def test_freshness_lateness_fires_and_recovers() -> None:
    settings = isolated_settings(freshness_continuous_s=1.0,
                                 freshness_grace_s=0.0, freshness_check_interval_s=0.3)
    async with IngestService(settings, configure_logs=False) as service:
        topic = service.topics.freshness
        pair = f"xa-loc-an/{DATASET}"

        def events(rs: list[Any]) -> list[dict[str, Any]]:
            return [e for e in (orjson.loads(r.value) for r in rs) if e["subject"] == pair]

        late = await read_topic(topic, timeout=20, until=lambda rs: len(events(rs)) >= 1)
        (first,) = events(late)
        assert first["type"] == "ingest.freshness.late"
        assert first["payload"]["cadence"] == "continuous"
        assert first["payload"]["last_accepted_at"] is None
        assert first["payload"]["message_vi"].startswith("Đơn vị xa-loc-an chưa cập nhật")
        await send_report(service, f"PA-{uuid.uuid4().hex[:8]}")
        both = await read_topic(topic, timeout=20, until=lambda rs: len(events(rs)) >= 2)
        assert [e["type"] for e in events(both)[:2]] == ["ingest.freshness.late",
                                                         "ingest.freshness.recovered"]
        # Silence again after the recovery: a new lateness episode with a new event id.
        again = await read_topic(topic, timeout=20, until=lambda rs: len(events(rs)) >= 3)
        third = events(again)[2]
        assert third["type"] == "ingest.freshness.late" and third["event_id"] != first["event_id"]
        assert third["payload"]["last_accepted_at"] is not None
    await drop_schema(settings)
