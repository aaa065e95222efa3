"""Transactional outbox: events are written with the state change and relayed to Kafka.

`enqueue_many` runs inside the caller's transaction and writes *one row* for
all the messages of that transaction, in order (parallel arrays). `OutboxRelay`
publishes pending rows in id order with acks=all and marks them published. One
relay per schema is active at a time (a PostgreSQL advisory lock, held by a
session that is watched: the moment it is lost the relay stops publishing and
goes back to standing by); others stand by.

What holds: every event is published at least once (acks=all, marked only after
the broker confirmed it). Duplicates are avoided in the normal case, not ruled
out: a relay that dies between publishing and marking does not send the same
messages again, because recovery finds them on the broker (below); a relay cut off
from the database while a batch is in the air, or a producer retry across a
broker failover, can still deliver a message twice. Consumers therefore dedupe by
event id (`ioc_shared.platform.idempotency`).

Recovery after a crash: `outbox_positions` holds, for every partition the relay writes to, an
offset at or before anything it sent and has not marked: a partition's position
is saved (from its end offset) before its first message is sent, and moves to
the real end of what was sent in the same transaction that marks the rows. On
start-up, if rows are pending, the relay reads each partition from its position
and skips the pending messages it finds there; only the rest are sent again.
No per-batch claim, no per-batch offset lookup.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from tenacity import RetryCallState, wait_exponential_jitter

from ioc_shared.contracts.envelope import Envelope
from ioc_shared.contracts.headers import H_EVENT_ID, H_PRODUCER
from ioc_shared.platform.kafka import (
    envelope_headers,
    make_consumer,
    partition_for,
    retrieved_if_abandoned,
)
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.telemetry import Hop, recording, start_hop

log = get_logger(__name__)
_tracer = trace.get_tracer("ioc.outbox")

# After a failed batch (broker or database unreachable), wait before recovering:
# 0.5 s doubling up to 10 s, with jitter, while the failures go on.
_RETRY_BACKOFF = wait_exponential_jitter(multiplier=0.5, max=10.0, jitter=0.3)
# How often the lock's session is checked (a network stall closes no socket).
_LOCK_CHECK_S = 1.0
# A relay that takes the lock over from another waits this long before recovering,
# so that what the other one had in the air has landed on the broker.
_HANDOVER_S = 2.0


class LockLost(Exception):
    """The relay's advisory-lock session is gone: another relay may take over."""


class ProducerBroken(Exception):
    """The idempotent producer lost its sequence state (the broker restarted with batches
    in the air): aiokafka does not recover such a producer; its owner makes a new one."""


# What an aiokafka idempotent producer never recovers from.
_PRODUCER_FATAL = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)


def notify_channel(schema: str) -> str:
    """The channel a relay listens on for new rows of `schema`'s outbox."""
    return f"{schema}_outbox"


class Outgoing(Protocol):
    """What the outbox needs of an event: an `Envelope`, or an already serialized one."""

    @property
    def event_id(self) -> uuid.UUID | str: ...

    @property
    def key(self) -> bytes | None: ...

    def to_bytes(self) -> bytes: ...


OutboxMessage = tuple[str, Outgoing, bytes | None, Mapping[str, str]]


async def enqueue(conn: asyncpg.Connection, schema: str, topic: str, envelope: Envelope, *,
                  key: bytes | None = None, headers: Mapping[str, str] | None = None) -> None:
    """Add one event to the outbox in the caller's transaction (trace context captured now)."""
    await enqueue_many(conn, schema, [(topic, envelope, key, envelope_headers(envelope, headers))])


async def enqueue_many(conn: asyncpg.Connection, schema: str, messages: Sequence[OutboxMessage],
                       *, notify: bool = True) -> None:
    """Add the messages of the caller's transaction to the outbox, as one row, in order.

    Each message is (topic, envelope, key or None for the envelope's key, headers); the
    headers are final: build them with `envelope_headers` while the span each event
    belongs to is current (a batch handler has one span per record).

    Event ids must be new: derive them from an input the same transaction claims (or from
    state it changes), so that a retried transaction cannot emit an event twice.
    `notify=False`: the caller sends `pg_notify('<schema>_outbox', '')` in its own
    statement (delivered at commit, like this NOTIFY), saving a round trip.
    """
    if not messages:
        return
    sql, args = outbox_insert(schema, messages, first_param=1)
    await conn.execute(sql, *args)
    if notify:
        await conn.execute(f"NOTIFY {notify_channel(schema)}")


# One message in an outbox row: the lengths, then event id (36 ASCII characters: a UUID's
# canonical text), topic, key, headers (a JSON object) and value. A row's `messages` is
# its messages one after the other. (Five parallel arrays cost the service ~1 µs per
# element to encode; this is one bytes value for the whole transaction.)
_FRAME = struct.Struct(">HiII")  # topic length, key length (-1: no key), headers, value
_NO_KEY = -1


def pack_messages(messages: Sequence[OutboxMessage]) -> bytearray:
    """The `messages` column of an outbox row holding `messages`, in order.

    Appended to one bytearray: joining a list of parts cost twice as much for the
    megabytes of a large intake batch.
    """
    out = bytearray()
    pack = _FRAME.pack
    dumps = orjson.dumps
    for topic, env, key, head in messages:
        if key is None:
            key = env.key
        event_id = str(env.event_id).encode()
        if len(event_id) != 36:
            raise ValueError(f"event id {env.event_id!r} is not a UUID")
        topic_b = topic.encode()
        head_b = dumps(head)
        value = env.to_bytes()
        out += pack(len(topic_b), _NO_KEY if key is None else len(key), len(head_b), len(value))
        out += event_id
        out += topic_b
        if key:
            out += key
        out += head_b
        out += value
    return out


def unpack_messages(packed: bytes | bytearray) -> list[tuple[str, str, bytes | None, bytes, bytes]]:
    """(event id, topic, key, headers JSON, value) of each message of an outbox row."""
    if isinstance(packed, bytearray):
        packed = bytes(packed)
    out = []
    unpack = _FRAME.unpack_from
    size = _FRAME.size
    i, end = 0, len(packed)
    while i < end:
        topic_len, key_len, head_len, value_len = unpack(packed, i)
        i += size
        event_id = packed[i:i + 36].decode()
        topic_at = i + 36
        i = topic_at + topic_len
        key = None
        if key_len != _NO_KEY:
            key = packed[i:i + key_len]
            i += key_len
        head_at = i
        i += head_len
        out.append((event_id, packed[topic_at:topic_at + topic_len].decode(), key,
                    packed[head_at:i], packed[i:i + value_len]))
        i += value_len
    return out


def outbox_insert(schema: str, messages: Sequence[OutboxMessage], *,
                  first_param: int) -> tuple[str, list[Any]]:
    """The INSERT of `enqueue_many` and its arguments, numbered from `$first_param`, for a
    caller that sends it with other writes in one statement (as a data-modifying WITH
    clause) to save round trips. Same preconditions as `enqueue_many`; the caller also
    sends the NOTIFY (`pg_notify(notify_channel(schema), '')`)."""
    n = first_param
    sql = (f"INSERT INTO {schema}.outbox (message_count, messages) "
           f"VALUES (${n}::int, ${n + 1}::bytea)")
    return sql, [len(messages), pack_messages(messages)]


async def outbox_backlog(conn: asyncpg.Connection, schema: str) -> tuple[int, float]:
    """(messages not yet published, age in seconds of the oldest of them; 0 when none)."""
    row = await conn.fetchrow(
        f"""SELECT coalesce(sum(message_count), 0)::bigint AS n,
                   coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
            FROM {schema}.outbox WHERE published_at IS NULL""")
    assert row is not None
    return int(row["n"]), max(0.0, float(row["age"]))


async def outbox_offsets(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    """Per topic, the sum over its partitions of the next offset the relay writes."""
    rows = await conn.fetch(f"SELECT topic, sum(next_offset)::bigint AS n "
                            f"FROM {schema}.outbox_positions GROUP BY topic")
    return {r["topic"]: int(r["n"]) for r in rows}


@dataclass(slots=True)
class _Batch:
    """The pending rows one drain publishes, message by message."""

    row_ids: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)          # the row of each message
    event_ids: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    parked: list[int] = field(default_factory=list)         # messages too large to send
    # One "publish" span per message sent, child of the span that wrote it (when recording).
    hops: list[Hop] = field(default_factory=list)

    def end_hops(self, error: BaseException | None = None) -> None:
        for hop in self.hops:
            if hop.span is not None and error is not None:
                hop.span.set_status(StatusCode.ERROR, type(error).__name__)
            hop.end()
        self.hops.clear()

    def add(self, row: asyncpg.Record) -> None:
        self.row_ids.append(row["id"])
        for event_id, topic, key, head, value in unpack_messages(row["messages"]):
            self.rows.append(row["id"])
            self.event_ids.append(event_id)
            self.topics.append(topic)
            self.keys.append(key)
            self.headers.append(head)
            self.payloads.append(value)


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, schema: str, producer: AIOKafkaProducer,
                 bootstrap: str, *, batch_size: int = 2000, idle_poll_s: float = 0.5,
                 retention_s: float = 3600.0, topics: Sequence[str] = (),
                 max_message_bytes: int = 1_000_000, producer_name: str | None = None,
                 metrics: CollectorRegistry | None = None) -> None:
        """`producer_name`: the service, sent as the `ioc-producer` header of every message
        (consumers check that an event comes from the service that may produce it; the
        broker's WRITE ACL is what enforces it). `retention_s`: how long published rows stay
        in the outbox (for operators who look at what went out recently) before the relay
        deletes them. `topics`: the
        topics the outbox writes to, if known: their partitions' positions are saved at
        start, not on the first message to each (a broker round trip in the first batch).
        `max_message_bytes`: a larger message (key, value and headers) is parked in
        `outbox_parked` instead of sent; below the broker's `message.max.bytes` (1 MiB by
        default) with room for the record batch's own framing. `metrics`: the registry
        of the service's `/metrics` (`ioc_messages_produced_total`)."""
        self._pool = pool
        self._topics = list(topics)
        self._retention_s = retention_s
        self._next_cleanup = 0.0
        self._schema = schema
        self._producer = producer
        self._bootstrap = bootstrap
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._round_robin = 0
        self._stopping = False
        self._lock_lost = False
        # Partitions whose position is saved (so a message may be sent there).
        self._positioned: set[TopicPartition] = set()
        # Pending messages found on the broker by `recover`: not to be sent again.
        self._already_sent: set[str] = set()
        self._offsets_consumer: AIOKafkaConsumer | None = None
        self._max_message_bytes = max_message_bytes
        self._produced_by = [(H_PRODUCER, producer_name.encode())] if producer_name else []
        self.published = 0
        self.parked = 0
        self._produced = bus_metrics(metrics).produced.labels(producer_name or schema)

    @property
    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"outbox-relay:{self._schema}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def run(self) -> None:
        """Hold the relay lock (standing by until it is free) and publish until stopped.

        A failed batch (broker or database away) is retried with backoff, from a fresh
        recovery: what it sent before failing is found on the broker, not sent twice.
        If the lock's session is lost, publishing stops at once and the relay stands by
        for the lock again. Anything else raises (the runtime restarts it with backoff).
        """
        while not self._stopping:
            took_over = await self._hold_lock_and_publish()
            if took_over is None:
                return

    async def _hold_lock_and_publish(self) -> bool | None:
        """One tenure of the lock; None when stopped before getting it."""
        async with self._pool.acquire() as lock_conn:
            self._lock_lost = False
            watcher: asyncio.Task[None] | None = None
            listening = False
            try:
                waited = False
                while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                                   self._lock_key):
                    if self._stopping:
                        return None
                    waited = True
                    await asyncio.sleep(1.0)
                lock_conn.add_termination_listener(self._on_lock_lost)
                watcher = asyncio.create_task(self._watch_lock(lock_conn))
                await lock_conn.add_listener(notify_channel(self._schema), self._on_notify)
                listening = True
                if waited:
                    log.info("outbox relay took over the lock", schema=self._schema)
                    await asyncio.sleep(_HANDOVER_S)
                await self._pipeline()
                return True
            finally:
                if watcher is not None:
                    watcher.cancel()
                await self._release_lock(lock_conn, listening)

    async def _release_lock(self, lock_conn: asyncpg.Connection, listening: bool) -> None:
        """Undo the session state (the pool does not reset it); on a dead connection there
        is nothing to undo (the server released the lock with the session), and a failure
        here must not hide the error that ended the tenure."""
        if self._lock_lost:
            return
        with contextlib.suppress(Exception):
            lock_conn.remove_termination_listener(self._on_lock_lost)
        try:
            if listening:
                await lock_conn.remove_listener(notify_channel(self._schema), self._on_notify)
            await asyncio.wait_for(lock_conn.execute("SELECT pg_advisory_unlock_all()"), 5.0)
        except Exception as exc:
            log.warning("outbox relay: could not release its lock session cleanly "
                        "(the server releases it with the session)", schema=self._schema,
                        error=repr(exc))
            with contextlib.suppress(Exception):
                lock_conn.terminate()

    def _on_lock_lost(self, *_: Any) -> None:
        if not self._lock_lost:
            log.error("outbox relay lost its lock session; stops publishing",
                      schema=self._schema)
        self._lock_lost = True
        self._wake.set()

    async def _watch_lock(self, lock_conn: asyncpg.Connection) -> None:
        """A stalled network closes no socket: ask the lock's session every second."""
        while not self._lock_lost:
            await asyncio.sleep(_LOCK_CHECK_S)
            try:
                await lock_conn.fetchval("SELECT 1", timeout=2 * _LOCK_CHECK_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._on_lock_lost()
                with contextlib.suppress(Exception):
                    lock_conn.terminate()

    def _check_lock(self) -> None:
        if self._lock_lost:
            raise LockLost(self._schema)

    async def _pipeline(self) -> None:
        """Publish until stopped, the next batch queued while the previous one's
        acknowledgements are awaited and its rows marked (at most two in flight).

        Safe across a crash: both batches were sent after every position they could land
        before was saved, so recovery finds whichever of them is not marked.
        """
        in_flight: collections.deque[tuple[_Batch, list[tuple[TopicPartition, Any, int]]]] = (
            collections.deque())
        failures = 0
        recovered = False
        while not self._stopping and not self._lock_lost:
            try:
                if not recovered:
                    await self.recover()
                    await self._position_topics()
                    recovered = True
                batch = None
                if len(in_flight) < 2:
                    # Cleared before reading: a NOTIFY from here on ends the idle wait below.
                    self._wake.clear()
                    batch = await self._pending([i for b, _ in in_flight for i in b.row_ids])
                    if batch.row_ids:
                        self._check_lock()
                        in_flight.append((batch, await self._queue(batch)))
                    else:
                        batch = None
                if in_flight and (batch is None or len(in_flight) == 2):
                    done, queued = in_flight.popleft()
                    await self._mark(done, await self._confirmed(queued))
                    if failures:   # the backoff restarts only once a batch went through
                        log.info("outbox relay publishing again", schema=self._schema,
                                 failed_attempts=failures)
                        failures = 0
                elif not in_flight:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
                if asyncio.get_running_loop().time() >= self._next_cleanup:
                    await self.delete_published()
            except (OSError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError, LockLost) as exc:
                if isinstance(exc, _PRODUCER_FATAL):
                    log.error("outbox relay producer lost its sequence state; needs a new one",
                              schema=self._schema, error=repr(exc))
                    raise ProducerBroken(repr(exc)) from exc
                failures += 1
                if isinstance(exc, LockLost) or self._lock_lost:
                    pass   # logged by `_on_lock_lost`
                elif failures == 1:
                    log.error("outbox relay batch failed; recovering with backoff",
                              schema=self._schema, error=repr(exc))
                else:
                    log.debug("outbox relay still failing", schema=self._schema,
                              error=repr(exc), failures=failures)
                # Whatever is still on its way must land before recovery looks for it.
                for failed, queued in in_flight:
                    failed.end_hops(exc)
                    for _, future, _ in queued:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(future, 30.0)
                in_flight.clear()
                await self.close()   # its offsets client may be dead too
                recovered = False
                if not self._lock_lost:
                    await asyncio.sleep(_retry_delay(failures))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def delete_published(self) -> int:
        """Delete rows published longer than the retention ago; returns how many.

        Runs about once a minute from `run`, in slices that keep each transaction short.
        """
        loop = asyncio.get_running_loop()
        self._next_cleanup = loop.time() + min(60.0, max(self._retention_s, 1.0))
        deleted = 0
        while True:
            async with self._pool.acquire() as conn:
                status = await conn.execute(
                    f"DELETE FROM {self._schema}.outbox WHERE id IN ("
                    f"  SELECT id FROM {self._schema}.outbox WHERE published_at IS NOT NULL"
                    "   AND published_at < now() - make_interval(secs => $1)"
                    "   ORDER BY id LIMIT 1000)",  # oldest first, along the primary key
                    self._retention_s)
            n = int(status.split()[-1])
            deleted += n
            if n < 1000:
                return deleted

    # --- recovery ----------------------------------------------------------------
    async def recover(self) -> int:
        """Find pending messages a relay sent without marking; returns how many.

        They are marked with the rows they belong to by the next `drain_once`, without
        being sent again.
        """
        s = self._schema
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT messages FROM {s}.outbox WHERE published_at IS NULL ORDER BY id")
            positions = await conn.fetch(
                f"SELECT topic, partition, next_offset FROM {s}.outbox_positions")
        pending = [m[0] for r in rows for m in unpack_messages(r["messages"])]
        self._positioned = {TopicPartition(r["topic"], r["partition"]) for r in positions}
        self._already_sent = set()
        if not pending:
            return 0
        start = {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in positions}
        found = await self._event_ids_since(start, set(pending))
        self._already_sent = found
        log.info("outbox recovered", schema=s, pending=len(pending), already_published=len(found))
        return len(found)

    async def _event_ids_since(self, start: dict[TopicPartition, int],
                               wanted: set[str]) -> set[str]:
        if not start:
            return set()
        consumer = make_consumer(bootstrap=self._bootstrap, group_id=None,
                                 isolation_level="read_uncommitted")
        found: set[str] = set()
        try:
            await consumer.start()
            consumer.assign(list(start))
            ends = await consumer.end_offsets(list(start))
            for tp, offset in start.items():
                consumer.seek(tp, offset)
            pending = {tp for tp in start if ends[tp] > start[tp]}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, records in batch.items():
                    for rec in records:
                        for k, v in rec.headers or ():
                            if k == H_EVENT_ID:
                                event_id = v.decode(errors="replace")
                                if event_id in wanted:
                                    found.add(event_id)
                    if records and records[-1].offset + 1 >= ends[tp]:
                        pending.discard(tp)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()
        return found

    # --- publishing --------------------------------------------------------------
    async def _pending(self, in_flight: Sequence[int] = ()) -> _Batch:
        """Pending rows in id order, up to about `batch_size` messages (at least one row),
        leaving out the rows `in_flight` (sent, not yet marked)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT id, messages FROM {self._schema}.outbox WHERE id = ANY(
                        SELECT id FROM (
                            SELECT id, sum(message_count) OVER (ORDER BY id) - message_count
                                       AS before
                            FROM {self._schema}.outbox
                            WHERE published_at IS NULL AND NOT id = ANY($2::bigint[])
                            ORDER BY id LIMIT 1000) AS pending
                        WHERE before < $1)
                    ORDER BY id""", self._batch_size, list(in_flight))
        batch = _Batch()
        for row in rows:
            batch.add(row)
        return batch

    async def _targets(self, batch: _Batch) -> list[TopicPartition]:
        """The partition of each message: the producer's default partitioner (murmur2 of
        the key; round robin without one), each distinct key hashed once per batch."""
        partitions_of: dict[str, list[int]] = {}
        by_key: dict[tuple[str, bytes], TopicPartition] = {}
        targets: list[TopicPartition] = []
        for topic, key in zip(batch.topics, batch.keys, strict=True):
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = sorted(await self._producer.partitions_for(topic))
                partitions_of[topic] = partitions
            if key is None:
                self._round_robin += 1
                targets.append(TopicPartition(topic, partitions[self._round_robin % len(partitions)]))
                continue
            tp = by_key.get((topic, key))
            if tp is None:
                tp = TopicPartition(topic, partition_for(key, partitions))
                by_key[(topic, key)] = tp
            targets.append(tp)
        return targets

    async def _position_topics(self) -> None:
        tps = {TopicPartition(topic, p) for topic in self._topics
               for p in await self._producer.partitions_for(topic)}
        if tps - self._positioned:
            await self._save_positions(tps - self._positioned)

    async def _save_positions(self, tps: set[TopicPartition]) -> None:
        """Before the first message to a partition: save its end offset as its position."""
        ends = await self._end_offsets(tps)
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {self._schema}.outbox_positions (topic, partition, next_offset) "
                "SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) ON CONFLICT DO NOTHING",
                [tp.topic for tp in tps], [tp.partition for tp in tps], [ends[tp] for tp in tps])
        self._positioned |= tps

    async def drain_once(self) -> int:
        """Publish one batch of pending rows and mark it; returns how many messages."""
        batch = await self._pending()
        if not batch.row_ids:
            return 0
        await self._mark(batch, await self._confirmed(await self._queue(batch)))
        return len(batch.event_ids)

    async def _queue(self, batch: _Batch) -> list[tuple[TopicPartition, Any, int]]:
        """Hand the batch to the producer as one record batch per partition (several if
        large), in order: (partition, future of its acknowledgement, message count).

        Record batches instead of one `send` per message: no future, no accumulator
        lookup per message, which was most of the relay's CPU.
        """
        targets = await self._targets(batch)
        new = set(targets) - self._positioned
        if new:
            await self._save_positions(new)
        producer = self._producer
        builders: dict[TopicPartition, Any] = {}
        closed: list[tuple[TopicPartition, Any, int]] = []

        def close(tp: TopicPartition) -> None:
            builder = builders.pop(tp)
            closed.append((tp, builder, builder.record_count()))

        skip = self._already_sent
        limit = self._max_message_bytes
        traced = recording()
        batch.parked.clear()
        for i, tp in enumerate(targets):
            if skip and batch.event_ids[i] in skip:
                continue
            if len(batch.payloads[i]) + len(batch.keys[i] or b"") + len(batch.headers[i]) > limit:
                batch.parked.append(i)   # the broker would refuse it on every attempt
                continue
            fields = orjson.loads(batch.headers[i])
            if traced:
                # The publish continues the trace of the span that wrote the row; what the
                # consumer sees as its parent is this span.
                hop = start_hop(_tracer, f"{tp.topic} publish", fields, kind=SpanKind.PRODUCER,
                                attributes={"messaging.system": "kafka",
                                            "messaging.destination.name": tp.topic,
                                            "messaging.destination.partition.id": str(tp.partition),
                                            "ioc.event_id": batch.event_ids[i]})
                fields.update(hop.headers)
                batch.hops.append(hop)
            headers = [(k, v.encode()) for k, v in fields.items()]
            headers += self._produced_by
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            if builder.append(key=batch.keys[i], value=batch.payloads[i], timestamp=None,
                              headers=headers) is None:
                close(tp)  # full: an empty builder takes any first record
                builder = builders[tp] = producer.create_batch()
                builder.append(key=batch.keys[i], value=batch.payloads[i], timestamp=None,
                               headers=headers)
        for tp in list(builders):
            close(tp)
        return [(tp, retrieved_if_abandoned(
                    await producer.send_batch(builder, tp.topic, partition=tp.partition)), n)
                for tp, builder, n in closed]

    async def _confirmed(self, queued: list[tuple[TopicPartition, Any, int]]
                         ) -> dict[TopicPartition, int]:
        """Wait for the acknowledgements; the offset after the last message per partition."""
        sent: dict[TopicPartition, int] = {}
        # Every future is awaited, so none of their errors is left unretrieved (asyncio logs
        # those as errors); the first one fails the batch.
        outcomes = await asyncio.gather(*(future for _, future, _ in queued),
                                        return_exceptions=True)
        for (tp, _, n), outcome in zip(queued, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            sent[tp] = max(sent.get(tp, 0), outcome.offset + n)
        await self._after_publish_hook()
        return sent

    async def _mark(self, batch: _Batch, sent: dict[TopicPartition, int]) -> None:
        parked = batch.parked
        async with self._pool.acquire() as conn:
            # One statement, one transaction, one round trip; messages too large to send
            # are parked in the same transaction.
            await conn.execute(
                f"""WITH marked AS (
                        UPDATE {self._schema}.outbox SET published_at = now() WHERE id = ANY($1)
                    ), parked AS (
                        INSERT INTO {self._schema}.outbox_parked
                            (event_id, row_id, topic, key, headers, payload, size)
                        SELECT e, r, t, k, h::jsonb, p, octet_length(p)
                        FROM unnest($5::text[], $6::bigint[], $7::text[], $8::bytea[],
                                    $9::text[], $10::bytea[]) AS x(e, r, t, k, h, p)
                        ON CONFLICT (event_id) DO NOTHING)
                    INSERT INTO {self._schema}.outbox_positions AS p (topic, partition, next_offset)
                    SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[])
                    ON CONFLICT (topic, partition) DO UPDATE
                    SET next_offset = greatest(p.next_offset, excluded.next_offset)""",
                batch.row_ids, [tp.topic for tp in sent], [tp.partition for tp in sent],
                list(sent.values()), [batch.event_ids[i] for i in parked],
                [batch.rows[i] for i in parked], [batch.topics[i] for i in parked],
                [batch.keys[i] for i in parked], [batch.headers[i].decode() for i in parked],
                [batch.payloads[i] for i in parked])
        for i in parked:
            # Ids, topic and size only: the payload may hold personal data.
            log.error("outbox message too large for the broker; parked in outbox_parked",
                      event_id=batch.event_ids[i], topic=batch.topics[i],
                      bytes=len(batch.payloads[i]), limit=self._max_message_bytes)
        batch.end_hops()
        self._already_sent.difference_update(batch.event_ids)
        self.parked += len(parked)
        self.published += len(batch.event_ids) - len(parked)
        self._produced.inc(len(batch.event_ids) - len(parked))

    async def _after_publish_hook(self) -> None:
        """Seam for tests that simulate a crash between publish and mark."""

    async def _end_offsets(self, tps: set[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._offsets_consumer
        if consumer is None:
            consumer = make_consumer(bootstrap=self._bootstrap, group_id=None)
            self._offsets_consumer = consumer   # closed by `close` even if start fails
            await consumer.start()
        return dict(await consumer.end_offsets(list(tps)))

    async def close(self) -> None:
        consumer, self._offsets_consumer = self._offsets_consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5.0)


def _retry_delay(failures: int) -> float:
    state = RetryCallState(cast(Any, None), None, (), {})
    state.attempt_number = failures
    return float(_RETRY_BACKOFF(state))
