"""The outbox relay publishes every committed row once, even across a crash or a lost lock."""

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from ioc_shared.contracts import Envelope, TopicSpec
from ioc_shared.contracts.headers import H_EVENT_ID
from ioc_shared.platform.db import create_pool
from ioc_shared.platform.kafka import declare_topics, envelope_headers, make_producer
from ioc_shared.platform.outbox import OutboxRelay, enqueue, enqueue_many
from ioc_shared.testing import database_url, headers_of, kafka_bootstrap, read_topic, unique
from opentelemetry.sdk.trace import TracerProvider

pytestmark = pytest.mark.connected


class Crash(Exception):
    pass


class CrashAfterPublish(OutboxRelay):
    async def _after_publish_hook(self) -> None:
        raise Crash("relay died between publish and mark")


async def new_topic() -> str:
    name = unique("t.outbox").replace("_", "-")
    await declare_topics(kafka_bootstrap(), [TopicSpec(name, 3, 3_600_000)])
    return name


async def enqueue_events(pool: asyncpg.Pool, schema: str, topic: str, n: int) -> list[Envelope]:
    events = [Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject=f"inc-{i % 4}",
                       payload={"seq": i}) for i in range(n)]
    async with pool.acquire() as conn, conn.transaction():
        for env in events:
            await enqueue(conn, schema, topic, env)
    return events


@contextlib.asynccontextmanager
async def started_relay(pool: asyncpg.Pool, schema: str, **options: Any) -> AsyncIterator[OutboxRelay]:
    """A relay with its own started producer; both closed on exit."""
    producer = make_producer(kafka_bootstrap(), client_id="test-relay")
    await producer.start()
    relay = OutboxRelay(pool, schema, producer, kafka_bootstrap(), **options)
    try:
        yield relay
    finally:
        await relay.close()
        await producer.stop()


async def drain(relay: OutboxRelay) -> None:
    """Publish until nothing is pending."""
    while await relay.drain_once():
        pass


def event_ids(records: list) -> list[str]:
    return [headers_of(r)[H_EVENT_ID] for r in records]


async def published_once(topic: str, events: list[Envelope]) -> list:
    """Every record on `topic` once they all arrived (and a little longer, for late
    duplicates); asserts each event is there exactly once."""
    await read_topic(topic, until=lambda r: len(r) >= len(events), timeout=10)
    await asyncio.sleep(1.0)
    records = await read_topic(topic, until=lambda r: False, timeout=1.5)
    counts = Counter(event_ids(records))
    assert set(counts) == {str(e.event_id) for e in events}
    assert max(counts.values()) == 1, "a message was published twice"
    return records


async def test_relay_publishes_rows_in_order_per_key_and_marks_them(schema_pool) -> None:
    schema, pool = schema_pool
    topic = await new_topic()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("state change") as span:
        events = await enqueue_events(pool, schema, topic, 40)
    trace_id = format(span.get_span_context().trace_id, "032x")
    async with started_relay(pool, schema, batch_size=15) as relay:
        await drain(relay)
    records = await read_topic(topic, until=lambda r: len(r) >= 40)
    assert sorted(event_ids(records)) == sorted(str(e.event_id) for e in events)
    for key in {e.subject for e in events}:
        seqs = [Envelope.from_bytes(r.value).payload["seq"] for r in records if r.key == key.encode()]
        assert seqs == sorted(seqs)
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0
    # The trace context current when the row was written travels with every message.
    assert all(headers_of(r)["traceparent"].split("-")[1] == trace_id for r in records)


async def test_crash_between_publish_and_mark_publishes_each_row_once(schema_pool) -> None:
    schema, pool = schema_pool
    topic = await new_topic()
    events = await enqueue_events(pool, schema, topic, 25)
    producer = make_producer(kafka_bootstrap(), client_id="test-relay")
    await producer.start()
    try:
        crashing = CrashAfterPublish(pool, schema, producer, kafka_bootstrap(), batch_size=10)
        with pytest.raises(Crash):
            await crashing.drain_once()   # first 10 reached Kafka, none marked
        await crashing.close()
        unmarked = await pool.fetchval(
            f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
        assert unmarked == 25

        restarted = OutboxRelay(pool, schema, producer, kafka_bootstrap(), batch_size=10)
        assert await restarted.recover() == 10
        await drain(restarted)
        await restarted.close()
    finally:
        await producer.stop()
    await published_once(topic, events)


async def test_crash_after_a_transactions_messages_went_out_publishes_each_once(schema_pool) -> None:
    """One transaction's messages share one row, spread over partitions and record batches;
    a relay that died after sending them and a later transaction's row are resolved
    message by message."""
    schema, pool = schema_pool
    topic = await new_topic()
    first = [Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject=f"inc-{i % 7}",
                      payload={"seq": i, "pad": "x" * 400}) for i in range(300)]
    second = [Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject=f"inc-{i}",
                       payload={"seq": 300 + i}) for i in range(5)]
    for events in (first, second):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_many(conn, schema, [(topic, e, None, envelope_headers(e)) for e in events])
    # Small record batches: the 300 messages need several per partition.
    producer = make_producer(kafka_bootstrap(), client_id="test-relay", max_batch_size=16 * 1024)
    await producer.start()
    try:
        crashing = CrashAfterPublish(pool, schema, producer, kafka_bootstrap(), batch_size=1)
        with pytest.raises(Crash):
            await crashing.drain_once()   # the first row went out whole, nothing marked
        await crashing.close()
        restarted = OutboxRelay(pool, schema, producer, kafka_bootstrap(), batch_size=1)
        assert await restarted.recover() == 300
        assert await restarted.drain_once() == 300   # marked, not sent again
        assert await restarted.drain_once() == 5
        assert await restarted.drain_once() == 0
        await restarted.close()
    finally:
        await producer.stop()
    records = await published_once(topic, first + second)
    for key in {e.subject for e in first}:
        seqs = [Envelope.from_bytes(r.value).payload["seq"] for r in records if r.key == key.encode()]
        assert seqs == sorted(seqs)


async def test_rolled_back_transaction_publishes_nothing(schema_pool) -> None:
    schema, pool = schema_pool
    topic = await new_topic()
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, schema, topic, Envelope(type="test.x", source_unit="u"))
            raise RuntimeError("state change failed")
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 0


async def test_only_one_relay_runs_per_schema(schema_pool) -> None:
    schema, pool = schema_pool
    topic = await new_topic()
    producer = make_producer(kafka_bootstrap(), client_id="test-relay")
    await producer.start()
    first = OutboxRelay(pool, schema, producer, kafka_bootstrap(), idle_poll_s=0.05)
    second = OutboxRelay(pool, schema, producer, kafka_bootstrap(), idle_poll_s=0.05)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        events = await enqueue_events(pool, schema, topic, 30)
        records = await read_topic(topic, until=lambda r: len(r) >= 30)
        await asyncio.sleep(0.5)
        assert sorted(event_ids(records)) == sorted(str(e.event_id) for e in events)
        assert sorted([first.published, second.published]) == [0, 30]
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await first.close()
        await second.close()
        await producer.stop()
    assert uuid.UUID(event_ids(records)[0])


async def test_published_rows_are_deleted_after_the_retention(schema_pool) -> None:
    schema, pool = schema_pool
    topic = await new_topic()
    await enqueue_events(pool, schema, topic, 3)
    async with started_relay(pool, schema, retention_s=3600) as relay:
        await drain(relay)
        await enqueue_events(pool, schema, topic, 2)   # pending: never deleted
        assert await relay.delete_published() == 0     # published just now: kept
        await pool.execute(f"UPDATE {schema}.outbox SET published_at = now() - interval '2 hours' "
                           "WHERE published_at IS NOT NULL")
        assert await relay.delete_published() == 3
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 2


async def test_rows_pending_in_the_old_layout_are_migrated_and_published() -> None:
    """A schema from before the packed outbox: its pending rows go out after migration."""
    from importlib import resources

    from ioc_shared.platform.db import create_pool, migrate
    from ioc_shared.testing import database_url

    schema = unique("t_shared_old")
    topic = await new_topic()
    pool = await create_pool(database_url(), max_size=4)
    first = (resources.files("ioc_shared.platform").joinpath("migrations/0000_platform.sql")
             .read_text(encoding="utf-8"))
    events = [Envelope(type="test.old", source_unit="ioc-loc-ninh", subject=f"k{i}",
                       payload={"seq": i, "text": "Lộc Ninh"}) for i in range(3)]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET LOCAL search_path TO {schema}")
            await conn.execute(first)
            await conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, "
                               "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            import hashlib
            await conn.execute("INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                               "0000_platform.sql", hashlib.sha256(first.encode()).hexdigest())
            for i, env in enumerate(events):
                await conn.execute(
                    "INSERT INTO outbox (event_id, topic, key, headers, value, published_at) "
                    "VALUES ($1, $2, $3, $4::jsonb, $5, $6)", env.event_id, topic,
                    None if i == 1 else env.key, f'{{"{H_EVENT_ID}": "{env.event_id}"}}',
                    env.to_bytes(), None)
        assert await migrate(pool, schema, None) == [
            "platform/0001_batched_outbox.sql", "platform/0002_outbox_parked.sql",
            "platform/0003_consumer_parked.sql", "platform/0004_retention.sql"]
        async with started_relay(pool, schema) as relay:
            assert await relay.drain_once() == 3
        records = await read_topic(topic, until=lambda r: len(r) >= 3)
        by_id = {headers_of(r)[H_EVENT_ID]: r for r in records}
        assert set(by_id) == {str(e.event_id) for e in events}
        for i, env in enumerate(events):
            record = by_id[str(env.event_id)]
            assert Envelope.from_bytes(record.value) == env
            assert record.key == (None if i == 1 else env.key)
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()


async def test_crash_with_two_batches_in_flight_publishes_each_message_once(schema_pool) -> None:
    """The running relay queues the next batch while the previous one is acknowledged."""
    schema, pool = schema_pool
    topic = await new_topic()
    events = []
    for t in range(2):
        batch = [Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject=f"k{i % 5}",
                          payload={"seq": t * 100 + i}) for i in range(20)]
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_many(conn, schema, [(topic, e, None, envelope_headers(e)) for e in batch])
        events += batch
    producer = make_producer(kafka_bootstrap(), client_id="test-relay")
    await producer.start()
    try:
        crashing = CrashAfterPublish(pool, schema, producer, kafka_bootstrap(), batch_size=1)
        with pytest.raises(Crash):
            await asyncio.wait_for(crashing.run(), 20)
        await crashing.close()
        restarted = OutboxRelay(pool, schema, producer, kafka_bootstrap(), batch_size=1)
        assert await restarted.recover() == 40   # both rows were in flight
        await drain(restarted)
        await restarted.close()
    finally:
        await producer.stop()
    await published_once(topic, events)
    assert await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0



async def test_a_message_too_large_for_the_broker_is_parked_and_does_not_block(schema_pool) -> None:
    schema, pool = schema_pool
    topic = await new_topic()
    small = [Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject="inc-1",
                      payload={"seq": i}) for i in range(2)]
    # Larger than the broker's message.max.bytes (1 MiB): it would fail on every attempt.
    huge = Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject="inc-1",
                    payload={"blob": "x" * 1_100_000})
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_many(conn, schema, [(topic, e, None, envelope_headers(e))
                                          for e in (small[0], huge, small[1])])
    later = await enqueue_events(pool, schema, topic, 1)   # a row after it
    async with started_relay(pool, schema) as relay:
        await asyncio.wait_for(drain(relay), 30)
        assert relay.parked == 1
    records = await published_once(topic, [*small, *later])
    assert [i for i in event_ids(records) if i != str(later[0].event_id)] == [
        str(e.event_id) for e in small]   # in order, around the parked one
    parked = await pool.fetch(f"SELECT event_id, topic, size, payload FROM {schema}.outbox_parked")
    assert [(p["event_id"], p["topic"]) for p in parked] == [(str(huge.event_id), topic)]
    assert parked[0]["payload"] == huge.to_bytes() and parked[0]["size"] > 1_000_000
    assert await pool.fetchval(
        f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL") == 0


class TimedRelay(OutboxRelay):
    """Records when it hands a batch to the producer and when the broker confirmed it; after
    its first tenure of the lock it waits before asking again (so the other one takes over)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[float, float]] = []
        self._started_at: list[float] = []
        self.tenures = 0

    async def _queue(self, batch: Any) -> Any:
        self._started_at.append(asyncio.get_running_loop().time())
        return await super()._queue(batch)

    async def _after_publish_hook(self) -> None:
        self.sends.append((self._started_at.pop(0), asyncio.get_running_loop().time()))

    async def _hold_lock_and_publish(self) -> bool | None:
        if self.tenures:
            await asyncio.sleep(3.0)
        self.tenures += 1
        return await super()._hold_lock_and_publish()


async def test_a_relay_that_loses_its_lock_stops_and_the_other_takes_over(schema_pool) -> None:
    """The lock's session is killed (`pg_terminate_backend`) while events stream in: the
    relay stops publishing at once, the standby takes over, nothing is lost or doubled."""
    schema, _ = schema_pool
    topic = await new_topic()
    pools = [await create_pool(database_url(), max_size=4) for _ in range(2)]
    producers = [make_producer(kafka_bootstrap(), client_id=f"test-relay-{i}") for i in range(2)]
    for producer in producers:
        await producer.start()
    first, second = (TimedRelay(pool, schema, producer, kafka_bootstrap(), idle_poll_s=0.05,
                                batch_size=50, topics=[topic])
                     for pool, producer in zip(pools, producers, strict=True))
    tasks = [asyncio.create_task(first.run())]
    await asyncio.sleep(0.3)   # the first one holds the lock
    tasks.append(asyncio.create_task(second.run()))
    events: list[Envelope] = []
    try:
        for _ in range(20):
            events += await enqueue_events(pools[0], schema, topic, 25)
            await asyncio.sleep(0.02)
        key = first._lock_key & 0xFFFFFFFFFFFFFFFF
        holder = await pools[0].fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
            key >> 32, key & 0xFFFFFFFF)
        assert holder is not None
        killed_at = asyncio.get_running_loop().time()
        assert await pools[0].fetchval("SELECT pg_terminate_backend($1)", holder)
        for _ in range(40):
            events += await enqueue_events(pools[0], schema, topic, 25)
            await asyncio.sleep(0.02)
        await published_once(topic, events)
    finally:
        for relay in (first, second):
            relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for relay, producer, pool in zip((first, second), producers, pools, strict=True):
            await relay.close()
            await producer.stop()
            await pool.close()
    assert first.published > 0 and second.published > 0, "the standby took over"
    assert first.tenures >= 1
    # Never both at once: the first one's last send ended before the second one's first.
    takeover = min(start for start, _ in second.sends)
    assert takeover > killed_at
    assert max(end for _, end in first.sends) <= takeover


async def test_relay_publish_is_a_span_child_of_the_span_that_wrote_the_row(schema_pool) -> None:
    from ioc_shared.testing import recorded_spans
    from opentelemetry import trace

    schema, pool = schema_pool
    topic = await new_topic()
    with recorded_spans("relay-trace-test") as exporter:
        with trace.get_tracer("t").start_as_current_span("state change") as writer:
            events = await enqueue_events(pool, schema, topic, 3)
        async with started_relay(pool, schema) as relay:
            await drain(relay)
        records = await read_topic(topic, until=lambda r: len(r) >= 3)
    publishes = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()
                 if s.name == f"{topic} publish"}
    assert len(publishes) == len(events)
    for span in publishes.values():
        assert span.parent is not None and span.parent.span_id == writer.get_span_context().span_id
        assert span.context.trace_id == writer.get_span_context().trace_id
    # What a consumer sees as its parent is the publish span of its own message.
    for r in records:
        _, trace_id, parent, _ = headers_of(r)["traceparent"].split("-")
        assert trace_id == format(writer.get_span_context().trace_id, "032x")
        assert publishes[parent].attributes["ioc.event_id"] == headers_of(r)[H_EVENT_ID]
