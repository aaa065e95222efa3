"""Wires the ingest service: runtime (logs, tracing, registry, db, topics, HTTP) -> pipeline ->
the inbound consumer on the runtime's broker; outbox relay, freshness, quality, retention.

`IngestService` is an async context manager (tests use it to reach the HTTP
port and the pipeline); `run_ingest` runs it until an event is set (the
benchmark runs the service in-process with it; `serve` with signals).
"""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ioc_shared.contracts.topics import INGEST_INBOUND
from ioc_shared.platform.consumer import DurableConsumer
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import OutboxRelay
from ioc_shared.platform.retention import RetentionJob, RetentionPolicy, platform_policies
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.registry import load_registry
from opentelemetry import trace

from ingest.domain import Ingestor, build_catalog
from ingest.handlers import IngestMetrics, IngestPipeline
from ingest.http import HttpIntake
from ingest.outgoing import KafkaSink
from ingest.periodic import FreshnessChecker, QualityPublisher, every, policy_from
from ingest.repository import IngestRepository
from ingest.settings import IngestSettings
from ingest.subscribers import inbound_consumer
from ingest.topics import IngestTopics

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
log = get_logger(__name__)


class IngestService:
    def __init__(self, settings: IngestSettings, *, configure_logs: bool = True) -> None:
        self.settings = settings
        self.intake = HttpIntake(settings)
        # The topic list depends on the registry (datasets, special grants); the runtime
        # loads it again, validated, a moment later.
        registry = load_registry(settings.registry_file, settings.credentials_file)
        self.topics = IngestTopics.resolve(settings, registry)
        self.runtime = ServiceRuntime(
            "ingest", settings, schema=settings.db_schema, migrations=MIGRATIONS,
            topics=self.topics.specs,
            consumer_groups=[(settings.consumer_group, [self.topics.inbound])],
            http_routes=self.intake.routes(), configure_logs=configure_logs)
        self.failed = asyncio.Event()
        self.pipeline: IngestPipeline
        self.freshness: FreshnessChecker
        self.quality: QualityPublisher
        self._relay: OutboxRelay | None = None
        self._producer: Any = None
        self.consumer: DurableConsumer | None = None
        self._retention: RetentionJob | None = None
        self._repository: IngestRepository | None = None
        self._sink: KafkaSink | None = None
        self._consuming = False

    @property
    def http_port(self) -> int | None:
        return self.runtime.http_port

    async def __aenter__(self) -> Self:
        s = self.settings
        rt = await self.runtime.__aenter__()
        try:
            assert rt.pool is not None
            # No linger: the sink hands the producer whole record batches per partition (built
            # without yielding), so waiting for more records would only delay confirmations.
            self._producer = make_producer(s.kafka_bootstrap, client_id=f"ingest-{s.instance_id}",
                                           linger_ms=0)
            await self._producer.start()
            repository = self._repository = IngestRepository(rt.pool, s.db_schema)
            catalog = build_catalog(rt.registry, s.future_tolerance_s, s.geo_margin_deg)
            ingestor = Ingestor(catalog, max_message_bytes=s.max_message_bytes)
            self._sink = KafkaSink(self._producer)
            self.pipeline = IngestPipeline(
                ingestor, repository, self._sink, self.topics,
                metrics=IngestMetrics(rt.metrics),
                tracer=trace.get_tracer("ingest", tracer_provider=rt.tracer_provider),
                chunk_records=s.chunk_records)
            self.consumer = inbound_consumer(
                self.pipeline, topic=self.topics.inbound, group=s.consumer_group, pool=rt.pool,
                schema=s.db_schema, max_records=s.batch_max_records,
                batch_timeout_ms=s.batch_timeout_ms, metrics=rt.metrics,
                fetch_min_bytes=s.fetch_min_bytes, fetch_max_wait_ms=s.fetch_max_wait_ms,
                pipelined=s.pipelined)
            self.consumer.register(rt.broker)
            rt.add_check(self.consumer.name, self.consumer.health)
            self.intake.pipeline = self.pipeline
            self.intake.ready = rt.is_ready
            self._relay = OutboxRelay(rt.pool, s.db_schema, self._producer, s.kafka_bootstrap,
                                      producer_name="ingest", metrics=rt.metrics)
            policy = policy_from(rt.registry, s.freshness_continuous_s, s.freshness_grace_s)
            self.freshness = FreshnessChecker(repository, rt.registry, self.topics.freshness, policy)
            self.quality = QualityPublisher(repository, rt.registry, self.topics.quality)
            relay = self._relay
            self._spawn("outbox relay", relay.run)
            self._spawn("freshness", lambda: every(s.freshness_check_interval_s,
                                                   self.freshness.check_once, "freshness"))
            self._spawn("quality", lambda: every(s.quality_publish_interval_s,
                                                 self.quality.publish_once, "quality"))
            self._retention = RetentionJob(rt.pool, s.db_schema, retention_policies(s),
                                           registry=rt.metrics,
                                           interval_s=s.retention_interval_s,
                                           slice_rows=s.retention_slice_rows)
            self._spawn("retention", self._retention.run)
            await rt.start_broker()
            self._consuming = True
        except BaseException:
            await self._close(None, None, None)
            raise
        return self

    def _spawn(self, name: str, work: Any) -> None:
        """Restarted with backoff by the runtime; only a permanent failure ends it."""
        task = self.runtime.supervise(name, work)

        def on_done(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.failed.set()

        task.add_done_callback(on_done)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close(exc_type, exc, tb)

    async def _close(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                     tb: TracebackType | None) -> None:
        if self._relay is not None:
            self._relay.stop()
        if self._retention is not None:
            self._retention.stop()
        # Stop consuming before the producer goes: a batch waiting to retry stops now,
        # uncommitted; the broker's stop lets the batch in the handler finish and commit.
        # Each step bounded and its failure logged, so the runtime's own shutdown (pool,
        # HTTP, tasks) still runs when the broker or the database is down.
        grace = self.settings.shutdown_grace_s
        if self.consumer is not None:
            self.consumer.stop()
            # The batch whose confirmations are on their way: committed while the consumer runs.
            await _bounded("outstanding batch", self.consumer.drain(), grace * 0.2)
        if self._consuming:
            await _bounded("broker", self.runtime.broker.stop(), grace * 0.4)
        if self._repository is not None:
            await _bounded("claims connection", self._repository.close(), 2.0)
        await self.runtime.__aexit__(exc_type, exc, tb)
        if self._relay is not None:
            await self._relay.close()
        if self._sink is not None:   # after the HTTP server: nothing enqueues any more
            await self._sink.close()
        if self._producer is not None:
            await self._producer.stop()


def retention_policies(settings: IngestSettings) -> list[RetentionPolicy]:
    """What ingest deletes, when (deploy/README.md, "Retention"). Freshness rows are one per
    (unit, dataset) and stay."""
    return [
        *platform_policies([settings.topic(INGEST_INBOUND)],
                           handled_parked=timedelta(settings.retention_parked_days)),
        RetentionPolicy("accepted_records", "accepted_at",
                        timedelta(settings.retention_accepted_days)),
        # Only counters published since their last change (a later change is published first).
        RetentionPolicy("quality_counters", "updated_at",
                        timedelta(settings.retention_quality_days),
                        where="published_at >= updated_at"),
    ]


async def _bounded(step: str, work: Any, timeout: float) -> None:
    try:
        await asyncio.wait_for(work, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise   # this shutdown itself is cancelled
        log.warning("shutdown step cancelled from inside", step=step)
    except Exception as exc:
        log.warning("shutdown step failed", step=step, error=repr(exc))


def tune_gc() -> None:
    """Process-wide GC settings for a service process (`serve`), applied once started.

    Start-up objects (modules, registry, compiled schemas, clients) never become
    garbage: freezing them keeps every later collection from traversing them again.
    A batch allocates many short-lived objects, so young collections run less often.
    Collection stays on: cycles are still freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)



async def run_ingest(settings: IngestSettings, stop: asyncio.Event, *,
                     configure_logs: bool = True, gc_tuning: bool = False) -> None:
    """Run the ingest service in this event loop until `stop` is set (or a background task fails).

    `gc_tuning`: apply `tune_gc()` once started (the `serve` command; not for in-process use).
    """
    async with IngestService(settings, configure_logs=configure_logs) as service:
        if gc_tuning:
            tune_gc()
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(service.failed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if service.failed.is_set() and not stop.is_set():
            log.error("ingest stopping: a background task failed")
