"""DurableConsumer's failure policy without a broker: classification, backoff, bisection,
parking, stop and health (the parked row goes to a recording fake of the pool)."""

import asyncio
import errno
import json
import socket
from types import SimpleNamespace

import asyncpg
import pytest
import structlog.testing
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from ioc_shared.platform.consumer import (
    ConsumerStopped,
    Delivery,
    DurableConsumer,
    FailurePolicy,
    transient_dependency,
)
from ioc_shared.platform.parking import headers_from_json, headers_to_json
from prometheus_client import CollectorRegistry

FAST = FailurePolicy(max_attempts=3, backoff_initial_s=0.0, backoff_max_s=0.0, jitter_s=0.0)


class RecordingPool:
    """Stands in for asyncpg.Pool: keeps the parked rows' arguments."""

    def __init__(self) -> None:
        self.parked: list[tuple] = []

    async def execute(self, sql: str, *args: object) -> None:
        assert "consumer_parked" in sql and "ON CONFLICT" in sql
        self.parked.append(args)


def delivery(offset: int, value: bytes = b"ok", partition: int = 0) -> Delivery:
    return Delivery("t", partition, offset, b"k", value, (("h", b"v"),), 1_700_000_000_000)


def consumer(handler, *, policy: FailurePolicy = FAST, on_parked=None, metrics=None):
    pool = RecordingPool()
    c = DurableConsumer("c", ["t"], "g", handler, pool=pool, schema="s", policy=policy,
                        on_parked=on_parked, metrics=metrics)
    return c, pool


# --- classification -----------------------------------------------------------------

@pytest.mark.parametrize(("error", "dependency"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "network"),
    (ConnectionResetError(), "network"),
    (OSError(errno.EHOSTUNREACH, "no route"), "network"),
    (TimeoutError(), "network"),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432), "
             "[Errno 111] Connect call failed ('127.0.0.1', 5432)"), "network"),
    (socket.gaierror(-3, "Temporary failure in name resolution"), "network"),
    (asyncpg.exceptions.CannotConnectNowError("starting up"), "postgresql"),
    (asyncpg.exceptions.ConnectionFailureError("gone"), "postgresql"),
    (asyncpg.exceptions.AdminShutdownError("terminating"), "postgresql"),
    (asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-way"), "postgresql"),
    (asyncpg.InterfaceError("pool is closing"), "postgresql"),
    (KafkaConnectionError(), "kafka"),
    (KafkaTimeoutError(), "kafka"),
    (NotLeaderForPartitionError(), "kafka"),
])
def test_a_dependency_down_is_transient(error: BaseException, dependency: str) -> None:
    assert transient_dependency(error) == dependency


@pytest.mark.parametrize("error", [
    ValueError("bad record"),
    KeyError("field"),
    asyncpg.exceptions.UntranslatableCharacterError("\\u0000 cannot be converted to text"),
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence 0x00"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.exceptions.QueryCanceledError("statement timeout"),
    MessageSizeTooLargeError(),
    OSError(errno.ENOENT, "no such file"),
])
def test_other_errors_may_be_the_records_fault(error: BaseException) -> None:
    assert transient_dependency(error) is None


def test_classification_follows_causes_and_groups() -> None:
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("could not write") from exc
    except RuntimeError as wrapped:
        assert transient_dependency(wrapped) == "network"
    assert transient_dependency(ExceptionGroup("both", [KafkaConnectionError(),
                                                        TimeoutError()])) == "kafka"
    assert transient_dependency(ExceptionGroup("mixed", [TimeoutError(), ValueError()])) is None


# --- backoff ---------------------------------------------------------------------------

def test_backoff_grows_exponentially_with_bounded_jitter_up_to_the_cap() -> None:
    policy = FailurePolicy(backoff_initial_s=0.2, backoff_max_s=5.0, jitter_s=0.3)
    for attempt in range(1, 12):
        base = 0.2 * 2 ** (attempt - 1)
        for _ in range(50):
            wait = policy.backoff_s(attempt)
            assert min(base, 5.0) <= wait <= min(base + 0.3, 5.0)
    assert policy.backoff_s(200) == 5.0
    assert len({policy.backoff_s(1) for _ in range(20)}) > 1   # jittered


# --- bisection and parking ---------------------------------------------------------------

async def test_a_poison_record_is_parked_and_the_others_get_their_effects_in_order() -> None:
    effects: list[int] = []
    calls: list[list[int]] = []
    parked_seen: list[tuple[int, str]] = []

    async def handler(batch) -> None:
        calls.append([d.offset for d in batch])
        if any(d.value == b"poison" for d in batch):
            raise ValueError("cannot store this record")
        effects.extend(d.offset for d in batch)

    async def on_parked(d: Delivery, error: BaseException) -> None:
        parked_seen.append((d.offset, type(error).__name__))

    registry = CollectorRegistry()
    c, pool = consumer(handler, on_parked=on_parked, metrics=registry)
    batch = [delivery(i, b"poison" if i == 4 else b"ok") for i in range(9)]
    await c.consume(batch)

    assert effects == [0, 1, 2, 3, 5, 6, 7, 8]
    assert [call for call in calls if call == [4]] == [[4]] * FAST.max_attempts
    assert parked_seen == [(4, "ValueError")]
    (row,) = pool.parked
    consumer_name, topic, partition, offset, key, value, headers, error, attempts = row
    assert (consumer_name, topic, partition, offset, key, value, attempts) == (
        "c", "t", 0, 4, b"k", b"poison", 3)
    assert headers_from_json(headers) == [("h", b"v")]
    assert error.startswith("ValueError: ")
    assert registry.get_sample_value("ioc_consumer_parked_total", {"consumer": "c"}) == 1.0
    assert c.health() == (True, None)


async def test_several_poison_records_each_parked_the_rest_in_order() -> None:
    effects: list[int] = []

    async def handler(batch) -> None:
        if any(d.value == b"poison" for d in batch):
            raise KeyError("x")
        effects.extend(d.offset for d in batch)

    c, pool = consumer(handler)
    poison = {0, 5, 6, 12}
    await c.consume([delivery(i, b"poison" if i in poison else b"ok") for i in range(13)])
    assert effects == [i for i in range(13) if i not in poison]
    assert [row[3] for row in pool.parked] == sorted(poison)


async def test_a_single_record_batch_gets_max_attempts_in_all() -> None:
    calls = 0

    async def handler(batch) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("always")

    c, pool = consumer(handler)
    await c.consume([delivery(7)])
    assert calls == FAST.max_attempts
    assert [row[3] for row in pool.parked] == [7]


async def test_a_record_that_succeeds_on_a_later_attempt_is_not_parked() -> None:
    failures = {3: 2}   # offset 3 fails twice, then works
    effects: list[int] = []

    async def handler(batch) -> None:
        for d in batch:
            if failures.get(d.offset, 0):
                failures[d.offset] -= 1
                raise ValueError("flaky")
        effects.extend(d.offset for d in batch)

    c, pool = consumer(handler)
    await c.consume([delivery(i) for i in range(6)])
    assert effects == [0, 1, 2, 3, 4, 5]
    assert pool.parked == []


# --- transient errors, stop, health --------------------------------------------------

async def test_transient_errors_retry_the_batch_without_counting_attempts() -> None:
    failures = 7   # more than max_attempts: they must not count
    effects: list[list[int]] = []
    seen_health: list[tuple[bool, str | None]] = []
    c: DurableConsumer

    async def handler(batch) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            if failures < 6:
                seen_health.append(c.health())
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        effects.append([d.offset for d in batch])

    c, pool = consumer(handler)
    await c.consume([delivery(0), delivery(1)])
    assert effects == [[0, 1]]          # the whole batch, once, not bisected
    assert pool.parked == []
    assert seen_health and all(h == (False, "waiting for network") for h in seen_health)
    assert c.health() == (True, None)


async def test_stop_ends_a_retry_wait_at_once_and_nothing_is_done() -> None:
    slow = FailurePolicy(backoff_initial_s=3600, backoff_max_s=3600, jitter_s=0)
    attempts = 0
    called = asyncio.Event()

    async def handler(batch) -> None:
        nonlocal attempts
        attempts += 1
        called.set()
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    c, pool = consumer(handler, policy=slow)
    task = asyncio.create_task(c.consume([delivery(0)]))
    await called.wait()
    assert c.health() == (False, "waiting for postgresql")
    c.stop()
    with pytest.raises(ConsumerStopped):
        await asyncio.wait_for(task, 5)
    assert attempts == 1 and pool.parked == []
    with pytest.raises(ConsumerStopped):   # and no new batch is taken
        await c.consume([delivery(1)])


async def test_stop_between_attempts_of_a_failing_record_parks_nothing() -> None:
    slow = FailurePolicy(max_attempts=3, backoff_initial_s=3600, backoff_max_s=3600, jitter_s=0)
    called = asyncio.Event()

    async def handler(batch) -> None:
        called.set()
        raise ValueError("bad")

    c, pool = consumer(handler, policy=slow)
    task = asyncio.create_task(c.consume([delivery(0)]))
    await called.wait()
    c.stop()
    with pytest.raises(ConsumerStopped):
        await asyncio.wait_for(task, 5)
    assert pool.parked == []


async def test_health_is_not_ready_while_a_batch_is_stuck_in_the_handler() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def handler(batch) -> None:
        entered.set()
        await release.wait()

    c, _ = consumer(handler, policy=FailurePolicy(stuck_after_s=0.0))
    assert c.health() == (True, None)
    task = asyncio.create_task(c.consume([delivery(0)]))
    await entered.wait()
    await asyncio.sleep(0.01)
    ready, why = c.health()
    assert not ready and why is not None and why.startswith("batch in the handler")
    release.set()
    await task
    assert c.health() == (True, None)   # no broker consumer: no lag to judge


# --- records and headers ------------------------------------------------------------------

def test_delivery_keeps_raw_bytes_and_reads_headers() -> None:
    rec = ConsumerRecord("topic", 2, 41, 123, 0, None, b"\x00\xff",
                         None, 0, 2, [("a", b"x"), ("b", b"\xff\xfe"), ("a", b"y")])
    d = Delivery.of(rec)
    assert (d.origin, d.key, d.value, d.timestamp_ms) == ("topic:2:41", None, b"\x00\xff", 123)
    assert d.headers == (("a", b"x"), ("b", b"\xff\xfe"), ("a", b"y"))
    assert d.header("a") == "x"
    assert d.header("b") == "fffe"
    assert d.header("missing") is None


def test_parked_headers_round_trip_exact_bytes_through_json() -> None:
    headers = (("plain", "Lộc Ninh".encode()), ("nul", b"a\x00b"), ("binary", b"\xff\x00"),
               ("dup", b"1"), ("dup", b"2"))
    stored = headers_to_json(headers)
    assert "\\u0000" not in stored   # jsonb refuses NUL
    assert json.loads(stored)[0] == {"name": "plain", "value": "Lộc Ninh"}
    assert headers_from_json(stored) == list(headers)


class FakeKafkaConsumer:
    """What health reads of aiokafka's consumer: the assignment and the fetched highwater."""

    def __init__(self, highwater: int) -> None:
        self.tp = TopicPartition("t", 0)
        self.hw = highwater

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset({self.tp})

    def highwater(self, tp: TopicPartition) -> int:
        return self.hw


async def test_health_is_not_ready_when_a_partition_lags_without_progress() -> None:
    async def handler(batch) -> None:
        return None

    c, _ = consumer(handler, policy=FailurePolicy(stuck_after_s=0.0))
    kafka = FakeKafkaConsumer(highwater=10)
    c._subscriber = SimpleNamespace(consumer=kafka)   # what register() keeps
    await c.consume([delivery(i) for i in range(5)])  # handled up to offset 4 of 10
    await asyncio.sleep(0.01)
    ready, why = c.health()
    assert not ready and why is not None and why.startswith("lag without progress")
    assert why.endswith("on t:0")
    await c.consume([delivery(i) for i in range(5, 10)])  # caught up: highwater 10 = 9 + 1
    assert c.health() == (True, None)


async def test_health_stops_waiting_once_the_dependency_answers_with_another_error() -> None:
    errors = [ConnectionResetError(), ValueError("bad"), ValueError("bad"), ValueError("bad")]
    health_at_park: list[tuple[bool, str | None]] = []
    c: DurableConsumer

    async def handler(batch) -> None:
        raise errors.pop(0)

    async def on_parked(d: Delivery, error: BaseException) -> None:
        health_at_park.append(c.health())

    c, pool = consumer(handler, on_parked=on_parked)
    await c.consume([delivery(0)])
    assert [row[3] for row in pool.parked] == [0]
    assert health_at_park == [(True, None)]


async def test_an_outage_logs_once_when_it_starts_and_once_when_it_ends() -> None:
    failures = 25

    async def handler(batch) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    c, _ = consumer(handler)
    with structlog.testing.capture_logs() as logs:
        await c.consume([delivery(0)])
    events = [(e["event"], e.get("dependency")) for e in logs]
    assert events == [("waiting for a dependency", "postgresql"),
                      ("dependency back", "postgresql")]
    assert logs[1]["retries"] == 25


async def test_a_parked_record_is_logged_once_without_its_payload() -> None:
    async def handler(batch) -> None:
        raise ValueError("Nguyễn Văn A, 0912345678")   # an error may quote the payload

    c, _ = consumer(handler)
    with structlog.testing.capture_logs() as logs:
        await c.consume([delivery(3, b'{"reporter_phone": "0912345678"}')])
    (parked,) = [e for e in logs if e["log_level"] == "error"]
    assert parked["event"] == "internal error: record parked"
    assert (parked["topic"], parked["partition"], parked["offset"]) == ("t", 0, 3)
    assert parked["error_class"] == "ValueError"
    assert "0912345678" not in repr(logs)
