"""Wires the ingest service: runtime (logs, tracing, registry, db, topics, HTTP) -> pipeline -> broker.

`IngestService` is an async context manager (tests use it to reach the HTTP
port and the pipeline); `run_ingest` runs it until an event is set (the
benchmark runs the service in-process with it; `serve` with signals).
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import OutboxRelay
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.registry import load_registry
from opentelemetry import trace

from ingest.decider import Decider, DecisionConfig, WorkerDecider
from ingest.handlers import IngestMetrics, IngestPipeline
from ingest.http import HttpIntake
from ingest.outgoing import KafkaSink
from ingest.periodic import FreshnessChecker, QualityPublisher, every, policy_from
from ingest.repository import IngestRepository
from ingest.settings import IngestSettings
from ingest.subscribers import InboundWorker, inbound_worker
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
        self._worker: InboundWorker | None = None
        self._repository: IngestRepository | None = None
        self._sink: KafkaSink | None = None
        self.decider: Decider | None = None

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
            config = self._decision_config()
            ingestor = config.ingestor(rt.registry)
            self._sink = KafkaSink(self._producer)
            if s.decision_worker_count() > 0:
                self.decider = WorkerDecider(config, config.deciding(ingestor),
                                             workers=s.decision_worker_count(),
                                             in_process_below=s.decision_worker_min_records)
                await self.decider.start()
            self.pipeline = IngestPipeline(
                ingestor, repository, self._sink, self.topics,
                metrics=IngestMetrics(rt.metrics),
                tracer=trace.get_tracer("ingest", tracer_provider=rt.tracer_provider),
                chunk_records=s.chunk_records, decider=self.decider)
            self._worker = inbound_worker(s, self.pipeline)
            self.intake.pipeline = self.pipeline
            self.intake.ready = rt.is_ready
            self._relay = OutboxRelay(rt.pool, s.db_schema, self._producer, s.kafka_bootstrap)
            policy = policy_from(rt.registry, s.freshness_continuous_s, s.freshness_grace_s)
            self.freshness = FreshnessChecker(repository, rt.registry, self.topics.freshness, policy)
            self.quality = QualityPublisher(repository, rt.registry, self.topics.quality)
            relay = self._relay
            self._spawn("outbox relay", relay.run)
            self._spawn("freshness", lambda: every(s.freshness_check_interval_s,
                                                   self.freshness.check_once, "freshness"))
            self._spawn("quality", lambda: every(s.quality_publish_interval_s,
                                                 self.quality.publish_once, "quality"))
            await rt.start_broker()
            # The inbound topic is consumed by the worker's own aiokafka consumer (manual commits).
            await self._worker.start_consuming(s, self.topics.inbound)
        except BaseException:
            await self._close(None, None, None)
            raise
        return self

    def _decision_config(self) -> DecisionConfig:
        s, t = self.settings, self.topics
        return DecisionConfig(
            registry_file=str(s.registry_file),
            credentials_file=str(s.credentials_file) if s.credentials_file else None,
            future_tolerance_s=s.future_tolerance_s, geo_margin_deg=s.geo_margin_deg,
            max_message_bytes=s.max_message_bytes, canonical=dict(t.canonical),
            special=dict(t.special), rejected=t.rejected, quarantine=t.quarantine)

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
        # Stop fetching, finish (or leave for redelivery) what was fetched, flush the commits and
        # leave the group; then the runtime stops the broker, then background tasks.
        # Each step bounded and its failure logged, so the runtime's own shutdown (pool,
        # HTTP, tasks) still runs when the broker or the database is down.
        grace = self.settings.shutdown_grace_s
        if self._worker is not None:
            await _bounded("inbound worker", self._worker.close(), grace * 0.4)
        if self._repository is not None:
            await _bounded("claims connection", self._repository.close(), 2.0)
        await self.runtime.__aexit__(exc_type, exc, tb)
        if self._relay is not None:
            await self._relay.close()
        if self.decider is not None:   # after the HTTP server: nothing is decided any more
            await self.decider.close()
        if self._sink is not None:   # after the HTTP server: nothing enqueues any more
            await self._sink.close()
        if self._producer is not None:
            await self._producer.stop()


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
