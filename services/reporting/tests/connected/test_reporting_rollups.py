"""Rollups through the real broker and database: order, duplicates, redelivery."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import pytest
from ioc_shared.calendar_vn import WorkingCalendar
from ioc_shared.contracts.topics import ROUTING_EVENTS
from reporting.sample import incident_events
from reporting_harness import World, recount, shuffled_with_duplicates

pytestmark = pytest.mark.connected

START = datetime(2026, 10, 15, 1, tzinfo=UTC)
END = datetime(2026, 11, 14, 10, tzinfo=UTC)


async def test_shuffled_duplicated_events_give_the_recount(rworld: World) -> None:
    events = list(incident_events(120, START, END, seed=5))
    expected = recount([v for _, v in events], WorkingCalendar())
    assert expected[next(k for k in expected if k[1] == "received")] > 0
    await rworld.start()
    # Input the rollups cannot use is skipped, never stops the partition.
    bad_time = events[0][1].replace(b'"at":"', b'"at":"not a time ', 1)
    poison = [("inc-x", b"not json"), ("inc-x", b'{"event_id": 5}'),
              ("inc-0000000", bad_time.replace(b'"event_id":"', b'"event_id":"0', 1)
               .replace(b'"event_id":"0', b'"event_id":"', 1))]
    await rworld.send_incident_events(poison[:2] + shuffled_with_duplicates(events))

    async def matches() -> bool:
        return await rworld.rollup() == expected

    await rworld.wait_for(matches)
    monthly: Counter[tuple[date, str]] = Counter()
    for k, n in expected.items():
        if k[1] in ("received", "resolved"):
            monthly[(k[0].replace(day=1), k[1])] += n
    pool = await rworld.db()
    stored = {(r["month"], r["measure"]): r["n"] for r in await pool.fetch(
        f"SELECT month, measure, n FROM {rworld.schema}.incident_monthly WHERE n <> 0")}
    assert stored == dict(monthly)
    received = sum(n for k, n in expected.items() if k[1] == "received")
    assert received == 120
    # Every incident counted in exactly one current state.
    assert sum(n for k, n in expected.items() if k[1].startswith("state:")) == 120


async def test_redelivered_batches_after_a_crash_do_not_count_twice(rworld: World) -> None:
    """Offsets lost after the rollup commit (a crash before the offset commit) look to the
    service like a redelivery of everything: a new consumer group reads the topic again."""
    events = list(incident_events(60, START, END, seed=9))
    expected = recount([v for _, v in events], WorkingCalendar())
    await rworld.start("a")
    await rworld.send_incident_events(events)

    async def matches() -> bool:
        return await rworld.rollup() == expected

    await rworld.wait_for(matches)
    await rworld.stop()
    # Same schema (rollups and claims), offsets gone: every batch is delivered again.
    await rworld.start("b", consumer_group=rworld.settings.consumer_group + "-after-crash")
    group = rworld.settings.consumer_group + "-after-crash-rollups"
    topic = rworld.topic(ROUTING_EVENTS)

    async def reread() -> bool:
        return await rworld.caught_up(group, topic)

    await rworld.wait_for(reread)
    assert await rworld.rollup() == expected
