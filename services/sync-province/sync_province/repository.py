"""All SQL of sync-province: share log, checkpoints, parked batches, switches, requests,
and the PostgreSQL cursor of targets that cannot hold our positions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from ioc_shared.platform.cursor import PgCursor

from sync_province.domain import GENESIS, Batch, chain_hash

ENTRY_COLUMNS = ("seq", "at", "target", "stream", "kind", "source_topic", "partition",
                 "first_offset", "next_offset", "event_ids", "fields", "grant_ids", "batch_hash",
                 "prev_hash", "entry_hash")


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{schema}.share_log".encode()).digest()[:8], "big",
                          signed=True)


class Repository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.s = schema
        self.cursor = PgCursor(schema)
        self._lock = _lock_key(schema)

    async def prepare(self) -> None:
        await self.cursor.create(self.pool)

    # --- share log -------------------------------------------------------------
    async def append_shipment(self, conn: asyncpg.Connection, target: str, batch: Batch,
                              kind: str = "ship") -> dict[str, Any]:
        """Append one entry to the chain (serialised across processes by an xact lock)."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock)
        head = await conn.fetchrow(f"SELECT seq, entry_hash FROM {self.s}.share_log"
                                   " ORDER BY seq DESC LIMIT 1")
        seq = (head["seq"] if head else 0) + 1
        entry: dict[str, Any] = {
            "seq": seq, "at": datetime.now(UTC).isoformat(), "target": target,
            "stream": batch.stream.name, "kind": kind, "source_topic": batch.stream.source_topic,
            "partition": batch.partition, "first_offset": batch.first_offset,
            "next_offset": batch.next_offset, "event_ids": batch.event_ids,
            "fields": list(batch.fields), "grant_ids": list(batch.grant_ids),
            "batch_hash": batch.digest(), "prev_hash": head["entry_hash"] if head else GENESIS,
        }
        entry["entry_hash"] = chain_hash(entry["prev_hash"], entry)
        await conn.execute(
            f"INSERT INTO {self.s}.share_log ({', '.join(ENTRY_COLUMNS)}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(ENTRY_COLUMNS)))})",
            *(entry[c] for c in ENTRY_COLUMNS))
        return entry

    async def entries(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM {self.s}.share_log"
                                     " ORDER BY seq")
        return [{c: (list(r[c]) if isinstance(r[c], list) else r[c]) for c in ENTRY_COLUMNS}
                for r in rows]

    async def head(self) -> tuple[int, str]:
        row = await self.pool.fetchrow(f"SELECT seq, entry_hash FROM {self.s}.share_log"
                                       " ORDER BY seq DESC LIMIT 1")
        return (row["seq"], row["entry_hash"]) if row else (0, GENESIS)

    async def last_shipment(self, target: str) -> dict[str, Any] | None:
        """The target's newest share-log entry (the primary key read backwards)."""
        row = await self.pool.fetchrow(
            f"SELECT seq, at, stream, kind FROM {self.s}.share_log WHERE target = $1"
            " ORDER BY seq DESC LIMIT 1", target)
        return dict(row) if row else None

    async def add_checkpoint(self, head_seq: int, head_hash: str, signed_at: str,
                             public_key: str, signature: str, sent_to: list[str]) -> None:
        await self.pool.execute(
            f"INSERT INTO {self.s}.share_checkpoints (head_seq, head_hash, signed_at, public_key,"
            " signature, sent_to) VALUES ($1, $2, $3, $4, $5, $6)",
            head_seq, head_hash, signed_at, public_key, signature, sent_to)

    async def checkpoints(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(f"SELECT head_seq, head_hash, signed_at, public_key,"
                                     f" signature, sent_to FROM {self.s}.share_checkpoints"
                                     " ORDER BY id")
        return [dict(r) for r in rows]

    async def last_checkpoint_seq(self) -> int:
        return int(await self.pool.fetchval(
            f"SELECT coalesce(max(head_seq), 0) FROM {self.s}.share_checkpoints"))

    # --- deliveries ------------------------------------------------------------
    async def confirm_delivery(self, target: str, batches: list[Batch], *, advance_cursor: bool,
                               kind: str = "ship") -> None:
        """Share-log entries for delivered batches and, for PostgreSQL-cursor targets, the
        cursor move, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            for batch in batches:
                if batch.outgoing:
                    await self.append_shipment(conn, target, batch, kind)
            if advance_cursor:
                await self.cursor.advance(conn, target, _positions(batches))

    async def park(self, target: str, batch: Batch, status_code: int, answer: str,
                   advance_cursor: bool) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            parked = await conn.fetchval(
                f"INSERT INTO {self.s}.failed_sync (target, stream, source_topic, partition,"
                " first_offset, next_offset, event_ids, status_code, answer, batch_hash)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                target, batch.stream.name, batch.stream.source_topic, batch.partition,
                batch.first_offset, batch.next_offset, batch.event_ids, status_code, answer[:4000],
                batch.digest())
            if advance_cursor:
                await self.cursor.advance(conn, target, _positions([batch]))
        return int(parked)

    async def parked(self, target: str | None = None) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT id, target, stream, partition, first_offset, next_offset, event_ids,"
            f" status_code, answer, parked_at FROM {self.s}.failed_sync"
            " WHERE resolved_at IS NULL AND ($1::text IS NULL OR target = $1) ORDER BY id", target)
        return [dict(r) for r in rows]

    # --- operator switches and requests ----------------------------------------
    async def set_paused(self, target: str, stream: str, paused: bool) -> None:
        await self.pool.execute(
            f"INSERT INTO {self.s}.sync_control (target, stream, paused) VALUES ($1, $2, $3)"
            " ON CONFLICT (target, stream) DO UPDATE SET paused = EXCLUDED.paused, set_at = now()",
            target, stream, paused)

    async def paused(self) -> set[tuple[str, str]]:
        rows = await self.pool.fetch(f"SELECT target, stream FROM {self.s}.sync_control"
                                     " WHERE paused")
        return {(r["target"], r["stream"]) for r in rows}

    async def request(self, kind: str, target: str, stream: str, from_ms: int, to_ms: int) -> int:
        return int(await self.pool.fetchval(
            f"INSERT INTO {self.s}.sync_requests (kind, target, stream, from_ms, to_ms)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id", kind, target, stream, from_ms, to_ms))

    async def pending_requests(self, target: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT id, kind, target, stream, from_ms, to_ms FROM {self.s}.sync_requests"
            " WHERE done_at IS NULL AND target IN ($1, '*') ORDER BY id", target)
        return [dict(r) for r in rows]

    async def finish_request(self, request_id: int, result: Mapping[str, Any]) -> None:
        await self.pool.execute(
            f"UPDATE {self.s}.sync_requests SET done_at = now(), result = $2::jsonb WHERE id = $1",
            request_id, orjson.dumps(dict(result)).decode())

    async def request_result(self, request_id: int) -> dict[str, Any] | None:
        raw = await self.pool.fetchval(
            f"SELECT result FROM {self.s}.sync_requests WHERE id = $1 AND done_at IS NOT NULL",
            request_id)
        return None if raw is None else dict(orjson.loads(raw))


def _positions(batches: list[Batch]) -> dict[tuple[str, int], int]:
    positions: dict[tuple[str, int], int] = {}
    for b in batches:
        key = (b.stream.source_topic, b.partition)
        positions[key] = max(positions.get(key, 0), b.next_offset)
    return positions
