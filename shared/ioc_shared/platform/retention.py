"""Retention: delete the rows of tables that grow with traffic once nobody needs them.

A service declares one `RetentionPolicy` per table (which rows, counted from which
timestamp, kept how long) and runs one `RetentionJob` in its runtime:

    policies = [*platform_policies(consumed_topics), *own_policies]
    rt.spawn(RetentionJob(rt.pool, schema, policies, registry=rt.metrics).run())

A round runs about once per interval (jittered, so instances and services do not all
prune at the same minute). It deletes expired rows in slices of `slice_rows` per
statement, each its own short transaction, so it never holds many row locks or a long
transaction. Two instances of a service are safe: a round holds a transaction-scoped
advisory lock of the schema (on a connection of its own, released by commit or by the
connection's end) and an instance that finds it taken skips its round. A transient
database error retries the round with backoff (tenacity); whatever else goes wrong is
logged and the next round comes: retention never stops the service.

Keep periods of the platform tables (see deploy/README.md, "Retention"):
- processed_events: longer than every topic the service consumes keeps its records
  (the longest retention.ms plus a margin): a redelivery or a replay from the topic must
  still find its claim, or its effects would be applied twice.
- consumer_parked / outbox_parked: rows handled by an operator (replayed, re-published
  or dropped), 90 days after that; rows still waiting are never deleted.
- outbox: published rows are deleted by the relay itself (`OutboxRelay.delete_published`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from prometheus_client import CollectorRegistry, Counter
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ioc_shared.contracts.topics import TopicSpec
from ioc_shared.platform.consumer import transient_dependency
from ioc_shared.platform.logging import get_logger

log = get_logger(__name__)

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# A redelivery or a replay must still be recognised a while after the topic dropped it.
PROCESSED_EVENTS_MARGIN = timedelta(days=7)
# Parked rows an operator already handled: kept as the record of what was done.
HANDLED_PARKED_KEEP = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Rows of `table` whose `timestamp` is older than `keep` (and that match `where`).

    `timestamp`: a column or an expression over the table's columns (the table is
    aliased `t`); rows where it is NULL are kept. `where`: an extra SQL condition, e.g.
    "replayed_at IS NOT NULL"; `{schema}` in it names the service schema (for a
    condition on another table). Both are code, never input.
    """

    table: str
    timestamp: str
    keep: timedelta
    where: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.table):
            raise ValueError(f"invalid table name {self.table!r}")
        if self.keep <= timedelta(0):
            raise ValueError(f"{self.table}: keep must be positive, not {self.keep}")

    def slice_sql(self, schema: str) -> str:
        """One slice: delete at most `$2` rows older than `$1` (an interval).

        Rows are picked by a subquery with LIMIT (the planner walks the timestamp's
        index, btree or BRIN, where there is one) and deleted by their physical address:
        no ORDER BY, so a BRIN index needs no sort of everything expired. A row updated
        meanwhile has moved and is left for the next round.
        """
        if not _NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        condition = f"({self.timestamp}) < now() - $1::interval"
        if self.where:
            condition += f" AND ({self.where.format(schema=schema)})"
        table = f"{schema}.{self.table}"
        return (f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT t.ctid FROM {table} t WHERE {condition} LIMIT $2))")


def topic_retention(spec: TopicSpec) -> timedelta | None:
    """How long `spec`'s topic keeps a record (its effective retention.ms); None: forever."""
    retention_ms = int(spec.config()["retention.ms"])
    if retention_ms < 0 or (spec.config()["cleanup.policy"] == "compact"):
        return None
    return timedelta(milliseconds=retention_ms)


def processed_events_keep(consumed: Iterable[TopicSpec],
                          margin: timedelta = PROCESSED_EVENTS_MARGIN) -> timedelta | None:
    """How long processed-event claims must be kept: the longest retention of the topics
    the service consumes, plus `margin`. None (keep forever) if one keeps records forever
    or the service consumes nothing (nothing tells how long a claim is needed)."""
    retentions = [topic_retention(spec) for spec in consumed]
    if not retentions or any(r is None for r in retentions):
        return None
    return max(r for r in retentions if r is not None) + margin


def platform_policies(consumed: Iterable[TopicSpec], *,
                      processed_events: timedelta | None = None,
                      handled_parked: timedelta = HANDLED_PARKED_KEEP) -> list[RetentionPolicy]:
    """The policies of the platform tables every service schema has.

    `processed_events`: an override of the keep period computed from `consumed`; it is
    refused if shorter than that (a replay from the topic would apply its events twice).
    """
    needed = processed_events_keep(consumed)
    if processed_events is not None and needed is not None and processed_events < needed:
        raise ValueError(f"processed_events kept {processed_events}, less than the "
                         f"{needed} the consumed topics need (their retention + margin)")
    keep = processed_events if processed_events is not None else needed
    policies = [
        RetentionPolicy("consumer_parked", "replayed_at", handled_parked),
        RetentionPolicy("outbox_parked", "coalesce(republished_at, dropped_at)", handled_parked),
    ]
    if keep is not None:
        policies.insert(0, RetentionPolicy("processed_events", "processed_at", keep))
    return policies


# One counter per metrics registry (Prometheus refuses a name twice in one registry).
_DELETED: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _deleted_counter(registry: CollectorRegistry | None) -> Counter:
    def make(r: CollectorRegistry | None) -> Counter:
        return Counter("ioc_retention_deleted", "Rows deleted by retention", ["table"],
                       registry=r)

    if registry is None:
        return make(None)
    if registry not in _DELETED:
        _DELETED[registry] = make(registry)
    return _DELETED[registry]


def _is_transient(exc: BaseException) -> bool:
    return transient_dependency(exc) is not None


class RetentionJob:
    """Prunes `schema`'s tables by `policies`, one round per interval (see the module)."""

    def __init__(self, pool: asyncpg.Pool, schema: str, policies: Sequence[RetentionPolicy], *,
                 registry: CollectorRegistry | None = None, interval_s: float = 3600.0,
                 jitter: float = 0.1, first_round_s: float = 60.0, slice_rows: int = 1000,
                 attempts: int = 5, backoff_initial_s: float = 1.0,
                 backoff_max_s: float = 60.0) -> None:
        """`jitter`: each wait is the interval ± that fraction. `first_round_s`: the
        first round comes that long after start (plus jitter), not in the busy start-up.
        `attempts`: tries of a round failing on a transient database error, with
        exponential backoff from `backoff_initial_s`; then the next round is awaited.
        The pool needs two free connections during a round (the lock, the slices)."""
        if not _NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        tables = [p.table for p in policies]
        if len(set(tables)) != len(tables):
            raise ValueError(f"one policy per table: {tables}")
        self._pool = pool
        self._schema = schema
        self._policies = list(policies)
        self._sql = {p.table: p.slice_sql(schema) for p in policies}
        self._interval_s = interval_s
        self._jitter = jitter
        self._first_round_s = first_round_s
        self._slice_rows = slice_rows
        self._attempts = attempts
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._deleted = _deleted_counter(registry)
        self._stopping = asyncio.Event()

    @property
    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"retention:{self._schema}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def _jittered(self, seconds: float) -> float:
        return max(0.0, seconds * (1.0 + random.uniform(-self._jitter, self._jitter)))

    async def run(self) -> None:
        """Rounds until stopped (or cancelled); never raises out of a failed round."""
        delay = self._jittered(self._first_round_s)
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            except TimeoutError:
                pass
            try:
                await self.prune_once()
            except Exception as exc:  # logged; the next round may succeed
                log.error("retention round failed", schema=self._schema, error=repr(exc))
            delay = self._jittered(self._interval_s)

    def stop(self) -> None:
        self._stopping.set()

    async def prune_once(self) -> dict[str, int] | None:
        """One round, retried on transient database errors: rows deleted per table, or
        None if another instance holds the schema's lock (it prunes this round)."""
        counts = {p.table: 0 for p in self._policies}
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient), stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(initial=self._backoff[0], max=self._backoff[1]),
            before_sleep=lambda state: log.warning(
                "retention round interrupted; retrying", schema=self._schema,
                attempt=state.attempt_number,
                error=repr(state.outcome.exception()) if state.outcome else None),
            reraise=True)
        pruned = False
        async for attempt in retrying:
            with attempt:
                pruned = await self._round(counts)
        if not pruned:
            log.info("retention round skipped: another instance is pruning", schema=self._schema)
            return None
        log.info("retention round", schema=self._schema, deleted=counts)
        return counts

    async def _round(self, counts: dict[str, int]) -> bool:
        """Delete what expired, adding to `counts` as slices commit; False if locked out."""
        async with self._pool.acquire() as lock_conn, lock_conn.transaction():
            # Held until this transaction ends: released by the commit, or by the server
            # when this connection dies. The transaction writes nothing and holds no
            # snapshot between statements, so it does not hold back vacuum.
            if not await lock_conn.fetchval("SELECT pg_try_advisory_xact_lock($1)",
                                            self._lock_key):
                return False
            for policy in self._policies:
                sql = self._sql[policy.table]
                while True:
                    async with self._pool.acquire() as conn:
                        status = await conn.execute(sql, policy.keep, self._slice_rows)
                        await self._after_slice_hook(conn)
                    deleted = int(status.split()[-1])
                    counts[policy.table] += deleted
                    if deleted:
                        self._deleted.labels(policy.table).inc(deleted)
                    if deleted < self._slice_rows:
                        break
        return True

    async def _after_slice_hook(self, conn: asyncpg.Connection) -> None:
        """Seam for tests that break a connection in the middle of a round."""
