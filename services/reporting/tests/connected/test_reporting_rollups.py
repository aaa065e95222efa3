"""Rollups through the real broker and database: order, duplicates, redelivery, pipelining."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime

import orjson
import pytest
from ioc_shared.calendar_vn import WorkingCalendar
from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.contracts.topics import ROUTING_EVENTS
from ioc_shared.platform.consumer import Delivery
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from ioc_shared.testing import database_url, unique
from reporting.bootstrap import MIGRATIONS
from reporting.repository import ReportingRepository
from reporting.rollups import RollupHandler
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


async def test_pipelined_full_batches_give_the_recount_and_a_redelivery_changes_nothing(
        rworld: World) -> None:
    """Batches of 8 records: each is full, so the consumer takes the next one while the
    last writes and COMMIT of the previous run, and an incident's events are spread over
    many consecutive batches (each claim + load must see the previous batch's COMMIT)."""
    events = list(incident_events(40, START, END, seed=13))
    expected = recount([v for _, v in events], WorkingCalendar())
    await rworld.start("a", batch_max_records=8)
    # In occurrence order per incident, so one incident's events are in consecutive batches.
    await rworld.send_incident_events(sorted(events, key=lambda e: orjson.loads(e[1])["occurred_at"]))

    async def matches() -> bool:
        return await rworld.rollup() == expected

    await rworld.wait_for(matches)
    group = rworld.settings.consumer_group + "-rollups"
    topic = rworld.topic(ROUTING_EVENTS)

    async def committed() -> bool:
        return await rworld.caught_up(group, topic)

    await rworld.wait_for(committed)
    await rworld.stop()
    # Offsets gone (a crash between the rollup COMMITs and the offset commits): every
    # batch again, pipelined, counts nothing twice.
    await rworld.start("b", consumer_group=rworld.settings.consumer_group + "-after-crash",
                       batch_max_records=8)

    async def reread() -> bool:
        return await rworld.caught_up(rworld.settings.consumer_group + "-after-crash-rollups",
                                      topic)

    await rworld.wait_for(reread)
    assert await rworld.rollup() == expected


async def test_the_next_batch_is_claimed_only_after_the_previous_commit() -> None:
    """`handle` returns before its batch's last writes and COMMIT; the next batch, handed
    over at once, loads the incidents only once that COMMIT is in (else it would fold its
    events without the previous batch's and overwrite the incident rows)."""
    schema = unique("rp_pipe")
    pool = await create_pool(database_url(), max_size=3)
    try:
        await migrate(pool, schema, MIGRATIONS)
        registry = load_registry(REPO_ROOT / "config" / "registry.yaml", None)
        handler = RollupHandler(pool, ReportingRepository(schema), registry, WorkingCalendar())
        events = list(incident_events(20, START, END, seed=21))
        seen: Counter[str] = Counter()
        halves: tuple[list[Delivery], list[Delivery]] = ([], [])
        for n, (key, value) in enumerate(events):   # each incident in both batches
            seen[key] += 1
            halves[seen[key] > 3].append(
                Delivery("t", 0, n, key.encode(), value, ((H_PRODUCER, b"routing"),), 0))
        # The first batch's last statement (its monthly trend) waits on a lock held here.
        blocker = await pool.acquire()
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute(
            f"INSERT INTO {schema}.incident_monthly (month, measure, n) VALUES "
            "('2026-10-01', 'received', 0), ('2026-11-01', 'received', 0)")
        try:
            first = await handler.handle(halves[0])
            first_pending = first is not None and not first.done()
            second = asyncio.ensure_future(handler.handle(halves[1]))
            await asyncio.sleep(0.5)
            second_handed_over = second.done()
        finally:
            await lock.commit()
            await pool.release(blocker)
        committing = await second
        assert first is not None and committing is not None
        await asyncio.gather(first, committing)
        assert first_pending   # handle returned before the first batch's COMMIT
        assert not second_handed_over   # the second's claim waited for that COMMIT
        rows = await pool.fetch(
            f"SELECT day, measure, unit, commune, category, source, n "
            f"FROM {schema}.incident_daily WHERE n <> 0")
        stored = {(r["day"], r["measure"], r["unit"], r["commune"], r["category"],
                   r["source"]): r["n"] for r in rows}
        assert stored == recount([v for _, v in events], WorkingCalendar())
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
