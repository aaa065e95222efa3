"""A redelivered message changes state once: the claim shares the state change's transaction."""

import asyncio

import pytest
from faststream.kafka import KafkaMessage
from ioc_shared.contracts import Envelope, TopicSpec
from ioc_shared.platform.idempotency import process_once
from ioc_shared.platform.kafka import DURABLE, declare_topics, make_broker, make_producer
from ioc_shared.testing import kafka_bootstrap, unique

pytestmark = pytest.mark.connected


async def make_counter(pool, schema: str) -> None:
    await pool.execute(f"CREATE TABLE {schema}.counter (name text PRIMARY KEY, n int NOT NULL)")
    await pool.execute(f"INSERT INTO {schema}.counter VALUES ('hits', 0)")


async def test_process_once_applies_a_redelivery_once(schema_pool) -> None:
    schema, pool = schema_pool
    await make_counter(pool, schema)
    event = Envelope(type="test.hit", source_unit="u")

    async def bump(conn) -> int:
        return await conn.fetchval(f"UPDATE {schema}.counter SET n = n + 1 RETURNING n")

    assert await process_once(pool, schema, "c", event.event_id, bump) == (True, 1)
    assert await process_once(pool, schema, "c", event.event_id, bump) == (False, None)
    assert await process_once(pool, schema, "other-consumer", event.event_id, bump) == (True, 2)


async def test_failed_effect_releases_the_claim(schema_pool) -> None:
    schema, pool = schema_pool
    await make_counter(pool, schema)
    event = Envelope(type="test.hit", source_unit="u")

    async def fail(conn) -> None:
        await conn.execute(f"UPDATE {schema}.counter SET n = n + 1")
        raise ConnectionError("lost the database mid-way")

    with pytest.raises(ConnectionError):
        await process_once(pool, schema, "c", event.event_id, fail)
    assert await pool.fetchval(f"SELECT n FROM {schema}.counter") == 0

    async def bump(conn) -> None:
        await conn.execute(f"UPDATE {schema}.counter SET n = n + 1")

    assert (await process_once(pool, schema, "c", event.event_id, bump))[0] is True
    assert await pool.fetchval(f"SELECT n FROM {schema}.counter") == 1


async def test_crash_after_commit_before_ack_is_redelivered_and_ignored(schema_pool) -> None:
    """Through a real broker: the handler commits, then dies before the offset commit."""
    schema, pool = schema_pool
    await make_counter(pool, schema)
    topic = unique("t.idem").replace("_", "-")
    await declare_topics(kafka_bootstrap(), [TopicSpec(topic, 1, 3_600_000)])
    broker = make_broker(kafka_bootstrap(), service="test")
    calls: list[str] = []
    done = asyncio.Event()

    @broker.subscriber(topic, group_id=unique("g"), **DURABLE)
    async def handle(msg: KafkaMessage) -> None:
        event = Envelope.from_bytes(msg.body)
        calls.append(str(event.event_id))

        async def bump(conn) -> None:
            await conn.execute(f"UPDATE {schema}.counter SET n = n + 1")

        await process_once(pool, schema, "counter", event.event_id, bump)
        if len(calls) == 1:
            raise RuntimeError("crash after the commit, before the ack")
        done.set()

    async with broker:
        await broker.start()
        event = Envelope(type="test.hit", source_unit="u", subject="k")
        await broker.publish(event.to_bytes(), topic, key=b"k")
        await asyncio.wait_for(done.wait(), 20)
    assert calls == [str(event.event_id)] * 2, "the message was redelivered after the failure"
    assert await pool.fetchval(f"SELECT n FROM {schema}.counter") == 1


async def test_undecodable_header_does_not_block_the_partition() -> None:
    topic = unique("t.poison").replace("_", "-")
    await declare_topics(kafka_bootstrap(), [TopicSpec(topic, 1, 3_600_000)])
    broker = make_broker(kafka_bootstrap(), service="test")
    seen: list[tuple[bytes, list[tuple[str, bytes]]]] = []
    done = asyncio.Event()

    @broker.subscriber(topic, group_id=unique("g"), **DURABLE)
    async def handle(msg: KafkaMessage) -> None:
        seen.append((msg.raw_message.value, list(msg.raw_message.headers)))
        if len(seen) == 2:
            done.set()

    async with broker:
        await broker.start()
        raw = make_producer(kafka_bootstrap(), client_id="test")
        await raw.start()
        await raw.send_and_wait(topic, b"first", headers=[("bad", b"\xff\xfe")])
        await raw.send_and_wait(topic, b"second")
        await raw.stop()
        await asyncio.wait_for(done.wait(), 20)
    assert [value for value, _ in seen] == [b"first", b"second"]
    assert seen[0][1] == [("bad", b"\xff\xfe")], "the handler sees the exact original bytes"
