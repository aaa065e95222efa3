"""All SQL of the ingest service (schema from settings; tables in migrations/)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import asyncpg
import orjson
from ioc_shared.registry import Cadence

from ingest.domain import Accepted, WatchState

ClaimStatus = Literal["new", "redelivery", "duplicate"]


@dataclass(slots=True)
class Claim:
    """An accepted record asking to be recorded: its dedupe keys and its delivery."""

    ord: int
    accepted: Accepted
    origin: str


@dataclass(frozen=True, slots=True)
class CounterKey:
    unit: str
    dataset: str
    outcome: str
    code: str


def lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class IngestRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self._claims_conn: Any = None
        self._claims_lock = asyncio.Lock()
        s = schema
        # One statement, so one round trip and one implicit transaction per batch:
        # claim dedupe keys, move freshness forward, count outcomes. Every CTE sees
        # the snapshot from before the INSERT, so `prior` finds the earlier claim
        # of a key that this statement could not insert.
        self._record_batch_sql = f"""
WITH cand AS (
  SELECT (c->>0)::int AS ord, c->>1 AS unit, c->>2 AS dataset, c->>3 AS record_id,
         c->>4 AS content_hash, c->>5 AS client_event_id, (c->>6)::uuid AS event_id,
         c->>7 AS origin
  FROM jsonb_array_elements($1::jsonb) AS c
), ins AS (
  INSERT INTO {s}.accepted_records AS a
    (unit, dataset, record_id, content_hash, client_event_id, event_id, origin, accepted_at)
  SELECT unit, dataset, record_id, content_hash, client_event_id, event_id, origin, $2 FROM cand
  ORDER BY ord
  ON CONFLICT DO NOTHING
  RETURNING a.unit, a.dataset, a.record_id, a.content_hash
), outcome AS (
  SELECT c.*, (i.record_id IS NOT NULL) AS inserted
  FROM cand c
  LEFT JOIN ins i ON i.unit = c.unit AND i.dataset = c.dataset AND i.record_id = c.record_id
                 AND i.content_hash = c.content_hash
), prior AS (
  -- Only for the (rare) keys that could not be inserted: who claimed them first?
  SELECT o.ord, COALESCE(
    (SELECT a.origin FROM {s}.accepted_records a
      WHERE a.unit = o.unit AND a.dataset = o.dataset AND a.record_id = o.record_id
        AND a.content_hash = o.content_hash),
    (SELECT a.origin FROM {s}.accepted_records a
      WHERE o.client_event_id IS NOT NULL AND a.unit = o.unit
        AND a.client_event_id = o.client_event_id)) AS prior_origin
  FROM outcome o WHERE NOT o.inserted
), fresh AS (
  INSERT INTO {s}.freshness AS f (unit, dataset, watch_since, last_accepted_at)
  SELECT unit, dataset, $2, $2 FROM outcome WHERE inserted GROUP BY unit, dataset
  ON CONFLICT (unit, dataset) DO UPDATE
    SET last_accepted_at = GREATEST(f.last_accepted_at, EXCLUDED.last_accepted_at)
), counted AS (
  INSERT INTO {s}.quality_counters AS q (day, unit, dataset, outcome, code, n, updated_at)
  SELECT $3, unit, dataset, outcome, code, count(*), $2 FROM (
    SELECT unit, dataset, 'accepted'::text AS outcome, ''::text AS code FROM outcome WHERE inserted
    UNION ALL
    SELECT o.unit, o.dataset, 'rejected', 'duplicate' FROM outcome o JOIN prior p USING (ord)
      WHERE p.prior_origin IS DISTINCT FROM o.origin
    UNION ALL
    SELECT k->>0, k->>1, k->>2, k->>3 FROM jsonb_array_elements($4::jsonb) AS k
  ) x GROUP BY unit, dataset, outcome, code
  ON CONFLICT (day, unit, dataset, outcome, code) DO UPDATE
    SET n = q.n + EXCLUDED.n, updated_at = EXCLUDED.updated_at
)
SELECT ord, prior_origin FROM prior"""

    async def record_batch(self, claims: Sequence[Claim], counters: Sequence[CounterKey],
                           now: datetime, day: date) -> dict[int, ClaimStatus]:
        """Claim accepted records and count other outcomes; returns each claim's status by `ord`."""
        if not claims and not counters:
            return {}
        # Rows as one JSON parameter each: asyncpg's array encoding checks every element
        # against collections.abc (several ms of client CPU per 1000 claims), JSON is ~8x cheaper.
        candidates = orjson.dumps([
            (c.ord, (a := c.accepted).unit, a.dataset, a.record_id, a.content_hash,
             a.client_event_id, a.event_id, c.origin) for c in claims]).decode()
        counted = orjson.dumps([(k.unit, k.dataset, k.outcome, k.code) for k in counters]).decode()
        # Only the claims that could not be inserted come back (few): the others are new.
        rows = await self._claims_fetch(self._record_batch_sql, candidates, now, day, counted)
        out: dict[int, ClaimStatus] = dict.fromkeys((c.ord for c in claims), "new")
        origins = {c.ord: c.origin for c in claims} if rows else {}
        for r in rows:
            if r["prior_origin"] == origins[r["ord"]]:
                out[r["ord"]] = "redelivery"
            else:
                # Includes a concurrent insert not yet visible to our snapshot: the other
                # delivery publishes it, so not publishing here is the safe side.
                out[r["ord"]] = "duplicate"
        return out

    async def _claims_fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run a claim statement on a connection held for claims.

        A pool release resets the session (`pg_advisory_unlock_all(); CLOSE ALL;
        UNLISTEN *; RESET ALL`), one more round trip after every statement: on the
        hot path that doubled the time to claim. The held connection runs nothing
        but these single, self-committing statements, so it has no state to reset.
        While it is busy (an HTTP batch during a Kafka one), the pool serves.
        """
        rows: list[asyncpg.Record]
        if self._claims_lock.locked():
            rows = await self.pool.fetch(sql, *args)
            return rows
        async with self._claims_lock:
            conn = self._claims_conn
            if conn is None or not _usable(conn):
                conn = self._claims_conn = await self.pool.acquire()
            try:
                rows = await conn.fetch(sql, *args)
                return rows
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.CancelledError):
                # Its state is unknown now: hand it back (the pool resets or replaces it).
                self._claims_conn = None
                if _usable(conn):   # a lost connection went back to the pool by itself
                    with contextlib.suppress(asyncpg.InterfaceError):
                        await asyncio.shield(self.pool.release(conn))
                raise

    async def close(self) -> None:
        """Give the held claim connection back to the pool (before the pool is closed)."""
        async with self._claims_lock:
            conn, self._claims_conn = self._claims_conn, None
            if conn is not None and _usable(conn):
                with contextlib.suppress(asyncpg.InterfaceError):
                    await self.pool.release(conn)

    # --- freshness ------------------------------------------------------------

    async def try_round_lock(self, conn: asyncpg.Connection, name: str) -> bool:
        """Transaction-scoped lock so that only one instance runs a periodic round."""
        return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)",
                                        lock_key(f"{self.schema}:{name}")))

    async def watch(self, conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]],
                    now: datetime) -> None:
        pairs = list(pairs)
        await conn.execute(
            f"INSERT INTO {self.schema}.freshness (unit, dataset, watch_since) "
            "SELECT u, d, $3 FROM unnest($1::text[], $2::text[]) AS t(u, d) "
            "ON CONFLICT DO NOTHING",
            [u for u, _ in pairs], [d for _, d in pairs], now)

    async def freshness_states(self, conn: asyncpg.Connection,
                               cadences: dict[str, Cadence]) -> list[WatchState]:
        rows = await conn.fetch(
            f"SELECT unit, dataset, watch_since, last_accepted_at, late_since "
            f"FROM {self.schema}.freshness ORDER BY unit, dataset FOR UPDATE")
        return [WatchState(r["unit"], r["dataset"], cadences[r["dataset"]], r["watch_since"],
                           r["last_accepted_at"], r["late_since"])
                for r in rows if r["dataset"] in cadences]

    async def mark_late(self, conn: asyncpg.Connection, state: WatchState, at: datetime,
                        deadline: datetime) -> None:
        await conn.execute(
            f"UPDATE {self.schema}.freshness SET late_since = $3, late_deadline = $4, checked_at = $3 "
            "WHERE unit = $1 AND dataset = $2", state.unit, state.dataset, at, deadline)

    async def mark_recovered(self, conn: asyncpg.Connection, state: WatchState, at: datetime) -> None:
        await conn.execute(
            f"UPDATE {self.schema}.freshness SET late_since = NULL, late_deadline = NULL, "
            "checked_at = $3 WHERE unit = $1 AND dataset = $2", state.unit, state.dataset, at)

    # --- quality --------------------------------------------------------------

    async def changed_counters(self, conn: asyncpg.Connection) -> list[dict[str, Any]]:
        """Every counter of each (day, unit, dataset) that changed since it was last published."""
        rows = await conn.fetch(
            f"SELECT day, unit, dataset, outcome, code, n, updated_at FROM {self.schema}.quality_counters "
            f"WHERE (day, unit, dataset) IN (SELECT day, unit, dataset FROM {self.schema}.quality_counters "
            "  WHERE published_at IS NULL OR published_at < updated_at) "
            "ORDER BY day, unit, dataset FOR UPDATE")
        return [dict(r) for r in rows]

    async def mark_counters_published(self, conn: asyncpg.Connection,
                                      groups: Iterable[tuple[date, str, str]], at: datetime) -> None:
        groups = list(groups)
        await conn.execute(
            f"UPDATE {self.schema}.quality_counters q SET published_at = $4 "
            "FROM unnest($1::date[], $2::text[], $3::text[]) AS g(day, unit, dataset) "
            "WHERE q.day = g.day AND q.unit = g.unit AND q.dataset = g.dataset",
            [g[0] for g in groups], [g[1] for g in groups], [g[2] for g in groups], at)

    async def event_id_of(self, unit: str, dataset: str, record_id: str) -> list[uuid.UUID]:
        """Event ids accepted for a record id (all revisions); used by tests and operators."""
        rows = await self.pool.fetch(
            f"SELECT event_id FROM {self.schema}.accepted_records "
            "WHERE unit = $1 AND dataset = $2 AND record_id = $3 ORDER BY accepted_at",
            unit, dataset, record_id)
        return [r["event_id"] for r in rows]


def _usable(conn: asyncpg.Connection) -> bool:
    """Whether a held pool connection still works: when its connection is lost, asyncpg
    hands it back to the pool itself and every call on the proxy (`is_closed()` too)
    raises InterfaceError."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False
