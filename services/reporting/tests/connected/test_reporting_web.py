"""The service's HTTP pages: the report list with links, the live KPI page with its charts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from reporting.sample import incident_events
from reporting_harness import World

pytestmark = pytest.mark.connected

NOW = datetime(2026, 11, 10, 3, tzinfo=UTC)    # inside the November 2026 period


async def serve_with_a_report(rworld: World) -> str:
    """Start the service with 60 incidents and one generated report; its base URL."""
    extras: dict[str, object] = {}
    await rworld.start(clock=lambda: NOW, render_files=True, timers_enabled=False, extras=extras)
    await rworld.send_incident_events(list(incident_events(
        60, datetime(2026, 10, 15, 1, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC), seed=8)))
    pool = await rworld.db()

    async def consumed() -> bool:
        return bool(await pool.fetchval(f"SELECT count(*) FROM {rworld.schema}.incidents") >= 60)

    await rworld.wait_for(consumed)
    cid = await rworld.command("ioc-operator", "generate", "monthly:2026-10", period="2026-10")

    async def made() -> bool:
        return bool(await pool.fetchval(f"SELECT count(*) FROM {rworld.schema}.reports"))

    await rworld.wait_for(made)
    assert cid
    return f"http://127.0.0.1:{extras['http_port']}"


async def test_report_list_and_live_kpi_page(rworld: World) -> None:
    base = await serve_with_a_report(rworld)
    async with httpx.AsyncClient(base_url=base) as http:
        listing = await http.get("/reports")
        assert listing.status_code == 200
        assert "monthly:2026-10" in listing.text and "dự thảo" in listing.text
        link = listing.text.split("href='")[2].split("'")[0]
        assert link.endswith("/pdf")
        pdf = await http.get(link)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert (await http.get("/reports/not-a-uuid/pdf")).status_code == 404
        kpi = await http.get("/kpi")
        assert kpi.status_code == 200
        page = kpi.text
        assert "tháng 11 năm 2026" in page and "<svg" in page and "Tiếp nhận" in page


async def test_kpi_page_renders_in_headless_chromium(rworld: World, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        # scripts/bootstrap.sh installs it (as root with apt-get): in CI a missing browser
        # is a broken set-up, not a reason to skip.
        missing = ("chromium is not installed (scripts/bootstrap.sh installs it; apt-get "
                   "install chromium): the page is checked over HTTP only")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing)
        pytest.skip(missing)
    base = await serve_with_a_report(rworld)
    shot = tmp_path / "kpi.png"
    proc = await asyncio.to_thread(subprocess.run, [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400",
        f"--screenshot={shot}", f"{base}/kpi"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert await asyncio.to_thread(lambda: shot.exists() and shot.stat().st_size > 10_000)
