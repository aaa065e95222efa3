"""`ioc status --json` with the real Kafka and PostgreSQL and no service running."""

import json
import socket

import asyncpg
import pytest
from aiokafka.admin import NewTopic
from ioc_shared.contracts.topics import INGEST_INBOUND
from ioc_shared.platform.db import migrate
from ioc_shared.platform.kafka import make_admin
from ioc_shared.testing import database_url, delete_topics_under, kafka_bootstrap, unique

from .conftest import base_environment, run_ioc

pytestmark = pytest.mark.connected


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_services_down_are_reported_cleanly_with_a_non_zero_exit() -> None:
    tag = unique("t_ioc")
    namespace = tag.replace("_", "-")
    pool = await asyncpg.create_pool(database_url(), min_size=1, max_size=1)
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:
        # One topic of the catalogue exists, and the ingest schema has an outbox with one
        # unpublished row (of three messages).
        await admin.create_topics([NewTopic(f"{namespace}.{INGEST_INBOUND.name}", 6, 1)])
        await migrate(pool, tag, None)
        await pool.execute(f"INSERT INTO {tag}.outbox (message_count, messages) VALUES (3, '\\x00')")
        env = base_environment(IOC_TOPIC_NAMESPACE=namespace, INGEST_DB_SCHEMA=tag,
                               INGEST_HTTP_PORT=str(closed_port()), ROUTING_HTTP_PORT=str(closed_port()),
                               REPORTING_HTTP_PORT=str(closed_port()),
                               SYNC_PROVINCE_HTTP_PORT=str(closed_port()))
        ran = await run_ioc("status", "--json", env=env)
    finally:
        await admin.close()
        await pool.execute(f"DROP SCHEMA IF EXISTS {tag} CASCADE")
        await pool.close()
        await delete_topics_under([tag])
    assert ran.code == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    report = json.loads(ran.stdout)
    assert report["healthy"] is False
    statuses = {s["name"]: s["status"] for s in report["services"]}
    assert {"ingest", "routing"} <= set(statuses) and set(statuses.values()) == {"down"}, statuses
    assert all(s["error"] for s in report["services"])
    kafka = report["kafka"]
    assert kafka["reachable"] is True
    topics = {t["name"]: t for t in kafka["topics"]}
    inbound = topics[f"{namespace}.{INGEST_INBOUND.name}"]
    assert inbound["present"] and inbound["partitions"] == 6
    assert topics[f"{namespace}.ioc.routing.commands.v1"]["present"] is False
    assert f"{namespace}.ioc.data.phan-anh-hien-truong.v1" in topics  # registry datasets too
    outbox = {o["service"]: o for o in report["postgres"]["outbox"]}
    assert (outbox["ingest"]["rows"], outbox["ingest"]["messages"]) == (1, 3)
    assert outbox["routing"]["schema"] == "routing"


async def test_an_unreachable_broker_and_database_say_where_and_what_to_do() -> None:
    port = closed_port()
    env = base_environment(IOC_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
                           IOC_DATABASE_URL=f"postgresql://ioc:secret-pw@127.0.0.1:{port}/ioc",
                           INGEST_HTTP_PORT=str(port), ROUTING_HTTP_PORT=str(port))
    ran = await run_ioc("status", "--json", env=env)
    assert ran.code == 1 and "Traceback" not in ran.stderr
    report = json.loads(ran.stdout)
    assert report["kafka"]["reachable"] is False and "IOC_KAFKA_BOOTSTRAP" in report["kafka"]["hint"]
    assert report["postgres"]["reachable"] is False and "secret-pw" not in ran.stdout
    listed = await run_ioc("incidents", "list", env=env)
    assert listed.code == 3 and "Traceback" not in listed.stderr
    assert f"where: postgresql://ioc@127.0.0.1:{port}/ioc" in listed.stderr
    assert "IOC_DATABASE_URL" in listed.stderr
