"""Report files appear only once their version is committed (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from docx import Document as open_docx
from pypdf import PdfReader
from reporting.domain import periods as pd
from reporting.domain.figures import Scope
from reporting.sample import incident_events
from reporting_harness import World

pytestmark = pytest.mark.connected

NOW = datetime(2026, 11, 20, 3, tzinfo=UTC)


class RolledBack(Exception):
    pass


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def sizes(paths: dict[str, str]) -> list[int]:
    """Sizes of the files (0 for a missing one)."""
    return [Path(f).stat().st_size if Path(f).exists() else 0 for f in paths.values()]


async def test_a_rolled_back_version_leaves_no_file_and_a_committed_one_its_files(
        rworld: World) -> None:
    extras: dict[str, Any] = {}
    await rworld.start(clock=lambda: NOW, render_files=True, timers_enabled=False, extras=extras)
    service = extras["service"]
    period = pd.parse("2026-10", service.config.rules)
    root = rworld.settings.output_dir
    seen_inside: list[str] = []
    async with service.pool.acquire() as conn:
        with pytest.raises(RolledBack):
            async with service.transaction(conn):
                report = await service.generate(conn, period, Scope(), actor="test")
                seen_inside = files_under(root)
                raise RolledBack
    # While the transaction was open the files existed only under temporary names.
    assert seen_inside and all(Path(f).name.startswith(".") for f in seen_inside)
    assert sizes(report["files"]) == [0, 0, 0, 0]
    assert files_under(root) == []
    async with service.pool.acquire() as conn:
        assert await conn.fetchval(f"SELECT count(*) FROM {rworld.schema}.reports") == 0
        async with service.transaction(conn):
            committed = await service.generate(conn, period, Scope(), actor="test")
    assert set(committed["files"]) == {"json", "pdf", "docx", "xlsx"}
    assert files_under(root) == sorted(
        str(Path(f).relative_to(root)) for f in committed["files"].values())
    assert all(n > 0 for n in sizes(committed["files"]))


def chart_check(files: dict[str, str]) -> int:
    """The thematic report's PDF names both charts; returns the DOCX's pictures."""
    pdf_text = " ".join(p.extract_text() for p in PdfReader(files["pdf"]).pages)
    assert "Biểu đồ 1. Số phản ánh theo tháng" in pdf_text
    assert "Biểu đồ 2. Tỷ lệ xử lý đúng hạn theo đơn vị" in pdf_text
    return len(open_docx(files["docx"]).inline_shapes)


async def test_a_thematic_report_has_its_scope_trend_and_the_charts(rworld: World) -> None:
    extras: dict[str, Any] = {}
    await rworld.start(clock=lambda: NOW, render_files=True, timers_enabled=False, extras=extras)
    service = extras["service"]
    events = list(incident_events(60, datetime(2026, 10, 15, 1, tzinfo=UTC),
                                  datetime(2026, 11, 14, 10, tzinfo=UTC), seed=8))
    await rworld.send_incident_events(events)
    pool = await rworld.db()

    async def consumed() -> bool:
        return bool(await pool.fetchval(f"SELECT count(*) FROM {rworld.schema}.incidents") >= 60)

    await rworld.wait_for(consumed)
    period = pd.parse("2026-10-15..2026-11-14", service.config.rules, pd.Kind.THEMATIC)
    scope = Scope(category="moi-truong")
    async with service.pool.acquire() as conn, service.transaction(conn):
        report = await service.generate(conn, period, scope, actor="test")
    trend = report["figures"]["incidents"]["trend"]
    district = (await service.figures(period))["incidents"]["trend"]
    scoped_received = await pool.fetchval(
        f"SELECT sum(n) FROM {rworld.schema}.incident_daily WHERE measure = 'received' "
        "AND category = 'moi-truong' AND day >= '2026-10-01'")
    # The scope's own months, not the district's.
    assert sum(m["received"] for m in trend) == scoped_received > 0
    assert sum(m["received"] for m in trend) < sum(m["received"] for m in district)
    assert chart_check(report["files"]) == 2
