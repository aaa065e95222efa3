"""End-to-end tier: the services run as real processes (`python -m <service> serve`)
against the real Kafka and PostgreSQL, isolated by a topic namespace and schemas."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ioc_shared.platform.db import create_pool
from ioc_shared.testing import ServiceProcess, database_url, kafka_bootstrap, unique

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Deployment:
    namespace: str
    env: dict[str, str]
    tmp: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    async def start(self, service: str) -> ServiceProcess:
        proc = ServiceProcess(service, self.env, self.tmp / f"{service}.log", REPO)
        self.services[service] = proc
        await proc.start()
        return proc


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    namespace = unique("e2e").replace("_", "-")
    schemas = {"ingest": unique("e2e_ingest"), "routing": unique("e2e_routing"),
               "reporting": unique("e2e_reporting")}
    env = {
        **os.environ,
        "IOC_KAFKA_BOOTSTRAP": kafka_bootstrap(),
        "IOC_DATABASE_URL": database_url(),
        "IOC_TOPIC_NAMESPACE": namespace,
        "IOC_LOG_LEVEL": "INFO",
        "INGEST_DB_SCHEMA": schemas["ingest"],
        "INGEST_CONSUMER_GROUP": unique("e2e-ingest"),
        "ROUTING_DB_SCHEMA": schemas["routing"],
        "ROUTING_CONSUMER_GROUP": unique("e2e-routing"),
        "REPORTING_DB_SCHEMA": schemas["reporting"],
        "REPORTING_CONSUMER_GROUP": unique("e2e-reporting"),
        "REPORTING_OUTPUT_DIR": str(tmp_path / "reports"),
    }
    dep = Deployment(namespace, env, tmp_path)
    try:
        yield dep
    finally:
        for proc in dep.services.values():
            proc.stop()
        pool = await create_pool(database_url(), max_size=1)
        for schema in schemas.values():
            await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
