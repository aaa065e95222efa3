"""The CLI's own reads of the services' tables (all its SQL is here).

Routing's reads that routing itself has (`overdue`, `history`) are called on
`routing.repository.RoutingRepository`, not copied; the listing and the row of one
incident are operator views routing does not need, so they live here. Schemas are
checked names (`ioc_shared.platform.db` rules), never operator text in SQL.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import asyncpg

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

INCIDENT_COLUMNS = ("id, dataset, record_id, source_unit, category, priority, commune, state, "
                    "assigned_unit, reported_at, ack_due_at, resolve_due_at, updated_at")


def _checked(schema: str) -> str:
    if not _SCHEMA.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = $1 AND table_name = 'outbox')", schema))


async def outbox_backlog(conn: asyncpg.Connection, schema: str) -> dict[str, Any] | None:
    """Unpublished outbox rows and the messages they hold; None when the schema has no outbox."""
    if not await schema_exists(conn, schema):
        return None
    row = await conn.fetchrow(
        f"SELECT count(*) AS rows, coalesce(sum(message_count), 0) AS messages, "
        f"min(created_at) AS oldest FROM {_checked(schema)}.outbox WHERE published_at IS NULL")
    return dict(row) if row is not None else None


async def list_incidents(conn: asyncpg.Connection, schema: str, *, state: str | None = None,
                         unit: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {INCIDENT_COLUMNS} FROM {_checked(schema)}.incidents "
        f"WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR assigned_unit = $2) "
        f"ORDER BY updated_at DESC LIMIT $3", state, unit, limit)
    return [dict(r) for r in rows]


async def incident(conn: asyncpg.Connection, schema: str, incident_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {INCIDENT_COLUMNS}, title, primary_id, assignment_no "
        f"FROM {_checked(schema)}.incidents WHERE id = $1", incident_id)
    return dict(row) if row is not None else None


async def freshness(conn: asyncpg.Connection, schema: str, *, unit: str | None = None,
                    dataset: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT unit, dataset, last_accepted_at, late_since, late_deadline, checked_at "
        f"FROM {_checked(schema)}.freshness "
        f"WHERE ($1::text IS NULL OR unit = $1) AND ($2::text IS NULL OR dataset = $2) "
        f"ORDER BY late_since IS NULL, unit, dataset", unit, dataset)
    return [dict(r) for r in rows]


def age_seconds(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())
