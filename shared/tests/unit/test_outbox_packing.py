"""Outbox rows pack a transaction's messages into one value; unpacking gives them back."""

import uuid

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st
from ioc_shared.platform.kafka import partition_for
from ioc_shared.platform.outbox import pack_messages, unpack_messages


class Serialized:
    def __init__(self, event_id: uuid.UUID, key: bytes | None, value: bytes) -> None:
        self.event_id, self.key, self._value = event_id, key, value

    def to_bytes(self) -> bytes:
        return self._value


messages = st.lists(st.tuples(
    st.text(min_size=1, max_size=30), st.uuids(), st.one_of(st.none(), st.binary(max_size=40)),
    st.booleans(), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    st.binary(max_size=300)), max_size=25)


@given(messages)
def test_unpack_returns_what_was_packed_in_order(items: list) -> None:
    packed = pack_messages([
        (topic, Serialized(eid, key, value), override, headers)
        for topic, eid, key, use_override, headers, value in items
        for override in [b"override" if use_override else None]])
    got = unpack_messages(packed)
    assert len(got) == len(items)
    for (event_id, topic, key, head, value), (t, eid, k, use_override, headers, v) in zip(
            got, items, strict=True):
        assert (event_id, topic, value) == (str(eid), t, v)
        assert key == (b"override" if use_override else k)
        assert orjson.loads(head) == headers


def test_event_ids_must_be_uuids() -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        pack_messages([("t", Serialized("abc", None, b"{}"), None, {})])  # type: ignore[arg-type]


@given(st.binary(max_size=80), st.integers(min_value=1, max_value=64))
def test_partition_is_the_one_kafkas_default_partitioner_picks(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


async def test_every_failed_confirmation_is_retrieved_and_the_first_fails_the_batch() -> None:
    """asyncio logs an error for each failed future nobody looked at: during a broker
    outage that was one error line per record batch after the first failure."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from aiokafka.errors import LeaderNotAvailableError, NotLeaderForPartitionError
    from ioc_shared.platform.outbox import OutboxRelay

    relay = OutboxRelay(None, "s", None, "b")  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    ok, first, second = loop.create_future(), loop.create_future(), loop.create_future()
    ok.set_result(SimpleNamespace(offset=4))
    first.set_exception(LeaderNotAvailableError())
    second.set_exception(NotLeaderForPartitionError())
    tp = TopicPartition("t", 0)
    with pytest.raises(LeaderNotAvailableError):
        await relay._confirmed([(tp, ok, 1), (tp, first, 1), (tp, second, 1)])
    assert not first._log_traceback and not second._log_traceback  # type: ignore[attr-defined]


async def test_an_abandoned_send_failure_is_not_logged_as_unretrieved() -> None:
    import asyncio

    from ioc_shared.platform.kafka import retrieved_if_abandoned

    loop = asyncio.get_running_loop()
    abandoned, awaited = loop.create_future(), loop.create_future()
    retrieved_if_abandoned(abandoned).set_exception(RuntimeError("leader gone"))
    retrieved_if_abandoned(awaited).set_exception(RuntimeError("leader gone"))
    await asyncio.sleep(0)   # the callbacks run
    assert not abandoned._log_traceback  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="leader gone"):
        await awaited       # whoever waits still gets the error
