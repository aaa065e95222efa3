"""sync-province's status snapshots through the real broker and database -> the records
sent to the province in the report (section III, JSON, PDF, DOCX, XLSX)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from docx import Document as open_docx
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.contracts.topics import SYNC_PROVINCE_STATUS
from pypdf import PdfReader
from reporting.domain import periods as pd
from reporting.domain.figures import Scope
from reporting_harness import World

pytestmark = pytest.mark.connected

NOW = datetime(2026, 11, 20, 3, tzinfo=UTC)
T = datetime(2026, 11, 10, 3, tzinfo=UTC)          # 10:00 on 10 November, local


def status(sent: int, offset: int, at: datetime, *, failures: dict[str, int] | None = None,
           stream: str = "chi-so-y-te") -> Envelope:
    """A snapshot as sync-province publishes it (sync_province/status.py)."""
    return Envelope(type="sync-province.status", source_unit="loc-ninh", subject=stream,
                    occurred_at=at, payload={
                        "stream": stream, "target": "kafka",
                        "positions": {f"ioc.data.{stream}.v1:0": offset},
                        "last_synced_at": at.timestamp() - 2, "lag_records": 0,
                        "lag_seconds": 0.0, "sent": sent, "skipped": {"not-granted": 3},
                        "parked": 0, "paused": False, "failures": failures or {},
                        "unreachable_s": 0.0, "last_error": None, "retention_risk": False,
                        "registry_generation": 1})


def check_files(files: dict[str, str]) -> None:
    """The rendered report shows the records sent, and says where there are none."""
    pdf_text = " ".join(" ".join(p.extract_text() for p in PdfReader(files["pdf"]).pages).split())
    assert "đã gửi 180 bản ghi trong kỳ" in pdf_text
    assert "chưa có số liệu" in pdf_text
    assert "Kafka của tỉnh: mất kết nối 2 lượt" in pdf_text
    docx_text = " ".join(c.text for t in open_docx(files["docx"]).tables for c in t._cells)
    assert "Chỉ số y tế" in docx_text and "180" in docx_text
    book = openpyxl.load_workbook(io.BytesIO(Path(files["xlsx"]).read_bytes()))
    values = [[c.value for c in row] for row in book["III. Dữ liệu"].iter_rows()]
    assert ["Chỉ số y tế", "Kafka của tỉnh", 180] in [v[:3] for v in values]   # not "kafka"


async def test_status_snapshots_become_the_records_sent_in_the_report(rworld: World) -> None:
    extras: dict[str, Any] = {}
    await rworld.start(clock=lambda: NOW, render_files=True, timers_enabled=False, extras=extras)
    service = extras["service"]
    second = status(160, 170, T + timedelta(minutes=10))
    snapshots = [
        status(100, 100, T),                                   # first seen: 100
        second,                                                # +60
        status(20, 190, T + timedelta(days=2), failures={"network": 2}),  # restarted: +20
        second,                                                # delivered again: nothing
        status(50, 240, datetime(2026, 11, 16, 3, tzinfo=UTC)),   # after the period: +30
    ]
    topic = rworld.topic(SYNC_PROVINCE_STATUS)
    # Bad records are skipped without stopping the partition.
    unusable = Envelope(type="sync-province.status", source_unit="loc-ninh", subject="x",
                        occurred_at=T, payload={"stream": "x", "target": "kafka", "sent": -5})
    await rworld.send(topic, [("x", b"not an envelope"), ("x", unusable.to_bytes()),
                              *((e.subject or "", e.to_bytes()) for e in snapshots)])
    pool = await rworld.db()

    async def all_in() -> bool:
        n = await pool.fetchval(f"SELECT sum(sent) FROM {rworld.schema}.sync_daily")
        return n == 210 and await rworld.caught_up(f"{rworld.settings.consumer_group}"
                                                   "-province-sync", topic)

    await rworld.wait_for(all_in)
    november = pd.parse("2026-11", service.config.rules)
    figures = await service.figures(november)
    rows = {r["dataset"]: r for r in figures["data_sharing"]["province_sync"]}
    assert rows["chi-so-y-te"] == {
        "dataset": "chi-so-y-te", "dataset_name": "Chỉ số y tế", "target": "kafka",
        "sent": 180, "parked": 0,
        "last_synced_at": (T + timedelta(days=2, seconds=-2)).isoformat(),
        "failures": {"network": 2}}
    # Shared with the province, never reported on: no figure invented.
    assert rows["thong-ke-truong-hoc"]["sent"] is None
    async with service.pool.acquire() as conn, service.transaction(conn):
        report = await service.generate(conn, november, Scope(), actor="test")
    published = report["figures"]["data_sharing"]["province_sync"]
    assert [r["sent"] for r in published if r["dataset"] == "chi-so-y-te"] == [180]
    check_files(report["files"])
