"""Report timers with two instances on one schema: each fires once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from ioc_shared.contracts.topics import REPORTING_NOTIFICATIONS
from ioc_shared.testing import read_topic
from reporting_harness import World

pytestmark = pytest.mark.connected


async def test_due_soon_and_overdue_once_each_with_two_instances(rworld: World) -> None:
    # The November 2026 report is due Monday 23 November (the 24th is a holiday):
    # draft Wednesday the 18th, due-soon Thursday the 19th, overdue from the 24th.
    now = [datetime(2026, 11, 19, 2, tzinfo=UTC)]     # Thursday 09:00 local

    def clock() -> datetime:
        return now[0]

    await rworld.start("a", clock=clock, render_files=False)
    await rworld.start("b", clock=clock, render_files=False)
    pool = await rworld.db()
    schema = rworld.schema

    async def fired(action: str) -> bool:
        return bool(await pool.fetchval(
            f"SELECT fired_at IS NOT NULL FROM {schema}.report_timers "
            "WHERE period_key = 'monthly:2026-11' AND action = $1", action))

    await rworld.wait_for(lambda: fired("due-soon"))
    assert not await fired("overdue")
    now[0] = datetime(2026, 11, 25, 2, tzinfo=UTC)
    await rworld.wait_for(lambda: fired("overdue"))
    await asyncio.sleep(1.5)     # several more polls of both instances

    records = await read_topic(rworld.topic(REPORTING_NOTIFICATIONS), until=lambda r: False,
                               timeout=3)
    seen = Counter((orjson.loads(r.value)["type"], orjson.loads(r.value)["payload"]["period"])
                   for r in records)
    assert seen[("report.due-soon", "monthly:2026-11")] == 1
    assert seen[("report.overdue", "monthly:2026-11")] == 1
    assert all(n == 1 for n in seen.values()), seen
    note = next(orjson.loads(r.value)["payload"] for r in records
                if orjson.loads(r.value)["type"] == "report.overdue"
                and orjson.loads(r.value)["payload"]["period"] == "monthly:2026-11")
    assert note["unit"] == "ioc-loc-ninh" and note["contact_role"] == "leader"
    assert note["message"] == ("Báo cáo tháng 11 năm 2026 đã quá hạn 23/11/2026 mà chưa "
                               "ban hành.")
    drafts = await pool.fetchval(
        f"SELECT count(*) FROM {schema}.reports WHERE period_key = 'monthly:2026-11'")
    assert drafts == 1
    firers = await pool.fetch(f"SELECT fired_by FROM {schema}.report_timers WHERE fired_at IS NOT NULL")
    assert {r["fired_by"].split(":")[0] for r in firers} <= {"test-a", "test-b"}
