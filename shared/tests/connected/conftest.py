from collections.abc import AsyncIterator

import asyncpg
import pytest
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.testing import database_url, unique


@pytest.fixture
async def schema_pool() -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A pool and a fresh schema with the platform tables, dropped afterwards."""
    schema = unique("t_shared")
    pool = await create_pool(database_url(), max_size=4)
    await migrate(pool, schema, None)
    try:
        yield schema, pool
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
