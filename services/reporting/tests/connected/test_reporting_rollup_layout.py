"""Migration 0003: incident rollups with measures as columns, existing rows moved over."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import asyncpg
import pytest
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.testing import database_url, unique
from reporting.bootstrap import MIGRATIONS
from reporting.repository import ReportingRepository

pytestmark = pytest.mark.connected

OLD_ROWS = [
    (date(2026, 11, 3), "received", "", "xa-loc-an", "moi-truong", "phan-anh-hien-truong", 4),
    (date(2026, 11, 3), "state:closed", "phong-tn-mt", "xa-loc-an", "moi-truong",
     "phan-anh-hien-truong", 3),
    (date(2026, 11, 3), "resolve_h7", "phong-tn-mt", "", "moi-truong", "", 2),
    (date(2026, 11, 3), "resolved", "phong-tn-mt", "xa-loc-an", "moi-truong",
     "phan-anh-hien-truong", 3),
    (date(2026, 11, 4), "assigned", "phong-kt-ht", "tt-loc-ninh", "giao-thong",
     "canh-bao-y-te", -1),
]


async def _old_schema(pool: asyncpg.Pool, tmp_path: Path, rows: list[tuple]) -> str:
    """A schema at migration 0002 holding per-measure `incident_daily` rows."""
    old = tmp_path / "migrations"
    old.mkdir()
    for sql in sorted(MIGRATIONS.glob("*.sql"))[:2]:
        shutil.copy(sql, old / sql.name)
    schema = unique("reporting_layout")
    await migrate(pool, schema, old)
    await pool.executemany(f"INSERT INTO {schema}.incident_daily VALUES ($1, $2, $3, $4, $5, $6, $7)",
                           rows)
    return schema


async def test_existing_rollups_are_moved_to_the_columns(tmp_path: Path) -> None:
    pool = await create_pool(database_url(), max_size=2)
    schema = await _old_schema(pool, tmp_path, OLD_ROWS)
    try:
        assert "0003_incident_measures_as_columns.sql" in await migrate(pool, schema, MIGRATIONS)
        # The two measures of one day x unit x commune x category x source share a row.
        assert await pool.fetchval(f"SELECT count(*) FROM {schema}.incident_counts") == 4
        view = {tuple(r) for r in await pool.fetch(f"SELECT * FROM {schema}.incident_daily")}
        assert view == set(OLD_ROWS)
        repo = ReportingRepository(schema)
        async with pool.acquire() as conn:
            rows = await repo.incident_rows(conn, date(2026, 11, 1), date(2026, 11, 30))
            totals = await repo.incident_totals(conn, date(2026, 11, 1), date(2026, 11, 30))
            scoped = await repo.incident_rows(conn, date(2026, 11, 1), date(2026, 11, 30),
                                              unit="phong-tn-mt")
        start = date(2026, 11, 1)
        assert (start, "received", None, None, None, None, 4) in rows
        assert (start, "received", None, "xa-loc-an", None, None, 4) in rows
        assert (start, "resolve_h7", "phong-tn-mt", None, None, None, 2) in rows
        assert (start, "assigned", None, None, None, "canh-bao-y-te", -1) in rows
        assert totals == {"received": 4, "resolved": 3, "assigned": -1}
        assert not [r for r in scoped if r[1] == "assigned"]   # another unit's row
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()


async def test_a_measure_without_a_column_stops_the_migration(tmp_path: Path) -> None:
    pool = await create_pool(database_url(), max_size=2)
    schema = await _old_schema(pool, tmp_path, [
        (date(2026, 11, 3), "state:unheard-of", "", "", "khac", "", 1)])
    try:
        with pytest.raises(asyncpg.RaiseError, match="state:unheard-of"):
            await migrate(pool, schema, MIGRATIONS)
        assert await pool.fetchval(f"SELECT count(*) FROM {schema}.incident_daily") == 1
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
