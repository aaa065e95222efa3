"""Reports through the real broker and database: lifecycle commands, files, requests."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import openpyxl
import orjson
import pytest
from docx import Document as open_docx
from ioc_shared.contracts.topics import (
    INGEST_FRESHNESS,
    INGEST_QUALITY,
    INGEST_REJECTED,
    REPORTING_COMMAND_RESULTS,
    REPORTING_COMMANDS,
    REPORTING_PUBLISHED,
    REPORTING_UNAUTHENTICATED_COMMANDS,
    canonical_topic,
)
from ioc_shared.testing import read_topic
from pypdf import PdfReader
from reporting.contract import published_json_schema
from reporting.sample import envelope, incident_events, indicator_events, quality_events
from reporting_harness import World

pytestmark = pytest.mark.connected

START = datetime(2026, 10, 15, 1, tzinfo=UTC)
END = datetime(2026, 11, 14, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 3, tzinfo=UTC)      # Friday 20 November 2026, 10:00 local


def clock() -> datetime:
    return NOW


async def results(w: World, n: int) -> list[dict[str, Any]]:
    records = await read_topic(w.topic(REPORTING_COMMAND_RESULTS), until=lambda r: len(r) >= n,
                               timeout=30)
    return [orjson.loads(r.value)["payload"] for r in records]


async def answer(w: World, command_id: str, count: int) -> dict[str, Any]:
    found = [p for p in await results(w, count) if p["command_id"] == command_id]
    assert found, f"no answer to {command_id}"
    return found[-1]


def check_files(files: dict[str, str], figures: dict[str, Any]) -> None:
    """The rendered PDF has the expected text; DOCX and XLSX open and match the JSON."""
    # Lines as laid out: a phrase may wrap, so whitespace is compared as single spaces.
    pdf_text = " ".join(" ".join(page.extract_text() for page in PdfReader(files["pdf"]).pages)
                        .split())
    for expected in ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc",
                     "Số: 01/BC-IOC", "BÁO CÁO", "Nơi nhận:", "tháng 11 năm 2026",
                     "Lộc Ninh, ngày 20 tháng 11 năm 2026", "PHÓ CHÁNH VĂN PHÒNG"):
        assert expected in pdf_text, expected
    received = figures["incidents"]["totals"]["received"]
    docx = open_docx(files["docx"])
    assert any("Số: 01/BC-IOC" in p.text for t in docx.tables for c in t._cells
               for p in c.paragraphs)
    # The PDF's two charts (incidents per month, on-time rate per unit) as pictures.
    assert len(docx.inline_shapes) == 2
    book = openpyxl.load_workbook(io.BytesIO(Path(files["xlsx"]).read_bytes()))
    sheet = book["I. Phản ánh"]
    cells = {sheet.cell(r, 1).value: sheet.cell(r, 2).value for r in range(1, sheet.max_row + 1)}
    assert cells["Tiếp nhận"] == received and isinstance(cells["Tiếp nhận"], int)
    money = book["V. Hỗ trợ"]
    totals = [money.cell(r, 4).value for r in range(1, money.max_row + 1)
              if money.cell(r, 1).value == "Tổng cộng"]
    assert totals == [figures["allowances"]["total"]] == [6_000_000]
    assert orjson.loads(Path(files["json"]).read_bytes())["number"] == "01/BC-IOC"


async def test_lifecycle_only_the_leader_approves_and_issued_files_match_the_json(
        rworld: World) -> None:
    events = list(incident_events(150, START, END, seed=21))
    await rworld.start(clock=clock, render_files=True, timers_enabled=False)
    await rworld.send_incident_events(events)
    await rworld.send(rworld.topic(INGEST_QUALITY), [("u", q) for q in quality_events(
        START.date(), 31)])
    indicators = list(indicator_events(START.date(), 31))
    await rworld.send(rworld.topic(canonical_topic("chi-so-y-te")), [("r", v) for v in indicators])
    late = envelope("ingest.freshness.late", "phong-gd-dt/thong-ke-truong-hoc", {
        "unit": "phong-gd-dt", "dataset": "thong-ke-truong-hoc", "cadence": "monthly",
        "detected_at": "2026-11-03T02:00:00+00:00"}, datetime(2026, 11, 3, 2, tzinfo=UTC),
        uuid.uuid4())
    rejected = envelope("ingest.record.rejected", "r-1", {
        "unit": "xa-loc-an", "dataset": "ho-so-dich-vu-cong", "code": "schema_violation"},
        datetime(2026, 11, 3, 2, tzinfo=UTC), uuid.uuid4())
    await rworld.send(rworld.topic(INGEST_FRESHNESS), [("f", late)])
    await rworld.send(rworld.topic(INGEST_REJECTED), [("x", rejected)])
    pool = await rworld.db()

    async def consumed() -> bool:
        n = await pool.fetchval(f"SELECT count(*) FROM {rworld.schema}.processed_events")
        return bool(n >= len(events) + 31 * 6 + len(indicators) + 2)

    await rworld.wait_for(consumed)
    n = 0

    async def send(principal: str, verb: str, **payload: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        cid = await rworld.command(principal, verb, "monthly:2026-11", **payload)
        return await answer(rworld, cid, n)

    made = await send("ioc-operator", "generate", period="2026-11")
    assert made["status"] == "accepted", made
    report_id = made["report_id"]
    assert made["report_status"] == "draft" and made["version"] == 1
    early = await send("ioc-leader", "approve", report_id=report_id)
    assert early["status"] == "rejected" and early["reason_code"] == "illegal_transition"
    assert early["message"] == "Không thể phê duyệt báo cáo khi báo cáo dự thảo."
    assert (await send("ioc-operator", "submit", report_id=report_id))["status"] == "accepted"
    denied = await send("ioc-operator", "approve", report_id=report_id)
    assert denied["status"] == "rejected" and denied["reason_code"] == "role_required"
    assert "lãnh đạo Trung tâm IOC" in denied["message"]
    approved = await send("ioc-leader", "approve", report_id=report_id)
    assert approved["status"] == "accepted" and approved["report_status"] == "approved"
    issued = await send("ioc-operator", "issue", report_id=report_id)
    assert issued["status"] == "accepted" and issued["number"] == "01/BC-IOC", issued
    sent = await send("ioc-operator", "send", report_id=report_id)
    assert sent["report_status"] == "sent"
    again = await send("ioc-operator", "submit", report_id=report_id)
    assert again["reason_code"] == "illegal_transition"

    published = await read_topic(rworld.topic(REPORTING_PUBLISHED), until=lambda r: len(r) >= 2)
    bodies = [orjson.loads(r.value)["payload"] for r in published]
    final = next(b for b in bodies if b["status"] == "issued")
    jsonschema.validate(final, published_json_schema())
    figures = final["figures"]
    assert figures["contract"] == "ioc.reporting.report/1" and final["number"] == "01/BC-IOC"
    assert figures["incidents"]["totals"]["received"] > 0
    assert figures["data_sharing"]["totals"]["accepted"] > 0
    assert figures["indicators"]
    late_pair = next(p for p in figures["data_sharing"]["pairs"]
                     if p["dataset"] == "thong-ke-truong-hoc")
    assert late_pair["late_periods"] == 1
    assert figures["data_sharing"]["freshness_compliance_rate"] is not None
    assert figures["data_sharing"]["rejection_notices"] == {"total": 1, "unidentified": 0}

    row = await pool.fetchrow(f"SELECT files, figures FROM {rworld.schema}.reports "
                              "WHERE report_id = $1", uuid.UUID(report_id))
    files = orjson.loads(row["files"])
    check_files(files, figures)


async def test_requests_are_answered_with_a_report_or_a_clear_rejection(rworld: World) -> None:
    await rworld.start(clock=clock, render_files=False, timers_enabled=False)
    await rworld.send_incident_events(list(incident_events(40, START, END, seed=4)))
    pool = await rworld.db()

    async def consumed() -> bool:
        return bool(await pool.fetchval(f"SELECT count(*) FROM {rworld.schema}.incidents") >= 40)

    await rworld.wait_for(consumed)
    cases = [
        ({"period": "2026-11", "category": "moi-truong"}, "accepted", None),
        ({"period": "2026-11", "category": "nuoc-ngot"}, "rejected", "unknown_category"),
        ({"period": "2026-11", "unit": "phong-khong-co"}, "rejected", "unknown_unit"),
        ({"period": "2026-12"}, "rejected", "future_period"),
        ({"period": "2025-01-01..2025-01-31", "kind": "ad-hoc"}, "rejected", "empty_period"),
        ({"period": "tháng trước"}, "rejected", "bad_period"),
    ]
    ids = [await rworld.command("ioc-operator", "request", "req", **p) for p, _, _ in cases]
    forged = await rworld.command("ioc-leader", "request", "req", sign_with="ioc-operator",
                                  period="2026-11")
    answers = {p["command_id"]: p for p in await results(rworld, len(cases))}
    for cid, (payload, status, reason) in zip(ids, cases, strict=True):
        got = answers[cid]
        assert (got["status"], got["reason_code"]) == (status, reason), (payload, got)
        assert got["message"]
    # A forged command is answered to the operators only, never to the unit it claims.
    assert forged not in answers
    refused = await read_topic(rworld.topic(REPORTING_UNAUTHENTICATED_COMMANDS),
                               until=lambda r: len(r) >= 1)
    [only] = [orjson.loads(r.value)["payload"] for r in refused]
    assert (only["command_id"], only["reason_code"], only["claimed_principal"]) == (
        forged, "unauthenticated", "ioc-leader")
    assert refused[0].key.decode().startswith(rworld.topic(REPORTING_COMMANDS))
    ok = answers[ids[0]]
    assert ok["report_status"] == "draft" and ok["period"].startswith("thematic:")
