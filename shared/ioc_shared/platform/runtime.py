"""One place that wires a service: settings -> logging -> tracing -> registry -> db -> Kafka -> HTTP.

A service's `main.py` does:

    async with ServiceRuntime("ingest", IngestSettings(), schema="ingest",
                              migrations=MIGRATIONS, topics=topic_specs) as rt:
        register_subscribers(rt.broker, ...)       # thin subscribers
        await rt.start_broker()
        rt.supervise("relay", relay.run)           # restarted with backoff if it fails
        rt.add_check("consumer", consumer.health)  # readiness, answered from memory
        await rt.wait_for_shutdown()               # SIGINT / SIGTERM

Riding out a broker or database outage:
- `supervise(name, work)` runs `work()` and, when it raises, logs one line and calls it
  again after an exponential backoff with jitter (0.5 s doubling to 30 s; the streak
  resets after a minute of running). Only `PermanentError` (a failure no retry can fix)
  stops the service: it logs why and exits.
- Readiness (`/health/ready`, and `/health`) is the conjunction of checks that answer
  from memory: `started`, `kafka` and `postgres` (kept by background probes with short
  timeouts, see `DependencyWatch`), and whatever the service adds with `add_check`.
  `/health/live` answers 200 while the process serves.
- Shutdown is bounded by `shutdown_grace_s` (`IOC_SHUTDOWN_GRACE_S`, 10 s): every step
  has a timeout (the pool is terminated if closing it does not finish), and after
  SIGTERM/SIGINT a watchdog thread ends the process if it is still there a second after
  the grace period (a hung client cannot keep it alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import asyncpg
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from starlette.routing import BaseRoute
from tenacity import RetryCallState, wait_exponential_jitter

from ioc_shared.contracts.topics import TopicSpec
from ioc_shared.platform.db import close_pool, create_pool, migrate
from ioc_shared.platform.kafka import (
    declare_topics,
    make_broker,
    make_client,
    use_district_security,
)
from ioc_shared.platform.logging import configure_logging, get_logger
from ioc_shared.platform.metrics import Sampler, bus_metrics
from ioc_shared.platform.observability import (
    DependencyWatch,
    HttpServer,
    LagMonitor,
    ReadinessCheck,
    make_http_app,
)
from ioc_shared.platform.outbox import outbox_backlog, outbox_offsets
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.platform.telemetry import setup_tracing
from ioc_shared.registry import Registry, load_registry

# Backoff between restarts of a supervised task: 0.5 s doubling up to 30 s, plus jitter.
_RESTART_BACKOFF = wait_exponential_jitter(multiplier=0.5, max=30.0, jitter=0.5)
# A task that ran this long before failing starts its backoff from the beginning.
_HEALTHY_RUN_S = 60.0
_PROBE_INTERVAL_S = 1.0
_PROBE_TIMEOUT_S = 2.0
# Exit code when the shutdown watchdog ends a process that outlived its grace period.
EXIT_SHUTDOWN_HUNG = 70


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad configuration, refused credentials, a topic
    layout that must not be changed ...): raised from supervised work, it stops the
    service with this message instead of a restart."""


def restart_delay(failures: int) -> float:
    """Seconds before restarting work that failed `failures` times in a row."""
    state = RetryCallState(cast(Any, None), None, (), {})
    state.attempt_number = failures
    return float(_RESTART_BACKOFF(state))


class ServiceRuntime:
    def __init__(self, name: str, settings: ServiceSettings, *, schema: str | None = None,
                 migrations: Path | None = None, topics: Iterable[TopicSpec] = (),
                 consumer_groups: Sequence[tuple[str, Sequence[str]]] = (),
                 http_routes: Sequence[BaseRoute] = (), configure_logs: bool = True) -> None:
        self.name = name
        self.settings = settings
        # Every Kafka client of this process: the service's own security settings.
        use_district_security(settings.kafka_security())
        self.schema = schema
        self._migrations = migrations
        self._topics = list(topics)
        self._groups = consumer_groups
        self._http_routes = http_routes
        self._configure_logs = configure_logs
        self.log = get_logger(name)
        self.metrics = CollectorRegistry()
        # Gauges read from PostgreSQL every few seconds: the outbox backlog, and what a
        # service adds (`sampler.add`, e.g. timers due).
        self.sampler = Sampler()
        self.registry: Registry
        self.tracer_provider: TracerProvider
        self.pool: asyncpg.Pool | None = None
        self.broker: KafkaBroker
        self.http_port: int | None = None
        self.failure: BaseException | None = None    # the permanent error that stopped it
        self.kafka = DependencyWatch("kafka")
        self.postgres = DependencyWatch("postgres")
        self._checks: dict[str, ReadinessCheck] = {}
        self._phase = "starting"
        self._tasks: list[asyncio.Task[Any]] = []
        self._probes: list[asyncio.Task[Any]] = []
        self._http: HttpServer | None = None
        self._stop = asyncio.Event()
        self._broker_started = False
        self._signals_chained = False
        self._previous_handlers: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None

    # --- start ---------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            return await self._start()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def _start(self) -> Self:
        s = self.settings
        if self._configure_logs:
            configure_logging(self.name, s.log_level)
        self._chain_signal_handlers()
        self.tracer_provider = setup_tracing(self.name, s.otlp_endpoint)
        if not s.dev_mode and s.kafka_security().is_clear_text():
            self.log.warning("kafka in clear text, as IOC_KAFKA_SECURITY_PROTOCOL says: "
                             "for a local broker only", protocol=s.kafka_security().protocol)
        self.registry = load_registry(s.registry_file, s.credentials_file)
        self.add_check("started", lambda: (self._phase == "running", self._phase))
        self.add_check("kafka", self.kafka.check)
        if self.schema is not None:
            self.pool = await create_pool(s.database_url, max_size=s.db_pool_size)
            applied = await migrate(self.pool, self.schema, self._migrations)
            if applied:
                self.log.info("migrations applied", schema=self.schema, applied=applied)
            self.add_check("postgres", self.postgres.check)
            self._probes.append(asyncio.create_task(
                self.postgres.run(self._probe_postgres(), interval_s=_PROBE_INTERVAL_S,
                                  timeout_s=_PROBE_TIMEOUT_S)))
        self._probes.append(asyncio.create_task(
            self.kafka.run(self._probe_kafka(), interval_s=_PROBE_INTERVAL_S,
                           timeout_s=_PROBE_TIMEOUT_S)))
        if self._topics:
            await declare_topics(s.kafka_bootstrap, self._topics, replication=s.topic_replication)
        self.broker = make_broker(s.kafka_bootstrap, service=self.name,
                                  tracer_provider=self.tracer_provider,
                                  metrics_registry=self.metrics)
        for group, topics in self._groups:
            monitor = LagMonitor(s.kafka_bootstrap, group, topics, self.metrics)
            self.supervise(f"lag monitor {group}", monitor.run)
        if self.pool is not None:
            self.sampler.add("outbox", self._sample_outbox)
        self.supervise("metric sampler", self.sampler.run)
        self._http = HttpServer(make_http_app(self.metrics, self.readiness, self._http_routes),
                                s.http_host, s.http_port)
        self.http_port = await self._http.start()
        return self

    async def _sample_outbox(self) -> None:
        assert self.pool is not None and self.schema is not None
        async with self.pool.acquire() as conn:
            pending, oldest_s = await outbox_backlog(conn, self.schema)
            offsets = await outbox_offsets(conn, self.schema)
        metrics = bus_metrics(self.metrics)
        metrics.outbox_backlog.set(pending)
        metrics.outbox_oldest_s.set(oldest_s)
        for topic, offset in offsets.items():
            metrics.outbox_offset.labels(topic).set(offset)

    async def start_broker(self) -> None:
        await self.broker.start()
        self._broker_started = True
        self._phase = "running"
        self.log.info("service started", http_port=self.http_port,
                      instance=self.settings.instance_id)

    # --- readiness -----------------------------------------------------------------
    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """A readiness check: answers at once from memory, `(ok, reason when not ok)`.

        Never a network call: `/health` must answer while a dependency hangs."""
        self._checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str | None]]:
        """(ready, {check: None when it holds, else the reason})."""
        results: dict[str, str | None] = {}
        for name, check in self._checks.items():
            try:
                ok, reason = check()
            except Exception as exc:   # a broken check says so instead of breaking /health
                ok, reason = False, f"check failed: {exc!r}"
            results[name] = None if ok else (reason or f"{name} not ready")
        return all(r is None for r in results.values()), results

    def is_ready(self) -> bool:
        return self.readiness()[0]

    def _probe_kafka(self) -> Callable[[], Awaitable[object]]:
        """A metadata request on a client of its own; a failed client is dropped whole.
        For no topic (the brokers only): the metadata of every topic of a shared cluster
        (3,000 here) cost 77 ms of CPU a probe, once a second."""
        client: AIOKafkaClient | None = None

        async def probe() -> object:
            nonlocal client
            try:
                if client is None:
                    client = make_client(self.settings.kafka_bootstrap,
                                         client_id=f"{self.name}-probe")
                    await client.bootstrap()
                node = client.get_random_node()
                if node is None:
                    raise KafkaConnectionError("no broker known")
                return await client.send(node, MetadataRequest([]))
            except BaseException:
                failed, client = client, None
                if failed is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(asyncio.wait_for(failed.close(), 2.0))
                raise

        return probe

    def _probe_postgres(self) -> Callable[[], Awaitable[object]]:
        """`SELECT 1` on a connection of its own (a busy pool does not look like an outage)."""
        conn: asyncpg.Connection | None = None

        async def probe() -> object:
            nonlocal conn
            try:
                if conn is not None and conn.is_closed():
                    # Lost since the last probe: the server went away, if only for a
                    # restart; say so once, even if it is back already.
                    conn = None
                    raise ConnectionError("connection to the server was lost")
                if conn is None:
                    conn = await asyncpg.connect(self.settings.database_url,
                                                 timeout=_PROBE_TIMEOUT_S)
                return await conn.fetchval("SELECT 1", timeout=_PROBE_TIMEOUT_S)
            except BaseException:
                failed, conn = conn, None
                if failed is not None:
                    failed.terminate()
                raise

        return probe

    # --- background work -------------------------------------------------------------
    def supervise(self, name: str, work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        """Run `work()` until it returns; restart it with backoff when it raises.

        `PermanentError` is not retried: the service logs it and stops."""
        task = asyncio.create_task(self._supervised(name, work), name=name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)
        return task

    async def _supervised(self, name: str, work: Callable[[], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        failures = 0
        last_line = 0.0
        while True:
            started = loop.time()
            try:
                return await work()
            except PermanentError:
                raise
            except Exception as exc:
                failures = 1 if loop.time() - started >= _HEALTHY_RUN_S else failures + 1
                delay = restart_delay(failures)
                # One line when a streak starts (with the traceback), then one a minute.
                if failures == 1 or loop.time() - last_line >= 60.0:
                    last_line = loop.time()
                    self.log.warning("background task failed; restarting", task=name,
                                     error=repr(exc), failures=failures,
                                     retry_in_s=round(delay, 1), exc_info=failures == 1)
                await asyncio.sleep(delay)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Background work that cannot be restarted: its failure stops the service. Work
        that can fail for a while (anything that talks to Kafka or PostgreSQL) belongs
        in `supervise`."""
        task = asyncio.create_task(coro)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.failure = task.exception()
        self.log.error("background task failed for good; stopping the service",
                       task=task.get_name(), error=repr(self.failure))
        self._stop.set()

    # --- stop ----------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def _chain_signal_handlers(self) -> None:
        """On SIGTERM/SIGINT: run the handler the service installed (its own stop event),
        set this runtime's stop, and arm the shutdown watchdog."""
        loop = asyncio.get_running_loop()
        installed = getattr(loop, "_signal_handlers", {})   # asyncio's, on Unix loops
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = installed.get(sig)
            self._previous_handlers[sig] = previous

            def on_signal(previous: Any = previous) -> None:
                self.arm_shutdown_watchdog()
                self._stop.set()
                if previous is not None and not previous.cancelled():
                    previous._run()

            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                self._signals_chained = True

    def arm_shutdown_watchdog(self) -> None:
        """End the process if it is still alive a second after the grace period."""
        if self._watchdog is not None:
            return
        grace = self.settings.shutdown_grace_s

        def hung() -> None:
            self.log.error("shutdown took longer than the grace period; exiting now",
                           grace_s=grace)
            os._exit(EXIT_SHUTDOWN_HUNG)

        self._watchdog = threading.Timer(grace + 1.0, hung)
        self._watchdog.daemon = True
        self._watchdog.start()

    async def wait_for_shutdown(self) -> None:
        if not self._signals_chained:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._phase = "stopping"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_s

        async def bounded(step: str, work: Awaitable[Any], share: float) -> None:
            budget = max(0.2, min(deadline - loop.time(), share))
            try:
                await asyncio.wait_for(work, budget)
            except TimeoutError:
                self.log.warning("shutdown step timed out", step=step, timeout_s=round(budget, 1))
            except Exception as error:
                self.log.warning("shutdown step failed", step=step, error=repr(error))

        grace = self.settings.shutdown_grace_s
        if self._broker_started:
            await bounded("broker", self.broker.stop(), grace * 0.4)
        for task in self._tasks + self._probes:
            task.cancel()
        pending = [t for t in self._tasks + self._probes if not t.done()]
        if pending:
            await bounded("background tasks", asyncio.wait(pending), grace * 0.3)
        if self._http is not None:
            await bounded("http", self._http.stop(), 2.0)
        if self.pool is not None:
            await close_pool(self.pool, max(0.2, min(deadline - loop.time(), grace * 0.3)))
        if hasattr(self, "tracer_provider"):
            self.tracer_provider.shutdown()
        self._restore_signal_handlers()
        self.log.info("service stopped")

    def _restore_signal_handlers(self) -> None:
        """Give the signals back to whatever handled them before (a process that runs
        several runtimes one after the other, like a test session)."""
        if not self._signals_chained:
            return
        loop = asyncio.get_running_loop()
        for sig, previous in self._previous_handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if previous is not None and not previous.cancelled():
                    loop.add_signal_handler(sig, previous._callback, *previous._args)
                else:
                    loop.remove_signal_handler(sig)
        self._signals_chained = False
