"""`ioc units` and `ioc quarantine list` on ingest's real table and topic."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from ingest.service import MIGRATIONS
from ioc_shared.contracts.topics import INGEST_QUARANTINE
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.kafka import declare_topics, make_producer
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.testing import database_url, delete_topics_under, kafka_bootstrap, unique

from .conftest import base_environment, run_ioc

pytestmark = pytest.mark.connected


async def test_units_lists_late_datasets_first() -> None:
    schema = unique("t_ioc_units")
    pool = await create_pool(database_url(), max_size=1)
    try:
        await migrate(pool, schema, MIGRATIONS)
        now = datetime.now(UTC)
        await pool.executemany(
            f"INSERT INTO {schema}.freshness (unit, dataset, last_accepted_at, late_since) "
            "VALUES ($1, $2, $3, $4)",
            [("xa-loc-an", "phan-anh-hien-truong", now - timedelta(minutes=5), None),
             ("trung-tam-y-te", "chi-so-y-te", now - timedelta(days=3), now - timedelta(days=1))])
        ran = await run_ioc("units", "--json", env=base_environment(INGEST_DB_SCHEMA=schema))
        only = await run_ioc("units", "--unit", "xa-loc-an", env=base_environment(INGEST_DB_SCHEMA=schema))
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
    assert ran.code == 0, ran.stderr
    rows = json.loads(ran.stdout)
    assert [(r["unit"], r["status"]) for r in rows] == [("trung-tam-y-te", "late"), ("xa-loc-an", "fresh")]
    assert 200_000 < rows[0]["silent_s"] < 300_000
    assert only.code == 0 and "xa-loc-an" in only.stdout and "trung-tam-y-te" not in only.stdout


async def test_quarantine_list_shows_the_marks_not_the_bytes() -> None:
    tag = unique("t_ioc_q")
    namespace = tag.replace("_", "-")
    spec = ServiceSettings(topic_namespace=namespace).topic(INGEST_QUARANTINE)
    await declare_topics(kafka_bootstrap(), [spec])
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    await producer.start()
    try:
        for n, code in enumerate(("not_permitted", "unknown_commune")):
            await producer.send_and_wait(
                spec.name, b'{"record": {"reporter_phone": "0912345678"}}', key=b"xa-loc-an",
                headers=[("ioc-quarantine-code", code.encode()), ("ioc-quarantine-unit", b"xa-loc-an"),
                         ("ioc-quarantine-dataset", b"phan-anh-hien-truong"),
                         ("ioc-quarantine-origin", f"t/0/{n}".encode())])
        env = base_environment(IOC_TOPIC_NAMESPACE=namespace)
        ran = await run_ioc("quarantine", "list", "--json", env=env)
        table = await run_ioc("quarantine", "list", env=env)
    finally:
        await producer.stop()
        await delete_topics_under([tag])
    assert ran.code == 0, ran.stderr
    rows = json.loads(ran.stdout)
    assert [r["code"] for r in rows] == ["not_permitted", "unknown_commune"]
    assert {r["unit"] for r in rows} == {"xa-loc-an"}
    assert "0912345678" not in ran.stdout and "0912345678" not in table.stdout
    assert table.code == 0 and "unknown_commune" in table.stdout


async def test_a_missing_table_says_which_and_what_to_do() -> None:
    ran = await run_ioc("units", env=base_environment(INGEST_DB_SCHEMA=unique("t_ioc_none")))
    assert ran.code == 1 and "Traceback" not in ran.stderr
    assert "freshness" in ran.stderr and "migrations" in ran.stderr
