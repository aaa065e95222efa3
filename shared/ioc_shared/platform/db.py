"""asyncpg pool and a small ordered-SQL migration runner.

Each service owns one PostgreSQL schema and a `migrations/` folder of
`NNNN_name.sql` files applied in order at start-up, once, under an advisory
lock (two instances starting together do not race). The platform tables every
service needs (processed events, outbox) come first from this package.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from importlib import resources
from pathlib import Path

import asyncpg

# Bounds that keep a database outage from hanging a caller: connecting, and any one
# statement (a stalled network answers nothing, and TCP would wait for many minutes).
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 120.0

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def _release_without_reset_query(conn: asyncpg.Connection) -> None:
    """What a connection returned to the pool needs here, without asyncpg's reset query.

    The default reset (UNLISTEN *, advisory unlock all, RESET ALL, ...) is a round trip
    on every release, one per batch on the hot paths. This code never leaves session
    state behind: transactions are closed by their context managers, nothing SETs
    session variables, and the session locks and listeners (migrations, outbox relay)
    are undone in `finally` blocks on the connection that took them. A transaction left
    open by a failure is still rolled back.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     server_settings={"timezone": "UTC"},
                                     reset=_release_without_reset_query,
                                     timeout=CONNECT_TIMEOUT_S,
                                     command_timeout=COMMAND_TIMEOUT_S)
    assert pool is not None
    return pool


async def close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    """Close the pool gracefully within `timeout`, else terminate its connections.

    `Pool.close()` waits for every connection to be released and for the server to
    answer each close; with the server gone it can wait for minutes."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()


def _platform_migrations() -> list[tuple[str, str]]:
    """The platform's own migrations, recorded as `0000_platform.sql` (the first, named as
    before there were several) and `platform/NNNN_name.sql`."""
    folder = resources.files("ioc_shared.platform").joinpath("migrations")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not _MIGRATION_NAME.match(entry.name):
            continue
        name = entry.name if entry.name == "0000_platform.sql" else f"platform/{entry.name}"
        found.append((name, entry.read_text(encoding="utf-8")))
    return found


def _ordered_migrations(directory: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        if not _MIGRATION_NAME.match(path.name):
            raise ValueError(f"{path}: migration names must look like 0001_create_things.sql")
        found.append((path.name, path.read_text(encoding="utf-8")))
    return found


async def migrate(pool: asyncpg.Pool, schema: str, directory: Path | None) -> list[str]:
    """Create `schema`, its platform tables, and apply pending migrations; returns applied names."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    migrations = _platform_migrations()
    if directory is not None:
        migrations += _ordered_migrations(directory)
    applied: list[str] = []
    async with pool.acquire() as conn:
        lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            done = {r["name"]: r["checksum"] for r in
                    await conn.fetch(f"SELECT name, checksum FROM {schema}.schema_migrations")}
            for name, sql in migrations:
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if name in done:
                    if done[name] != checksum:
                        raise RuntimeError(f"migration {schema}/{name} was edited after it was applied")
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                    await conn.execute(sql)
                    await conn.execute(
                        f"INSERT INTO {schema}.schema_migrations (name, checksum) VALUES ($1, $2)",
                        name, checksum)
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied
