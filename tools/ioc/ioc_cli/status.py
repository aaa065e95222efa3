"""`ioc status`: each service's health, the topics, consumer lag and outbox backlogs.

Each part is gathered on its own, so a broker that is down still lets the services'
health and the database's backlogs show (and the other way round).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from ioc_shared.contracts.topics import TOPICS, TopicSpec, canonical_topic
from ioc_shared.platform.kafka import make_admin, make_consumer
from ioc_shared.registry import RegistryError, load_registry

from ioc_cli import queries
from ioc_cli.environment import OperatorSettings, ServiceInfo
from ioc_cli.errors import _no_password

TIMEOUT_S = 5.0


async def service_health(client: httpx.AsyncClient, service: ServiceInfo) -> dict[str, Any]:
    url = f"{service.http_url}/health"
    out: dict[str, Any] = {"name": service.name, "url": url}
    try:
        response = await client.get(url)
        body = response.json()
        out.update(status=body.get("status", "?"), checks=body.get("checks", {}))
    except (httpx.HTTPError, ValueError) as exc:
        out.update(status="down", error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return out


def expected_topics(settings: OperatorSettings) -> tuple[list[TopicSpec], str | None]:
    """The catalogue as this deployment names it, with each registry dataset's topic."""
    specs = list(TOPICS)
    problem = None
    try:
        registry = load_registry(settings.registry_file)
        specs += [canonical_topic(ds) for ds in sorted(registry.datasets)]
    except (RegistryError, OSError) as exc:
        problem = f"registry {settings.registry_file}: {exc}"
    return [settings.topic(s) for s in specs], problem


def _group_of_service(group: str, services: Sequence[ServiceInfo]) -> str | None:
    for s in services:
        if group == s.group or group.startswith(s.group + "-"):
            return s.name
    return None


async def kafka_status(settings: OperatorSettings, services: Sequence[ServiceInfo],
                       extra_groups: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"bootstrap": settings.kafka_bootstrap, "reachable": False}
    admin = make_admin(settings.kafka_bootstrap, client_id="ioc-cli",
                       request_timeout_ms=int(TIMEOUT_S * 1000))
    consumer = make_consumer(bootstrap=settings.kafka_bootstrap, group_id=None,
                             request_timeout_ms=int(TIMEOUT_S * 1000))
    try:
        await asyncio.wait_for(admin.start(), TIMEOUT_S)
        await asyncio.wait_for(consumer.start(), TIMEOUT_S)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        out["hint"] = "start it (bash scripts/platform.sh start) or set IOC_KAFKA_BOOTSTRAP"
        await _close(admin, consumer)
        return out
    try:
        out["reachable"] = True
        specs, problem = expected_topics(settings)
        if problem:
            out["registry_problem"] = problem
        present = set(await admin.list_topics())
        names = [s.name for s in specs if s.name in present]
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)} \
            if names else {}
        out["topics"] = [{"name": s.name, "declared_partitions": s.partitions,
                          "partitions": described.get(s.name), "present": s.name in present}
                         for s in specs]
        groups = []
        listed = [g[0] for g in await admin.list_consumer_groups()]
        wanted = sorted({g for g in listed if _group_of_service(g, services)} | set(extra_groups))
        for group in wanted:
            committed = await admin.list_consumer_group_offsets(group)
            tps = [tp for tp in committed if committed[tp].offset >= 0]
            ends = await consumer.end_offsets(tps) if tps else {}
            partitions = [{"topic": tp.topic, "partition": tp.partition,
                           "committed": committed[tp].offset, "end": ends[tp],
                           "lag": max(0, ends[tp] - committed[tp].offset)}
                          for tp in sorted(tps, key=lambda t: (t.topic, t.partition))]
            groups.append({"group": group, "service": _group_of_service(group, services),
                           "lag": sum(p["lag"] for p in partitions), "partitions": partitions})
        out["groups"] = groups
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await _close(admin, consumer)
    return out


async def _close(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    for closing in (consumer.stop(), admin.close()):
        with contextlib.suppress(Exception):  # closing what never connected
            await asyncio.wait_for(closing, TIMEOUT_S)


async def postgres_status(settings: OperatorSettings,
                          services: Sequence[ServiceInfo]) -> dict[str, Any]:
    out: dict[str, Any] = {"url": _no_password(settings.database_url), "reachable": False}
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["hint"] = "start it (bash scripts/platform.sh start) or set IOC_DATABASE_URL"
        return out
    try:
        out["reachable"] = True
        backlog = []
        for s in services:
            found = await queries.outbox_backlog(conn, s.schema)
            backlog.append({"service": s.name, "schema": s.schema,
                            **(found if found is not None else {"rows": None, "messages": None,
                                                                "oldest": None, "missing": True})})
        out["outbox"] = backlog
    finally:
        await conn.close()
    return out


async def gather_status(settings: OperatorSettings, services: Sequence[ServiceInfo],
                        extra_groups: Sequence[str] = ()) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        health, kafka, postgres = await asyncio.gather(
            asyncio.gather(*(service_health(client, s) for s in services)),
            kafka_status(settings, services, extra_groups), postgres_status(settings, services))
    healthy = (bool(services) and all(h["status"] == "ok" for h in health)
               and kafka["reachable"] and "error" not in kafka and postgres["reachable"])
    return {"at": datetime.now(UTC), "healthy": healthy, "services": list(health),
            "kafka": kafka, "postgres": postgres}
