"""Idempotent consumption: the processed-event record shares the state change's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

T = TypeVar("T")


async def claim_event(conn: asyncpg.Connection, schema: str, consumer: str,
                      event_id: uuid.UUID) -> bool:
    """Record that `consumer` processed `event_id`; False if it already had.

    Must run inside the transaction that applies the event's effects: if that
    transaction rolls back, the claim goes with it and a redelivery is processed.
    """
    row = await conn.fetchval(
        f"INSERT INTO {schema}.processed_events (consumer, event_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING 1", consumer, event_id)
    return row is not None


async def claim_events(conn: asyncpg.Connection, schema: str, consumer: str,
                       event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Record that `consumer` processed `event_ids`, in one round trip; returns the ids it
    had not processed before (the ones whose effects to apply now).

    Like `claim_event`, it must run inside the transaction that applies the effects.
    """
    rows = await conn.fetch(
        f"INSERT INTO {schema}.processed_events (consumer, event_id) "
        "SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
        consumer, list(event_ids))
    return {r["event_id"] for r in rows}


async def process_once(pool: asyncpg.Pool, schema: str, consumer: str, event_id: uuid.UUID,
                       apply: Callable[[asyncpg.Connection], Awaitable[T]]) -> tuple[bool, T | None]:
    """Run `apply` in a transaction unless `event_id` was already processed.

    Returns (True, result) when applied now, (False, None) for a redelivery.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await claim_event(conn, schema, consumer, event_id):
            return False, None
        return True, await apply(conn)
