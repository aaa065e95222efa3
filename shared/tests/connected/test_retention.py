"""Retention on the real PostgreSQL: only expired rows go, in slices, one instance at a time."""

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest
from ioc_shared.contracts.topics import DAY_MS, TopicSpec
from ioc_shared.platform.retention import RetentionJob, RetentionPolicy, platform_policies
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.connected

CONSUMED = [TopicSpec("t.consumed", 3, 30 * DAY_MS)]   # processed events kept 37 days


class CountingSlices(RetentionJob):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.slices: list[int] = []

    async def _after_slice_hook(self, conn: asyncpg.Connection) -> None:
        self.slices.append(conn.get_server_pid())


async def add_processed(pool: asyncpg.Pool, schema: str, n: int, age_days: float) -> None:
    await pool.execute(
        f"INSERT INTO {schema}.processed_events (consumer, event_id, processed_at) "
        "SELECT 'c', gen_random_uuid(), now() - make_interval(days => $2) "
        "FROM generate_series(1, $1)", n, age_days)


async def add_consumer_parked(pool: asyncpg.Pool, schema: str, offset: int, parked_days: float,
                              replayed_days: float | None) -> None:
    await pool.execute(
        f"INSERT INTO {schema}.consumer_parked (consumer, topic, partition, \"offset\", value, "
        "error, attempts, parked_at, replayed_at) VALUES ('c', 't', 0, $1, 'v', 'E', 3, "
        "now() - make_interval(days => $2), now() - make_interval(days => $3))",
        offset, parked_days, replayed_days)


async def add_outbox_parked(pool: asyncpg.Pool, schema: str, parked_days: float,
                            republished_days: float | None = None,
                            dropped_days: float | None = None) -> str:
    event_id = str(uuid.uuid4())
    await pool.execute(
        f"INSERT INTO {schema}.outbox_parked (event_id, row_id, topic, headers, payload, size, "
        "parked_at, republished_at, dropped_at, drop_reason) VALUES ($1, 1, 't', '{}', 'p', 1, "
        "now() - make_interval(days => $2), now() - make_interval(days => $3), "
        "now() - make_interval(days => $4), CASE WHEN $4 IS NULL THEN NULL ELSE 'why' END)",
        event_id, parked_days, republished_days, dropped_days)
    return event_id


async def count(pool: asyncpg.Pool, schema: str, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {schema}.{table}"))


async def fill(pool: asyncpg.Pool, schema: str) -> dict[str, list[str]]:
    """35 expired and 5 live processed events; parked rows of each state, old and recent."""
    await add_processed(pool, schema, 35, age_days=40)
    await add_processed(pool, schema, 5, age_days=30)
    await add_consumer_parked(pool, schema, 1, 200, replayed_days=100)   # expired
    await add_consumer_parked(pool, schema, 2, 200, replayed_days=10)    # replayed lately
    await add_consumer_parked(pool, schema, 3, 200, replayed_days=None)  # still waiting
    expired = [await add_outbox_parked(pool, schema, 200, republished_days=95),
               await add_outbox_parked(pool, schema, 200, dropped_days=91)]
    kept = [await add_outbox_parked(pool, schema, 200),
            await add_outbox_parked(pool, schema, 200, republished_days=5)]
    return {"expired": expired, "kept": kept}


async def test_one_round_deletes_only_expired_rows_in_slices(schema_pool) -> None:
    schema, pool = schema_pool
    outbox = await fill(pool, schema)
    registry = CollectorRegistry()
    job = CountingSlices(pool, schema, platform_policies(CONSUMED), registry=registry,
                         slice_rows=10)

    assert await job.prune_once() == {"processed_events": 35, "consumer_parked": 1,
                                      "outbox_parked": 2}
    # 10 + 10 + 10 + 5 processed events, then one slice per parked table.
    assert len(job.slices) == 4 + 1 + 1
    assert await count(pool, schema, "processed_events") == 5
    assert {r["offset"] for r in await pool.fetch(
        f"SELECT \"offset\" FROM {schema}.consumer_parked")} == {2, 3}
    left = {r["event_id"] for r in await pool.fetch(f"SELECT event_id FROM {schema}.outbox_parked")}
    assert left == set(outbox["kept"])
    assert registry.get_sample_value("ioc_retention_deleted_total",
                                     {"table": "processed_events"}) == 35
    assert registry.get_sample_value("ioc_retention_deleted_total",
                                     {"table": "outbox_parked"}) == 2

    # Nothing left to delete: a second round deletes nothing and changes no metric.
    assert await job.prune_once() == {"processed_events": 0, "consumer_parked": 0,
                                      "outbox_parked": 0}
    assert registry.get_sample_value("ioc_retention_deleted_total",
                                     {"table": "processed_events"}) == 35


async def test_the_extra_condition_keeps_rows_it_excludes(schema_pool) -> None:
    schema, pool = schema_pool
    await add_processed(pool, schema, 3, age_days=10)
    await pool.execute(f"UPDATE {schema}.processed_events SET consumer = 'keep' "
                       "WHERE ctid = (SELECT min(ctid) FROM "
                       f"{schema}.processed_events)")
    policy = RetentionPolicy("processed_events", "processed_at", timedelta(days=1),
                             where="consumer <> 'keep'")
    assert await RetentionJob(pool, schema, [policy]).prune_once() == {"processed_events": 2}
    assert [r["consumer"] for r in await pool.fetch(
        f"SELECT consumer FROM {schema}.processed_events")] == ["keep"]


class HeldAfterFirstSlice(CountingSlices):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.in_round = asyncio.Event()
        self.go_on = asyncio.Event()

    async def _after_slice_hook(self, conn: asyncpg.Connection) -> None:
        await super()._after_slice_hook(conn)
        self.in_round.set()
        await self.go_on.wait()


async def test_two_jobs_on_one_schema_do_not_both_prune(schema_pool) -> None:
    schema, pool = schema_pool
    await add_processed(pool, schema, 35, age_days=40)
    first = HeldAfterFirstSlice(pool, schema, platform_policies(CONSUMED), slice_rows=10)
    second = CountingSlices(pool, schema, platform_policies(CONSUMED), slice_rows=10)

    running = asyncio.create_task(first.prune_once())
    await asyncio.wait_for(first.in_round.wait(), 10)
    assert await second.prune_once() is None          # the first holds the schema's lock
    assert second.slices == []
    assert await count(pool, schema, "processed_events") == 25
    first.go_on.set()
    done = await asyncio.wait_for(running, 10)
    assert done is not None and done["processed_events"] == 35
    # Once the first round is over, the lock is free again.
    assert await second.prune_once() == {"processed_events": 0, "consumer_parked": 0,
                                         "outbox_parked": 0}


async def test_a_connection_killed_mid_round_is_retried_and_the_round_completes(
        schema_pool) -> None:
    schema, pool = schema_pool
    await add_processed(pool, schema, 20, age_days=40)
    await pool.execute(f"UPDATE {schema}.processed_events SET consumer = 'first'")
    await add_processed(pool, schema, 15, age_days=40)
    job = CountingSlices(pool, schema, platform_policies(CONSUMED), slice_rows=10,
                         backoff_initial_s=0.05, backoff_max_s=0.1)
    async with pool.acquire() as locker:
        # The later rows are locked: the slice that reaches them waits, and dies there.
        locking = locker.transaction()
        await locking.start()
        await locker.execute(f"SELECT 1 FROM {schema}.processed_events "
                             "WHERE consumer = 'c' FOR UPDATE")
        round_ = asyncio.create_task(job.prune_once())
        blocked = None
        for _ in range(500):
            blocked = await pool.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE $1", f"DELETE FROM {schema}.processed_events%")
            if blocked:
                break
            await asyncio.sleep(0.02)
        assert blocked, "a slice should wait for the locked rows"
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", blocked)
        await locking.rollback()
    counts = await asyncio.wait_for(round_, 30)
    assert counts is not None and counts["processed_events"] == 35   # across both attempts
    assert len(job.slices) >= 2 + 4   # two before the kill, then a whole round again
    assert await count(pool, schema, "processed_events") == 0


class CountingRounds(RetentionJob):
    rounds = 0

    async def prune_once(self) -> dict[str, int] | None:
        self.rounds += 1
        return await super().prune_once()


async def test_a_failing_round_does_not_stop_the_job(schema_pool) -> None:
    schema, pool = schema_pool
    broken = RetentionPolicy("no_such_table", "ts", timedelta(days=1))
    job = CountingRounds(pool, schema, [broken], interval_s=0.05, first_round_s=0.0,
                         attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01)
    task = asyncio.create_task(job.run())
    await asyncio.sleep(0.5)
    assert not task.done(), "a failed round must not end the job"
    assert job.rounds >= 2, "the next round comes after a failed one"
    job.stop()
    await asyncio.wait_for(task, 5)
