"""Parked outbox messages on the real broker: re-published once they fit, or dropped."""

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import typer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from ioc_shared.contracts import Envelope, TopicSpec
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE
from ioc_shared.platform.kafka import declare_topics, envelope_headers, make_admin
from ioc_shared.platform.outbox import OutboxRelay, enqueue_many
from ioc_shared.platform.parking import (
    drop_outbox_parked,
    list_outbox_parked,
    parked_cli,
    republish_outbox_parked,
    republish_producer,
)
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.testing import database_url, headers_of, kafka_bootstrap, read_topic, unique
from typer.testing import CliRunner

pytestmark = pytest.mark.connected

TOPIC_LIMIT = 4000      # the topic's max.message.bytes at first
RELAY_LIMIT = 3000      # what the relay sends (the rest is parked)


def envelope(size: int, subject: str = "inc-1") -> Envelope:
    return Envelope(type="test.happened", source_unit="ioc-loc-ninh", subject=subject,
                    payload={"blob": "x" * size})


async def small_limit_topic() -> str:
    name = unique("t.parked-outbox").replace("_", "-")
    await declare_topics(kafka_bootstrap(), [TopicSpec(
        name, 1, 3_600_000, extra_config={"max.message.bytes": str(TOPIC_LIMIT)})])
    return name


async def raise_topic_limit(topic: str, limit: int) -> None:
    """What the operator does (kafka-configs --alter --add-config max.message.bytes=...)."""
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic,
            configs={"max.message.bytes": str(limit), "retention.ms": "3600000"})])
    finally:
        await admin.close()


@pytest.fixture
async def producer() -> AsyncIterator[object]:
    p = republish_producer(kafka_bootstrap(), client_id="test-republish",
                           max_message_bytes=100_000)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def park(pool, schema: str, topic: str, producer, envelopes: list[Envelope]) -> None:
    """Through the real relay: messages over RELAY_LIMIT are parked, the rest sent."""
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_many(conn, schema, [(topic, e, None, envelope_headers(e)) for e in envelopes])
    relay = OutboxRelay(pool, schema, producer, kafka_bootstrap(),
                        max_message_bytes=RELAY_LIMIT)
    try:
        while await relay.drain_once():
            pass
    finally:
        await relay.close()


async def test_a_parked_message_is_republished_once_the_broker_takes_it(schema_pool,
                                                                       producer) -> None:
    schema, pool = schema_pool
    topic = await small_limit_topic()
    sent, large, medium = envelope(10), envelope(6000), envelope(3500)
    await park(pool, schema, topic, producer, [sent, large, medium])
    parked = await list_outbox_parked(pool, schema)
    assert [p.event_id for p in parked] == [str(large.event_id), str(medium.event_id)]
    assert parked[0].topic == topic and parked[0].size == len(large.to_bytes())
    assert parked[0].republished_at is None

    # Still over the limit given: kept, nothing sent.
    tried = await republish_outbox_parked(pool, schema, producer, all=True,
                                          max_message_bytes=RELAY_LIMIT)
    assert tried.sent == [] and tried.too_large == [str(large.event_id), str(medium.event_id)]
    # A limit the topic does not have yet: the broker refuses the large one, which stays
    # parked; the medium one fits the topic and goes (the refusal does not stop it).
    refused = await republish_outbox_parked(pool, schema, producer, all=True,
                                            max_message_bytes=100_000)
    assert refused.sent == [str(medium.event_id)]
    assert refused.too_large == [str(large.event_id)]
    assert [p.event_id for p in await list_outbox_parked(pool, schema)] == [str(large.event_id)]

    await raise_topic_limit(topic, 100_000)
    for _ in range(20):     # the broker applies a topic's new config a moment later
        done = await republish_outbox_parked(pool, schema, producer, all=True,
                                             max_message_bytes=100_000)
        if done.sent:
            break
        await asyncio.sleep(0.5)
    assert done.sent == [str(large.event_id)] and done.too_large == []
    records = await read_topic(topic, until=lambda r: len(r) >= 3)
    assert [headers_of(r)[H_EVENT_ID] for r in records] == [
        str(sent.event_id), str(medium.event_id), str(large.event_id)]
    again = records[2]
    assert again.value == large.to_bytes() and again.key == large.key
    assert headers_of(again)[H_EVENT_TYPE] == "test.happened"

    # Idempotent: nothing waits any more, so nothing is sent again.
    assert await list_outbox_parked(pool, schema) == []
    shown = await list_outbox_parked(pool, schema, include_done=True)
    assert len(shown) == 2 and all(p.republished_at is not None for p in shown)
    twice = await republish_outbox_parked(pool, schema, producer, ids=[str(large.event_id)])
    assert twice.sent == [] and twice.not_waiting == [str(large.event_id)]
    assert (await republish_outbox_parked(pool, schema, producer, all=True)).sent == []
    await asyncio.sleep(0.5)
    assert len(await read_topic(topic, until=lambda r: len(r) >= 4, timeout=2)) == 3


async def test_a_dropped_message_records_why_and_is_never_republished(schema_pool,
                                                                     producer) -> None:
    schema, pool = schema_pool
    topic = await small_limit_topic()
    first, second = envelope(5000, "inc-1"), envelope(5000, "inc-2")
    await park(pool, schema, topic, producer, [first, second])
    assert len(await list_outbox_parked(pool, schema)) == 2
    with pytest.raises(ValueError):
        await drop_outbox_parked(pool, schema, [str(first.event_id)], "  ")
    assert await drop_outbox_parked(pool, schema, [str(first.event_id)],
                                    "superseded by a later correction") == [str(first.event_id)]
    assert await drop_outbox_parked(pool, schema, [str(first.event_id)], "again") == []

    assert [p.event_id for p in await list_outbox_parked(pool, schema)] == [str(second.event_id)]
    dropped = {p.event_id: p for p in await list_outbox_parked(pool, schema, include_done=True)}
    assert dropped[str(first.event_id)].drop_reason == "superseded by a later correction"
    assert dropped[str(first.event_id)].dropped_at is not None

    await raise_topic_limit(topic, 100_000)
    out = await republish_outbox_parked(pool, schema, producer, ids=[str(first.event_id)],
                                        max_message_bytes=100_000)
    assert out.sent == [] and out.not_waiting == [str(first.event_id)]
    with pytest.raises(ValueError):
        await republish_outbox_parked(pool, schema, producer)   # neither ids nor all


async def test_the_parked_outbox_commands(schema_pool, producer) -> None:
    schema, pool = schema_pool
    topic = await small_limit_topic()
    first, second = envelope(5000, "inc-1"), envelope(5000, "inc-2")
    await park(pool, schema, topic, producer, [first, second])
    await raise_topic_limit(topic, 100_000)
    app = typer.Typer()
    app.add_typer(parked_cli(ServiceSettings, lambda _: schema), name="parked")
    env = {"IOC_DATABASE_URL": database_url(), "IOC_KAFKA_BOOTSTRAP": kafka_bootstrap()}
    runner = CliRunner()

    async def run(*args: str):  # type: ignore[no-untyped-def]
        return await asyncio.to_thread(runner.invoke, app, ["parked", "outbox", *args], env=env)

    listed = await run("list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [m["event_id"] for m in json.loads(listed.output)] == [str(first.event_id),
                                                                 str(second.event_id)]
    assert "xxxxx" not in listed.output, "the list shows no payload"

    dropped = await run("drop", "--id", str(first.event_id), "--reason", "test data")
    assert dropped.exit_code == 0 and "dropped 1" in dropped.output, dropped.output
    assert (await run("replay")).exit_code == 2           # neither --id nor --all
    kept = await run("replay", "--all", "--max-message-bytes", "3000")
    assert kept.exit_code == 1 and str(second.event_id) in kept.output
    replayed = await run("replay", "--all", "--max-message-bytes", "100000")
    assert replayed.exit_code == 0 and f"re-published 1 message(s): {second.event_id}" in \
        replayed.output, replayed.output
    shown = await run("list", "--all")
    assert "test data" in shown.output and "republished" in shown.output
    records = await read_topic(topic, until=lambda r: len(r) >= 1)
    assert [headers_of(r)[H_EVENT_ID] for r in records] == [str(second.event_id)]
