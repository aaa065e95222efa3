"""The one durable Kafka consumer of the kit, with its failure policy.

A service hands `DurableConsumer` a handler that takes a batch of raw records
(`Delivery`) and applies their effects in one PostgreSQL transaction that also
claims their event ids (`idempotency.claim_events`). The consumer is a FastStream
batch subscriber (`NACK_ON_ERROR`): FastStream commits the consumer's position
(the end of the batch) only after `consume` returned, and seeks back without a
commit when it raised. `consume` returns only once every record of the batch had
its effects or was parked, so an offset never moves past a record that was not
dealt with.

Failure policy:
- A transient error (a dependency down: connection refused or reset, PostgreSQL
  restarting, a timeout, a retriable Kafka error) retries the same batch with capped
  exponential backoff and jitter until it succeeds or the consumer stops. The records
  are not at fault, so these do not count as attempts; health says what the consumer
  waits for, and the log has one line when it starts, one a minute, one when it ends.
- Any other error bisects the batch (halves, left before right, so the records keep
  their order) down to the record at fault. That record gets `max_attempts` attempts
  with backoff in between; then it is parked in `<schema>.consumer_parked` with its
  raw bytes, counted, logged once (position and error class, never the payload), and
  `on_parked` is awaited. Every other record of the batch gets its effects.
- `health()` is not ready while waiting for a dependency, while a batch has been in
  the handler longer than `stuck_after_s`, or when a partition has lag (the highwater
  aiokafka last fetched is past the last offset handled) and no batch completed for
  longer than `stuck_after_s`. Partitions not handled since the last rebalance are not
  judged: their position is not known without I/O.

Pipelined (`pipelined=True`, opt-in): the handler may return the confirmations of its
effects (an awaitable) instead of awaiting them. The consumer then takes the next batch
while those are on their way, and commits a batch's offsets itself (explicit offsets, in
batch order, at most one batch outstanding) once they completed: commit-after-effects
holds, only the wait moved. If they fail, the batch is worked again by the failure
policy above before anything after it is committed (its outputs may then follow those of
the next batch: at-least-once with the same event ids, as after any retry). Before a
rebalance takes partitions away, and on `drain()` (shutdown), the outstanding batch is
settled first. A batch less than half of `max_records` (a trickle) is settled before the
next one is taken, as without pipelining.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from aiokafka.structs import OffsetAndMetadata
from faststream import AckPolicy
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry, Counter
from tenacity import RetryCallState, wait_exponential_jitter

from ioc_shared.platform.kafka import decode_headers, tolerant_parser
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.parking import park

log = get_logger(__name__)

# A handler returns None once its effects are confirmed, or (pipelined consumers) an
# awaitable of their confirmations.
BatchHandler = Callable[[Sequence["Delivery"]], Awaitable[Awaitable[Any] | None]]
OnParked = Callable[["Delivery", BaseException], Awaitable[None]]

# While a dependency stays down: one log line a minute, not one per retry.
_WAIT_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One Kafka record as received: raw bytes, headers never decoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def origin(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The first header `name` as text (hex if it is not UTF-8), None if absent."""
        for key, value in self.headers:
            if key == name:
                return decode_headers([(key, value)])[key]
        return None

    @classmethod
    def of(cls, record: ConsumerRecord[Any, Any]) -> Delivery:
        return cls(record.topic, record.partition, record.offset, record.key,
                   record.value or b"",
                   tuple((k, bytes(v or b"")) for k, v in record.headers or ()),
                   record.timestamp)


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    max_attempts: int = 3
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    # Uniform extra wait in [0, jitter_s], so consumers that failed together do not retry
    # together.
    jitter_s: float = 0.2
    stuck_after_s: float = 60.0

    def backoff_s(self, attempt: int) -> float:
        """Wait after the `attempt`-th failure (1-based): initial * 2**(attempt-1) + jitter,
        at most `backoff_max_s`."""
        wait = wait_exponential_jitter(multiplier=self.backoff_initial_s, max=self.backoff_max_s,
                                       jitter=self.jitter_s)
        return float(wait(cast(RetryCallState, SimpleNamespace(attempt_number=max(1, attempt)))))


_TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                               errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH,
                               errno.ETIMEDOUT, errno.ENETDOWN})
_POSTGRES_DOWN = (asyncpg.exceptions.PostgresConnectionError,   # SQLSTATE class 08
                  asyncpg.exceptions.CannotConnectNowError,     # starting or shutting down
                  asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
                  asyncpg.exceptions.TooManyConnectionsError,
                  asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError,
                  asyncpg.InterfaceError)                        # includes a connection lost


def transient_dependency(exc: BaseException) -> str | None:
    """The dependency `exc` says is unavailable ("postgresql", "kafka", "network"), or None
    if the error may be the record's fault. Follows `raise ... from` chains and groups."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            found = [transient_dependency(e) for e in current.exceptions]
            return found[0] if found and all(found) else None
        if isinstance(current, _POSTGRES_DOWN):
            return "postgresql"
        if isinstance(current, KafkaError):
            if isinstance(current, KafkaConnectionError | KafkaTimeoutError) or current.retriable:
                return "kafka"
            return None
        if isinstance(current, ConnectionError | TimeoutError):
            return "network"
        if isinstance(current, OSError) and (
                current.errno in _TRANSIENT_ERRNOS or isinstance(current, socket.gaierror)
                # asyncio's connect to a name with several addresses, each refused
                or str(current).startswith("Multiple exceptions: ")):
            return "network"
        current = current.__cause__
    return None


class ConsumerStopped(NackMessage):
    """Raised out of a batch when the consumer stops: FastStream seeks back, commits nothing."""


# One parked counter per metrics registry (Prometheus refuses a name twice in one registry).
_PARKED: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _parked_counter(registry: CollectorRegistry | None) -> Counter:
    if registry is None:
        return Counter("ioc_consumer_parked", "Records parked by a consumer", ["consumer"],
                       registry=None)
    if registry not in _PARKED:
        _PARKED[registry] = Counter("ioc_consumer_parked", "Records parked by a consumer",
                                    ["consumer"], registry=registry)
    return _PARKED[registry]


class _ForgetOnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Offsets handled before a rebalance say nothing of the position after it (another
    member may have gone on meanwhile): forget them, so lag is judged afresh."""

    def __init__(self, handled: dict[tuple[str, int], int],
                 before_revoke: Callable[[], Awaitable[None]] | None = None) -> None:
        self._handled = handled
        self._before_revoke = before_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self._before_revoke is not None:
            await self._before_revoke()   # commit what is confirmed while still the owner
        self._handled.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._handled.clear()


async def _batch_parser(raw: Any, original: Callable[[Any], Awaitable[StreamMessage[Any]]]
                        ) -> StreamMessage[Any]:
    """FastStream's message of a batch made from its first record only, then given every
    record: FastStream decoded each record's headers and its telemetry middleware read
    each one's baggage and links (~12 % of a batch consumer's CPU), which nothing here
    uses; the handler reads the records themselves (`_deliveries`), traces included."""
    if not isinstance(raw, tuple) or len(raw) < 2:
        return await tolerant_parser(raw, original)
    message = await tolerant_parser(raw[:1], original)
    message.raw_message = raw
    message.body = [r.value or b"" for r in raw]   # the batch's size, in metrics and spans
    message.message_id = f"{raw[0].offset}-{raw[-1].offset}-{raw[0].timestamp}"
    return message


async def _deliveries(msg: StreamMessage[Any]) -> tuple[Delivery, ...]:
    """FastStream decoder: the raw records, as a batch (a single-record subscriber too)."""
    raw = msg.raw_message
    return tuple(Delivery.of(r) for r in raw) if isinstance(raw, tuple) else (Delivery.of(raw),)


class DurableConsumer:
    """A FastStream subscriber for `handler` with the failure policy of this module."""

    def __init__(self, name: str, topics: Sequence[str], group_id: str, handler: BatchHandler, *,
                 pool: asyncpg.Pool, schema: str, policy: FailurePolicy | None = None,
                 max_records: int = 500, batch_timeout_ms: int = 10, batch: bool = True,
                 on_parked: OnParked | None = None,
                 metrics: CollectorRegistry | None = None,
                 fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 500,
                 pipelined: bool = False) -> None:
        """`fetch_min_bytes`/`fetch_max_wait_ms`: the broker answers a fetch once that many
        bytes are there or that long has passed; a larger minimum with a short wait groups
        a trickle into fewer, larger batches (one claim, produce and commit each).
        `pipelined`: see the module's docstring (the handler returns its confirmations)."""
        self.name = name
        self.topics = list(topics)
        self.group_id = group_id
        self.policy = policy or FailurePolicy()
        self._handler = handler
        self._pool = pool
        self._schema = schema
        self._max_records = max_records
        self._batch_timeout_ms = batch_timeout_ms
        self._batch = batch
        self._fetch_min_bytes = fetch_min_bytes
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._on_parked = on_parked
        self._parked = _parked_counter(metrics).labels(name)
        self._metrics = bus_metrics(metrics)
        self._stopping = asyncio.Event()
        self._subscriber: Any = None
        # Health, from memory only.
        self._busy_since: float | None = None
        self._waiting_for: str | None = None
        self._waiting_since = 0.0
        self._waiting_logged = 0.0
        self._waiting_retries = 0
        self._last_progress = time.monotonic()
        self._handled: dict[tuple[str, int], int] = {}
        # Pipelined: the batch whose confirmations are outstanding, and who settles it.
        self._pipelined = pipelined
        self._pending: tuple[Sequence[Delivery], asyncio.Future[Any]] | None = None
        self._settling = asyncio.Lock()
        self._handling = asyncio.Lock()   # one handler call at a time (a retry included)
        self._flushers: set[asyncio.Task[None]] = set()

    # --- wiring -------------------------------------------------------------------
    def register(self, broker: KafkaBroker) -> None:
        """Add the FastStream subscriber to `broker` (before the broker starts)."""
        options: dict[str, Any] = {}
        if self._batch:
            options = {"batch": True, "max_records": self._max_records,
                       "batch_timeout_ms": self._batch_timeout_ms}
        # Pipelined, the consumer commits explicit offsets itself (FastStream's commit
        # would commit the position, past the batch taken meanwhile).
        subscriber = broker.subscriber(
            *self.topics, group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL if self._pipelined else AckPolicy.NACK_ON_ERROR,
            auto_offset_reset="earliest", parser=_batch_parser, decoder=_deliveries,
            listener=_ForgetOnRebalance(self._handled,
                                        self.drain if self._pipelined else None),
            title=self.name,
            fetch_min_bytes=self._fetch_min_bytes, fetch_max_wait_ms=self._fetch_max_wait_ms,
            **options)

        async def on_records(batch: Any) -> None:
            if self._pipelined:
                await self._consume_pipelined(batch)
            else:
                await self.consume(batch)

        subscriber(on_records)
        self._subscriber = subscriber

    def stop(self) -> None:
        """End retry waits now (the batch is left uncommitted) and take no new batch."""
        self._stopping.set()

    def health(self) -> tuple[bool, str | None]:
        """(ready, why not), from in-memory state only."""
        now = time.monotonic()
        if self._waiting_for is not None:
            return False, f"waiting for {self._waiting_for}"
        stuck = self.policy.stuck_after_s
        if self._busy_since is not None and now - self._busy_since > stuck:
            return False, f"batch in the handler for {now - self._busy_since:.0f} s"
        if now - self._last_progress > stuck:
            lagging = self._lagging()
            if lagging:
                return False, f"lag without progress for {now - self._last_progress:.0f} s on {lagging}"
        return True, None

    def _lagging(self) -> str | None:
        consumer = getattr(self._subscriber, "consumer", None)
        if consumer is None:
            return None
        for tp in consumer.assignment():
            done = self._handled.get((tp.topic, tp.partition))
            if done is None:
                continue
            try:
                highwater = consumer.highwater(TopicPartition(tp.topic, tp.partition))
            except Exception:   # unassigned meanwhile
                continue
            if highwater is not None and highwater > done + 1:
                return f"{tp.topic}:{tp.partition}"
        return None

    # --- the policy -----------------------------------------------------------------
    async def consume(self, batch: Sequence[Delivery]) -> None:
        """Apply `batch` by the failure policy; returns when every record had its effects or
        was parked. Raises `ConsumerStopped` (nothing to commit) if the consumer stops first."""
        if not batch:
            return
        if self._stopping.is_set():
            raise ConsumerStopped()
        self._busy_since = time.monotonic()
        try:
            with self._metrics.handling(self.name, len(batch)):
                try:
                    await self._call(batch)
                except Exception as exc:
                    if isinstance(exc, ConsumerStopped):
                        raise
                    await self._failed(batch, exc)
        finally:
            self._busy_since = None
        self._mark_handled(batch)

    async def _failed(self, batch: Sequence[Delivery], exc: Exception) -> None:
        """A batch whose handler failed with `exc` (not a dependency): its parts, down to
        the record at fault."""
        if len(batch) == 1:
            await self._record(batch[0], exc, attempts=1)
        else:
            log.warning("batch failed; retrying it in parts", consumer=self.name,
                        records=len(batch), first=batch[0].origin,
                        error_class=type(exc).__name__)
            await self._bisect(batch)

    def _mark_handled(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            key = (d.topic, d.partition)
            if d.offset > self._handled.get(key, -1):
                self._handled[key] = d.offset
        self._last_progress = time.monotonic()

    async def _call(self, batch: Sequence[Delivery]) -> None:
        """The handler, its confirmations awaited, retried while a dependency is down;
        other errors propagate."""
        async def effects() -> None:
            confirmed = await self._handler(batch)
            if confirmed is not None:
                await confirmed

        await self._retrying_transient(effects)

    async def _retrying_transient(self, call: Callable[[], Awaitable[Any]]) -> Any:
        failures = 0
        while True:
            if self._stopping.is_set():
                raise ConsumerStopped()
            try:
                result = await call()
            except Exception as exc:
                dependency = transient_dependency(exc)
                if dependency is None:
                    self._dependency_back()   # it answered: the error is of another kind
                    raise
                failures += 1
                self._dependency_down(dependency, exc)
                await self._sleep(self.policy.backoff_s(failures))
            else:
                self._dependency_back()
                return result

    # --- pipelined ------------------------------------------------------------------
    async def _consume_pipelined(self, batch: Sequence[Delivery]) -> None:
        """The handler's effects started (the previous batch's confirmations on their way
        meanwhile), then the previous batch settled; this one is settled by the next call,
        by its flusher once confirmed, or before a rebalance or shutdown."""
        if not batch:
            return
        if self._stopping.is_set():
            raise ConsumerStopped()
        confirmed: asyncio.Future[Any] | None = None
        self._busy_since = time.monotonic()
        try:
            async with self._handling:
                with self._metrics.handling(self.name, len(batch)):
                    try:
                        started = await self._retrying_transient(lambda: self._handler(batch))
                        if started is not None:
                            confirmed = asyncio.ensure_future(started)
                    except Exception as exc:
                        if isinstance(exc, ConsumerStopped):
                            raise
                        await self._failed(batch, exc)   # its effects are confirmed after this
        finally:
            self._busy_since = None
        await self._settle()   # the previous batch: committed before this one
        if confirmed is None:
            await self._commit(batch)
            return
        self._pending = (batch, confirmed)
        if self._stopping.is_set() or len(batch) * 2 < self._max_records:
            # A part-full batch: the consumer caught up, there is nothing to overlap with.
            # Returning early would only meet an empty poll, after which FastStream sleeps
            # `batch_timeout_ms` (latency at a trickle); settled now instead.
            await self._settle()
            return
        flusher = asyncio.ensure_future(self._settle_once_confirmed(confirmed))
        self._flushers.add(flusher)   # referenced until done
        flusher.add_done_callback(self._flushers.discard)

    async def _settle_once_confirmed(self, confirmed: asyncio.Future[Any]) -> None:
        """Commit as soon as the confirmations are in (not only when the next batch comes)."""
        await asyncio.wait([confirmed])
        try:
            await self._settle()
        except ConsumerStopped:
            pass
        except Exception as exc:   # the next call (or drain) settles it again
            log.warning("settling a batch failed", consumer=self.name,
                        error_class=type(exc).__name__)

    async def _settle(self) -> None:
        """The outstanding batch: its confirmations awaited (worked again by the failure
        policy if they failed), then its offsets committed."""
        async with self._settling:
            pending = self._pending
            if pending is None:
                return
            batch, confirmed = pending
            try:
                await confirmed
            except Exception as exc:
                if self._stopping.is_set():
                    self._pending = None
                    raise ConsumerStopped() from exc   # uncommitted: delivered again
                log.warning("batch effects not confirmed; working it again",
                            consumer=self.name, records=len(batch), first=batch[0].origin,
                            error_class=type(exc).__name__)
                async with self._handling:
                    try:
                        await self.consume(batch)
                    except ConsumerStopped:
                        self._pending = None
                        raise
            self._pending = None
            await self._commit(batch)

    async def _commit(self, batch: Sequence[Delivery]) -> None:
        """Commit the end of `batch` on each of its partitions still assigned here (one
        taken away meanwhile is delivered again to its new owner)."""
        ends: dict[TopicPartition, int] = {}
        for d in batch:
            tp = TopicPartition(d.topic, d.partition)
            if d.offset + 1 > ends.get(tp, -1):
                ends[tp] = d.offset + 1
        consumer = getattr(self._subscriber, "consumer", None)
        if consumer is not None:
            assigned = consumer.assignment()
            offsets = {tp: OffsetAndMetadata(end, "") for tp, end in ends.items()
                       if tp in assigned}
            if offsets:
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:
                    if transient_dependency(exc) is None or self._stopping.is_set():
                        log.warning("offsets not committed; the records will be delivered "
                                    "again", consumer=self.name, first=batch[0].origin,
                                    error_class=type(exc).__name__)
                    else:
                        await self._retrying_transient(lambda: consumer.commit(offsets))
        self._mark_handled(batch)

    async def drain(self) -> None:
        """Settle the outstanding batch (pipelined): before a rebalance and at shutdown,
        after `stop()` (then a batch whose confirmations failed is left uncommitted)."""
        with contextlib.suppress(ConsumerStopped):
            await self._settle()

    async def _bisect(self, batch: Sequence[Delivery]) -> None:
        middle = len(batch) // 2
        for part in (batch[:middle], batch[middle:]):
            try:
                await self._call(part)
            except Exception as exc:
                if isinstance(exc, ConsumerStopped):
                    raise
                if len(part) == 1:
                    await self._record(part[0], exc, attempts=1)
                else:
                    await self._bisect(part)

    async def _record(self, delivery: Delivery, first: Exception, *, attempts: int) -> None:
        """One record that failed with `first`: its attempts, then parked."""
        error: Exception = first
        while attempts < self.policy.max_attempts:
            if attempts:
                await self._sleep(self.policy.backoff_s(attempts))
            attempts += 1
            try:
                await self._call((delivery,))
                return
            except Exception as exc:
                if isinstance(exc, ConsumerStopped):
                    raise
                error = exc
        await self._park(delivery, error, attempts)

    async def _park(self, delivery: Delivery, error: Exception, attempts: int) -> None:
        await self._retrying_transient(
            lambda: park(self._pool, self._schema, self.name, delivery, error, attempts))
        self._parked.inc()
        sqlstate = getattr(error, "sqlstate", None)
        log.error("internal error: record parked", consumer=self.name, topic=delivery.topic,
                  partition=delivery.partition, offset=delivery.offset, attempts=attempts,
                  error_class=type(error).__name__, sqlstate=sqlstate)
        if self._on_parked is None:
            return
        on_parked = self._on_parked
        try:
            await self._retrying_transient(lambda: on_parked(delivery, error))
        except ConsumerStopped:
            raise
        except Exception as exc:   # the record is parked: an operator replays it
            log.error("on_parked failed", consumer=self.name, origin=delivery.origin,
                      error_class=type(exc).__name__)

    # --- waiting --------------------------------------------------------------------
    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise ConsumerStopped()

    def _dependency_down(self, dependency: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._waiting_retries += 1
        if self._waiting_for is None:
            self._waiting_for, self._waiting_since, self._waiting_logged = dependency, now, now
            log.warning("waiting for a dependency", consumer=self.name, dependency=dependency,
                        error_class=type(exc).__name__, error=str(exc)[:200])
        elif now - self._waiting_logged >= _WAIT_LOG_EVERY_S:
            self._waiting_for, self._waiting_logged = dependency, now
            log.warning("still waiting for a dependency", consumer=self.name,
                        dependency=dependency, waited_s=round(now - self._waiting_since),
                        retries=self._waiting_retries, error_class=type(exc).__name__)

    def _dependency_back(self) -> None:
        if self._waiting_for is None:
            return
        log.info("dependency back", consumer=self.name, dependency=self._waiting_for,
                 waited_s=round(time.monotonic() - self._waiting_since, 1),
                 retries=self._waiting_retries)
        self._waiting_for, self._waiting_retries = None, 0
