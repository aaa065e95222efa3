"""DurableConsumer through the real broker and database: parking, redelivery, replay,
transient errors and health."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from aiokafka import TopicPartition
from ioc_shared.contracts import TopicSpec
from ioc_shared.platform.consumer import Delivery, DurableConsumer, FailurePolicy
from ioc_shared.platform.idempotency import claim_events
from ioc_shared.platform.kafka import declare_topics, make_admin, make_broker, make_producer
from ioc_shared.platform.parking import H_REPLAY_OF, headers_from_json, list_parked, replay_parked
from ioc_shared.testing import eventually, kafka_bootstrap, unique
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.connected

QUICK = FailurePolicy(max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.2, jitter_s=0.05)


async def new_topic() -> str:
    topic = unique("t.consumer").replace("_", "-")
    await declare_topics(kafka_bootstrap(), [TopicSpec(topic, 1, 3_600_000)])
    return topic


async def produce(topic: str, records: Sequence[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topic, value, key=b"k", partition=0, headers=headers)
    finally:
        await producer.stop()


async def committed(group: str, topic: str) -> int | None:
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return meta.offset if meta is not None and meta.offset >= 0 else None


@contextlib.asynccontextmanager
async def running(*consumers: DurableConsumer) -> AsyncIterator[None]:
    broker = make_broker(kafka_bootstrap(), service="test")
    for c in consumers:
        c.register(broker)
    async with broker:
        await broker.start()
        try:
            yield
        finally:
            for c in consumers:
                c.stop()


async def notes_table(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f"CREATE TABLE {schema}.notes (event_id uuid PRIMARY KEY, body text NOT NULL)")


def note(body: str) -> tuple[uuid.UUID, bytes]:
    event_id = uuid.uuid4()
    return event_id, json.dumps({"event_id": str(event_id), "body": body}).encode()


def store_notes(pool: asyncpg.Pool, schema: str, name: str,
                fresh_seen: list[set[uuid.UUID]] | None = None):
    """A handler as services write them: claim the batch's ids, apply the new ones, one
    transaction."""

    async def handler(batch: Sequence[Delivery]) -> None:
        notes = {uuid.UUID(n["event_id"]): n["body"] for n in (json.loads(d.value) for d in batch)}
        async with pool.acquire() as conn, conn.transaction():
            fresh = await claim_events(conn, schema, name, list(notes))
            if fresh_seen is not None:
                fresh_seen.append(fresh)
            await conn.executemany(f"INSERT INTO {schema}.notes VALUES ($1, $2)",
                                   [(i, notes[i]) for i in notes if i in fresh])

    return handler


async def test_a_record_postgresql_refuses_is_parked_raw_and_the_partition_moves_on(
        schema_pool) -> None:
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    records = [note(f"note {i}") for i in range(5)]
    poison_id, poison_value = note("NUL \x00 is refused by PostgreSQL text")
    records.insert(2, (poison_id, poison_value))
    poison_headers = [("ioc-event-id", str(poison_id).encode()), ("odd", b"\xff\x00\xfe")]
    await produce(topic, [(v, poison_headers if i == poison_id else []) for i, v in records])
    registry = CollectorRegistry()
    consumer = DurableConsumer(name, [topic], group, store_notes(pool, schema, name), pool=pool,
                               schema=schema, policy=QUICK, metrics=registry)
    async with running(consumer):
        await eventually(lambda: pool.fetchval(f"SELECT count(*) = 5 FROM {schema}.notes"))
        await eventually(lambda: pool.fetchval(f"SELECT count(*) = 1 FROM {schema}.consumer_parked"))
        assert await eventually(lambda: committed(group, topic)) == 6, "committed past the poison"
    row = await pool.fetchrow(f"SELECT * FROM {schema}.consumer_parked")
    assert (row["consumer"], row["topic"], row["partition"], row["offset"]) == (name, topic, 0, 2)
    assert row["value"] == poison_value and row["key"] == b"k"
    assert headers_from_json(row["headers"]) == poison_headers
    assert row["attempts"] == QUICK.max_attempts and row["replayed_at"] is None
    assert row["error"].startswith(("CharacterNotInRepertoireError", "UntranslatableCharacterError"))
    bodies = [r["body"] for r in await pool.fetch(f"SELECT body FROM {schema}.notes ORDER BY body")]
    assert bodies == [f"note {i}" for i in range(5)]
    assert registry.get_sample_value("ioc_consumer_parked_total", {"consumer": name}) == 1.0
    assert [p.offset for p in await list_parked(pool, schema, name)] == [2]


async def test_a_crash_after_the_commit_redelivers_the_batch_and_effects_apply_once(
        schema_pool) -> None:
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    records = [note(f"note {i}") for i in range(4)]
    await produce(topic, [(v, []) for _, v in records])
    committed_tx = asyncio.Event()
    store = store_notes(pool, schema, name)

    async def crashes_after_its_commit(batch: Sequence[Delivery]) -> None:
        await store(batch)
        committed_tx.set()
        await asyncio.Event().wait()   # "dies" here: the process stops before the offset commit

    first = DurableConsumer(name, [topic], group, crashes_after_its_commit, pool=pool,
                            schema=schema, policy=QUICK)
    async with running(first):
        await asyncio.wait_for(committed_tx.wait(), 30)
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.notes") >= 1
    assert await committed(group, topic) is None, "nothing was committed"

    fresh_seen: list[set[uuid.UUID]] = []
    offsets_seen: list[int] = []
    store_again = store_notes(pool, schema, name, fresh_seen)

    async def second_handler(batch: Sequence[Delivery]) -> None:
        offsets_seen.extend(d.offset for d in batch)
        await store_again(batch)

    second = DurableConsumer(name, [topic], group, second_handler, pool=pool, schema=schema,
                             policy=QUICK)
    async with running(second):
        assert await eventually(lambda: committed(group, topic)) == 4
    assert offsets_seen[0] == 0, "the uncommitted batch was delivered again"
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.notes") == 4
    assert sum(len(f) for f in fresh_seen) < 4, "the redelivered records were claimed before"
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.consumer_parked") == 0
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.processed_events") == 4


async def test_replay_republishes_a_parked_record_and_the_fixed_handler_takes_it(
        schema_pool) -> None:
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    fixed = False
    store = store_notes(pool, schema, name)
    seen_replay_of: list[str | None] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for d in batch:
            if b"needs the fix" in d.value and not fixed:
                raise RuntimeError("a bug in this version")
            seen_replay_of.append(d.header(H_REPLAY_OF))
        await store(batch)

    bad_id, bad_value = note("needs the fix")
    await produce(topic, [(note("before")[1], []), (bad_value, [("trace", b"abc")])])
    consumer = DurableConsumer(name, [topic], group, handler, pool=pool, schema=schema,
                               policy=QUICK)
    async with running(consumer):
        await eventually(lambda: pool.fetchval(f"SELECT count(*) = 1 FROM {schema}.consumer_parked"))
        fixed = True
        producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
        await producer.start()
        try:
            assert await replay_parked(pool, schema, producer, consumer=name) == [1]
            assert await replay_parked(pool, schema, producer, all=True) == [], "replayed once"
        finally:
            await producer.stop()
        await eventually(lambda: pool.fetchval(
            f"SELECT count(*) = 1 FROM {schema}.notes WHERE event_id = $1", bad_id))
    assert seen_replay_of[-1] == f"{name}/{topic}:0:1"
    assert await list_parked(pool, schema) == []
    (replayed,) = await list_parked(pool, schema, include_replayed=True)
    assert replayed.replayed_at is not None and replayed.offset == 1


async def test_a_transient_error_is_retried_without_parking_or_counting_attempts(
        schema_pool) -> None:
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    store = store_notes(pool, schema, name)
    calls = 0

    async def database_away_twice(batch: Sequence[Delivery]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 15432)")
        await store(batch)

    await produce(topic, [(note("only")[1], [])])
    one_attempt = FailurePolicy(max_attempts=1, backoff_initial_s=0.05, backoff_max_s=0.1)
    consumer = DurableConsumer(name, [topic], group, database_away_twice, pool=pool,
                               schema=schema, policy=one_attempt)
    async with running(consumer):
        assert await eventually(lambda: committed(group, topic)) == 1
    assert calls == 3
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.notes") == 1
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.consumer_parked") == 0
    assert consumer.health() == (True, None)


async def test_health_is_not_ready_while_a_batch_is_stuck_and_ready_after(schema_pool) -> None:
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    store = store_notes(pool, schema, name)
    release = asyncio.Event()

    async def slow(batch: Sequence[Delivery]) -> None:
        await release.wait()
        await store(batch)

    await produce(topic, [(note("slow")[1], [])])
    consumer = DurableConsumer(name, [topic], group, slow, pool=pool, schema=schema,
                               policy=FailurePolicy(stuck_after_s=0.3))
    async with running(consumer):
        assert consumer.health() == (True, None)
        await eventually(lambda: not consumer.health()[0])
        why = consumer.health()[1]
        assert why is not None and why.startswith("batch in the handler")
        release.set()
        assert await eventually(lambda: committed(group, topic)) == 1
        assert consumer.health() == (True, None)


async def test_pipelined_commits_a_batch_only_once_its_confirmations_are_in(schema_pool) -> None:
    # Batches of at most two records: each is at least half full, so it is pipelined.
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    store = store_notes(pool, schema, name)
    confirmations: list[asyncio.Future[None]] = []

    async def handler(batch: Sequence[Delivery]) -> asyncio.Future[None]:
        await store(batch)
        confirmations.append(asyncio.get_running_loop().create_future())
        return confirmations[-1]   # "on their way to the broker"

    await produce(topic, [(note(f"note {i}")[1], []) for i in range(3)])
    consumer = DurableConsumer(name, [topic], group, handler, pool=pool, schema=schema,
                               policy=QUICK, pipelined=True, max_records=2)
    async with running(consumer):
        await eventually(lambda: pool.fetchval(f"SELECT count(*) = 3 FROM {schema}.notes"))
        await asyncio.sleep(0.5)
        assert await committed(group, topic) is None, "committed before its confirmations"
        for c in confirmations:
            c.set_result(None)
        assert await eventually(lambda: committed(group, topic)) == 3
        before = len(confirmations)
        await produce(topic, [(note("later")[1], [])])
        await eventually(lambda: len(confirmations) > before)
        await asyncio.sleep(0.3)
        assert await committed(group, topic) == 3
        confirmations[-1].set_result(None)
        assert await eventually(lambda: committed(group, topic)) == 4
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.processed_events") == 4


async def test_pipelined_a_batch_whose_confirmations_fail_is_worked_again_before_its_commit(
        schema_pool) -> None:
    schema, pool = schema_pool
    await notes_table(pool, schema)
    topic, group, name = await new_topic(), unique("g"), "notes"
    store = store_notes(pool, schema, name)
    offsets_seen: list[list[int]] = []

    async def handler(batch: Sequence[Delivery]) -> asyncio.Future[None] | None:
        offsets_seen.append([d.offset for d in batch])
        await store(batch)
        if len(offsets_seen) > 1:
            return None   # confirmed
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("the broker refused the outputs"))
        return failed

    await produce(topic, [(note(f"note {i}")[1], []) for i in range(3)])
    consumer = DurableConsumer(name, [topic], group, handler, pool=pool, schema=schema,
                               policy=QUICK, pipelined=True, max_records=2)
    async with running(consumer):
        assert await eventually(lambda: committed(group, topic)) == 3
    # Worked again (possibly after the next batch started: its outputs may come first).
    assert offsets_seen[0][0] == 0 and offsets_seen.count(offsets_seen[0]) == 2, offsets_seen
    assert sorted({o for batch in offsets_seen for o in batch}) == [0, 1, 2]
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.notes") == 3
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.consumer_parked") == 0
