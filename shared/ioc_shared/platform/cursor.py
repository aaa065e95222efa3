"""A durable cursor in PostgreSQL: the next source offset to deliver, per stream,
partition and target.

For links whose target cannot hold our positions (an HTTPS gateway): the cursor moves
only after the target confirmed, in the same transaction as whatever else records the
delivery (the share log), and never backwards (a late writer cannot undo progress).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import asyncpg

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PgCursor:
    def __init__(self, schema: str, table: str = "sync_cursor") -> None:
        if not (_SCHEMA.match(schema) and _SCHEMA.match(table)):
            raise ValueError(f"invalid schema or table name {schema!r}.{table!r}")
        self.table = f"{schema}.{table}"

    def ddl(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " target text NOT NULL, stream text NOT NULL, partition integer NOT NULL,"
                " next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (target, stream, partition))")

    async def create(self, conn: asyncpg.Pool | asyncpg.Connection) -> None:
        await conn.execute(self.ddl())

    async def load(self, conn: asyncpg.Pool | asyncpg.Connection, target: str
                   ) -> dict[tuple[str, int], int]:
        """{(stream, partition): next offset} of `target`."""
        rows = await conn.fetch(f"SELECT stream, partition, next_offset FROM {self.table}"
                                " WHERE target = $1", target)
        return {(r["stream"], r["partition"]): r["next_offset"] for r in rows}

    async def advance(self, conn: asyncpg.Connection, target: str,
                      positions: Mapping[tuple[str, int], int]) -> None:
        """Move to `positions` (call inside the transaction that records the delivery)."""
        if not positions:
            return
        items = list(positions.items())
        await conn.executemany(
            f"INSERT INTO {self.table} (target, stream, partition, next_offset)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (target, stream, partition) DO UPDATE"
            f" SET next_offset = GREATEST({self.table}.next_offset, EXCLUDED.next_offset),"
            " updated_at = now()",
            [(target, stream, partition, offset) for (stream, partition), offset in items])
