"""Overdue listing per deadline, and the IOC's own deadlines firing, against the real
PostgreSQL (and Kafka for the service run)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.testing import database_url, unique
from routing.bootstrap import MIGRATIONS
from routing.domain.deadlines import DueWork
from routing.main import cli
from routing.repository import RoutingRepository
from routing_harness import World, record
from typer.testing import CliRunner

pytestmark = pytest.mark.connected

NOW = datetime.now(UTC).replace(microsecond=0)


async def _incident(conn: asyncpg.Connection, s: str, id: str, state: str, *, assignment_no: int,
                    ack_due: datetime | None, resolve_due: datetime | None) -> None:
    await conn.execute(
        f"INSERT INTO {s}.incidents (id, dataset, record_id, source_unit, category, priority, "
        "commune, reported_at, state, assigned_unit, last_unit, assignment_no, ack_due_at, "
        "resolve_due_at, created_at, updated_at) VALUES ($1, 'phan-anh-hien-truong', $1, "
        "'tt-loc-ninh', 'moi-truong', 'cao', 'xa-loc-an', $2, $3, $4, $4, $5, $6, $7, $2, $2)",
        id, NOW - timedelta(days=1), state, "xa-loc-an" if assignment_no else None,
        assignment_no, ack_due, resolve_due)


async def _fired(conn: asyncpg.Connection, s: str, id: str, deadline: str, steps: list[int],
                 assignment_no: int) -> None:
    await conn.execute(
        f"UPDATE {s}.due_work SET fired_at = $4 WHERE incident_id = $1 AND deadline = $2 "
        "AND kind = 'escalation' AND step = ANY($3::int[]) AND assignment_no = $5",
        id, deadline, steps, NOW, assignment_no)


async def seed_overdue(schema: str) -> None:
    """A: assigned, both deadlines missed, acknowledgement at step 3 and resolution at step 1.
    B: acknowledged late (its acknowledgement chain ran to step 4), resolution just missed,
    step 1 fired. C: waiting for verification past its IOC deadline, step 1 fired, after an
    earlier entry (rejected, reopened) whose steps must not count. D: not yet due."""
    pool = await create_pool(database_url(), max_size=1)
    repo = RoutingRepository(schema)
    try:
        await migrate(pool, schema, MIGRATIONS)
        async with pool.acquire() as conn, conn.transaction():
            h = timedelta(hours=1)
            await _incident(conn, schema, "A", "assigned", assignment_no=1, ack_due=NOW - 5 * h,
                            resolve_due=NOW - 2 * h)
            await _incident(conn, schema, "B", "acknowledged", assignment_no=1,
                            ack_due=NOW - 9 * h, resolve_due=NOW - h)
            await _incident(conn, schema, "C", "received", assignment_no=0, ack_due=None,
                            resolve_due=None)
            await _incident(conn, schema, "D", "assigned", assignment_no=1, ack_due=NOW + h,
                            resolve_due=NOW + 9 * h)
            work = [(i, 1, DueWork("escalation", d, step, NOW - h))  # type: ignore[arg-type]
                    for i in ("A", "B", "D") for d in ("acknowledge", "resolve")
                    for step in range(1, 5)]
            first, second = NOW - 6 * h, NOW - 3 * h
            for entered, due in ((first, first + h), (second, second + 2 * h)):
                plan = {"deadline": "verify", "due_at": due.isoformat(),
                        "entered_at": entered.isoformat()}
                work += [("C", 0, DueWork("escalation", "verify", step, due, plan, entered))
                         for step in (1, 2)]
            await repo.insert_due_work(conn, work)
            await _fired(conn, schema, "A", "acknowledge", [1, 2, 3], 1)
            await _fired(conn, schema, "A", "resolve", [1], 1)
            await _fired(conn, schema, "B", "acknowledge", [1, 2, 3, 4], 1)
            await _fired(conn, schema, "B", "resolve", [1], 1)
            await conn.execute(f"UPDATE {schema}.due_work SET fired_at = $1 WHERE incident_id "
                               "= 'C' AND (stage_at = $2 OR step = 1)", NOW, first)
    finally:
        await pool.close()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = unique("rt_overdue")
    yield name
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


# By due time, then id: B's resolution and C's verification were both due an hour ago.
EXPECTED = [("A", "acknowledge", 3), ("A", "resolve", 1), ("B", "resolve", 1),
            ("C", "verify", 1)]


async def test_overdue_lists_each_missed_deadline_with_its_own_escalation_step(
        schema: str) -> None:
    await seed_overdue(schema)
    conn = await asyncpg.connect(database_url())
    try:
        rows = await RoutingRepository(schema).overdue(conn, NOW)
    finally:
        await conn.close()
    assert [(r["id"], r["deadline"], r["escalation_step"]) for r in rows] == EXPECTED
    due = {(r["id"], r["deadline"]): r["due_at"] for r in rows}
    assert due[("A", "acknowledge")] == NOW - timedelta(hours=5)
    assert due[("C", "verify")] == NOW - timedelta(hours=1)   # the later entry's deadline


def test_overdue_json_writes_iso_8601_times(schema: str) -> None:
    asyncio.run(seed_overdue(schema))
    result = CliRunner().invoke(cli, ["overdue", "--json"],
                                env={"ROUTING_DB_SCHEMA": schema,
                                     "ROUTING_DATABASE_URL": database_url()})
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    assert [(r["id"], r["deadline"], r["escalation_step"]) for r in rows] == EXPECTED
    for r in rows:
        assert datetime.fromisoformat(r["due_at"]).tzinfo is not None
        assert r["due_at"][10] == "T", r["due_at"]


def tiny_ioc_deadlines(raw: dict[str, Any]) -> dict[str, Any]:
    """The seed policy with IOC step deadlines in seconds (unit deadlines far away)."""
    raw = json.loads(json.dumps(raw))
    raw["ioc_deadlines"] = [{
        "verify": {"seconds": 2}, "approve": {"seconds": 3}, "dispatch": {"seconds": 600},
        "reminders_before": [{"seconds": 1}],
        "remind": {"recipients": ["@ioc"], "contact_roles": ["incident-officer"]},
        "chain": [{"level": "ioc-leader", "after": {"seconds": 0}, "recipients": ["@ioc"],
                   "contact_roles": ["leader"]},
                  {"level": "district-leadership", "after": {"seconds": 6},
                   "recipients": ["@district"], "contact_roles": ["leader"]}],
    }]
    return raw


async def test_missed_verification_escalates_to_the_ioc_leader_and_stops_once_verified(
        world: World, watch) -> None:  # type: ignore[no-untyped-def]
    world.with_policy(tiny_ioc_deadlines)
    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(record("MT-IOC-1", priority="cao"))  # not automated

    def escalated(deadline: str) -> list[Any]:
        return [e for e in w.envelopes(t.events, "routing.incident.escalated", incident)
                if e.payload["deadline"] == deadline]

    await w.wait(lambda: escalated("verify"))
    [step] = escalated("verify")
    assert (step.payload["step"], step.payload["level"], step.payload["state"]) == (
        1, "ioc-leader", "received")
    [note] = [e for e in w.envelopes(t.notifications, "routing.notification.escalation")
              if e.payload["incident_id"] == incident]
    assert note.subject == "ioc-loc-ninh" and note.payload["contact_roles"] == ["leader"]
    assert note.payload["contacts"] == [
        {"role": "leader", "title": "Lãnh đạo", "name": "Lãnh đạo Trung tâm IOC"}]
    [reminder] = [e for e in w.envelopes(t.notifications, "routing.notification.reminder")
                  if e.payload["incident_id"] == incident]
    assert reminder.subject == "ioc-loc-ninh" and reminder.payload["deadline"] == "verify"
    assert [c["role"] for c in reminder.payload["contacts"]] == ["incident-officer"]

    await world.command("ioc-operator", "verify", incident)
    await w.wait(lambda: escalated("approve"))       # the approval deadline runs from here
    s = world.settings.db_schema

    async def verify_step_2() -> asyncpg.Record:
        conn = await asyncpg.connect(database_url())
        try:
            return await conn.fetchrow(
                f"SELECT fired_at, skipped_at FROM {s}.due_work WHERE incident_id = $1 "
                "AND deadline = 'verify' AND step = 2", incident)
        finally:
            await conn.close()

    rows: list[asyncpg.Record] = []

    async def skipped() -> bool:
        rows[:] = [await verify_step_2()]
        return rows[0]["skipped_at"] is not None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await skipped():
        assert loop.time() < deadline, "verify step 2 was neither skipped nor fired"
        await asyncio.sleep(0.2)
    assert rows[0]["fired_at"] is None
    assert [e.payload["step"] for e in escalated("verify")] == [1]

    conn = await asyncpg.connect(database_url())
    try:
        listed = await RoutingRepository(s).overdue(conn, datetime.now(UTC))
    finally:
        await conn.close()
    assert [(r["id"], r["state"], r["deadline"]) for r in listed if r["id"] == incident] == [
        (incident, "verified", "approve")]
