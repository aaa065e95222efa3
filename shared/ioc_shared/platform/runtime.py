"""One place that wires a service: settings -> logging -> tracing -> registry -> db -> Kafka -> HTTP.

A service's `main.py` does:

    async with ServiceRuntime("ingest", IngestSettings(), schema="ingest",
                              migrations=MIGRATIONS, topics=topic_specs) as rt:
        register_subscribers(rt.broker, ...)       # thin subscribers
        await rt.start_broker()
        rt.spawn(relay.run())                      # background work, cancelled on exit
        await rt.wait_for_shutdown()               # SIGINT / SIGTERM
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute

from ioc_shared.contracts.topics import TopicSpec
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.kafka import declare_topics, make_broker
from ioc_shared.platform.logging import configure_logging, get_logger
from ioc_shared.platform.observability import HttpServer, LagMonitor, make_http_app
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.platform.telemetry import setup_tracing
from ioc_shared.registry import Registry, load_registry


class ServiceRuntime:
    def __init__(self, name: str, settings: ServiceSettings, *, schema: str | None = None,
                 migrations: Path | None = None, topics: Iterable[TopicSpec] = (),
                 consumer_groups: Sequence[tuple[str, Sequence[str]]] = (),
                 http_routes: Sequence[BaseRoute] = (), configure_logs: bool = True) -> None:
        self.name = name
        self.settings = settings
        self.schema = schema
        self._migrations = migrations
        self._topics = list(topics)
        self._groups = consumer_groups
        self._http_routes = http_routes
        self._configure_logs = configure_logs
        self.log = get_logger(name)
        self.metrics = CollectorRegistry()
        self.registry: Registry
        self.tracer_provider: TracerProvider
        self.pool: asyncpg.Pool | None = None
        self.broker: KafkaBroker
        self.http_port: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._http: HttpServer | None = None
        self._stop = asyncio.Event()
        self._broker_started = False
        self._health_checks: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        s = self.settings
        if self._configure_logs:
            configure_logging(self.name, s.log_level)
        self.tracer_provider = setup_tracing(self.name, s.otlp_endpoint)
        self.registry = load_registry(s.registry_file, s.credentials_file)
        if self.schema is not None:
            self.pool = await create_pool(s.database_url, max_size=s.db_pool_size)
            applied = await migrate(self.pool, self.schema, self._migrations)
            if applied:
                self.log.info("migrations applied", schema=self.schema, applied=applied)
        if self._topics:
            await declare_topics(s.kafka_bootstrap, self._topics, replication=s.topic_replication)
        self.broker = make_broker(s.kafka_bootstrap, service=self.name,
                                  tracer_provider=self.tracer_provider,
                                  metrics_registry=self.metrics)
        for group, topics in self._groups:
            self.spawn(LagMonitor(s.kafka_bootstrap, group, topics, self.metrics).run())
        self._health_checks.update(self._checks())
        self._http = HttpServer(make_http_app(self.metrics, self._health_checks,
                                              self._http_routes), s.http_host, s.http_port)
        self.http_port = await self._http.start()
        return self

    def _checks(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"kafka": lambda: self.broker.ping(timeout=2.0)}
        if self.pool is not None:
            pool = self.pool

            async def postgres() -> bool:
                return bool(await pool.fetchval("SELECT 1"))

            checks["postgres"] = postgres
        return checks

    def add_check(self, name: str, check: Callable[[], Awaitable[bool]]) -> None:
        """Add a readiness check to `/health` (e.g. a `DurableConsumer`'s `ready`)."""
        self._health_checks[name] = check

    async def start_broker(self) -> None:
        await self.broker.start()
        self._broker_started = True
        self.log.info("service started", http_port=self.http_port,
                      instance=self.settings.instance_id)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed; stopping", error=repr(task.exception()))
            self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_for_shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._broker_started:
            await self.broker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._http is not None:
            await self._http.stop()
        if self.pool is not None:
            await self.pool.close()
        self.tracer_provider.shutdown()
        self.log.info("service stopped")
