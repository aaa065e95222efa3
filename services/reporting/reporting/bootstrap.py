"""Wiring in one place: settings -> runtime -> config -> handlers, scheduler, relay -> broker.

`run_reporting(settings, stop)` runs the whole service in the current event loop until
`stop` is set; `python -m reporting serve`, the tests and the benchmark use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ioc_shared.contracts.topics import (
    INGEST_FRESHNESS,
    INGEST_QUALITY,
    INGEST_REJECTED,
    REPORTING_COMMAND_RESULTS,
    REPORTING_COMMANDS,
    REPORTING_NOTIFICATIONS,
    REPORTING_PUBLISHED,
    REPORTING_UNAUTHENTICATED_COMMANDS,
    ROUTING_EVENTS,
    SYNC_PROVINCE_STATUS,
    TopicSpec,
    canonical_topic,
)
from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.relay import relay_until
from ioc_shared.platform.retention import RetentionJob, RetentionPolicy, platform_policies
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.wiring import register_consumers, run_until, stop_consumers_then_broker
from ioc_shared.registry import Registry, load_registry

from reporting.commands import CommandHandler
from reporting.config import load_config
from reporting.province_sync import SyncStatusHandler
from reporting.reports import ReportService, Topics
from reporting.repository import ReportingRepository, SyncStatusRepository
from reporting.rollups import RollupHandler
from reporting.scheduler import Scheduler
from reporting.settings import ReportingSettings
from reporting.subscribers import province_sync_consumer, reporting_consumers
from reporting.web import routes

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def consumed_specs(settings: ReportingSettings, registry: Registry) -> list[TopicSpec]:
    """Topics the rollups read: incident events, ingest's quality, freshness and
    rejections, and the canonical topics of the indicator datasets."""
    indicator = sorted(d.id for d in registry.datasets.values() if not d.incident)
    specs = [ROUTING_EVENTS, INGEST_QUALITY, INGEST_FRESHNESS, INGEST_REJECTED,
             *(canonical_topic(d) for d in indicator)]
    return [settings.topic(s) for s in specs]


def topics_of(settings: ReportingSettings) -> Topics:
    return Topics(settings.topic(REPORTING_COMMANDS).name,
                  settings.topic(REPORTING_COMMAND_RESULTS).name,
                  settings.topic(REPORTING_PUBLISHED).name,
                  settings.topic(REPORTING_NOTIFICATIONS).name,
                  settings.topic(REPORTING_UNAUTHENTICATED_COMMANDS).name)


def own_specs(settings: ReportingSettings) -> list[TopicSpec]:
    return [settings.topic(s) for s in (REPORTING_COMMANDS, REPORTING_COMMAND_RESULTS,
                                        REPORTING_PUBLISHED, REPORTING_NOTIFICATIONS,
                                        REPORTING_UNAUTHENTICATED_COMMANDS)]


def retention_policies(settings: ReportingSettings,
                       consumed: list[TopicSpec]) -> list[RetentionPolicy]:
    """What reporting deletes, when. Reports and rollups are kept: they are the record."""
    return [
        *platform_policies([*consumed, settings.topic(REPORTING_COMMANDS)],
                           handled_parked=timedelta(settings.retention_parked_days)),
        RetentionPolicy("commands", "at", timedelta(settings.retention_commands_days)),
    ]


async def run_reporting(settings: ReportingSettings, stop: asyncio.Event, *,
                        ready: asyncio.Event | None = None,
                        clock: Callable[[], datetime] | None = None,
                        configure_logs: bool = True, extras: dict[str, Any] | None = None) -> None:
    """Run reporting until `stop` is set (or a background task fails)."""
    registry = load_registry(settings.registry_file, settings.credentials_file)
    config = load_config(settings.reporting_config, registry)
    calendar = config.calendar()
    consumed = consumed_specs(settings, registry)
    # Declared here too: reporting may start before sync-province, which produces it.
    sync_status = settings.topic(SYNC_PROVINCE_STATUS)
    topics = topics_of(settings)
    holder: dict[str, Any] = {}
    runtime = ServiceRuntime(
        "reporting", settings, schema=settings.db_schema, migrations=MIGRATIONS,
        topics=[*consumed, sync_status, *own_specs(settings)], configure_logs=configure_logs,
        http_routes=routes(holder),
        consumer_groups=[(f"{settings.consumer_group}-rollups", [s.name for s in consumed]),
                         (f"{settings.consumer_group}-province-sync", [sync_status.name])])
    async with runtime as rt:
        assert rt.pool is not None
        repo = ReportingRepository(settings.db_schema)
        service = ReportService(rt.pool, repo, rt.registry, config, calendar, topics,
                                settings.output_dir, render_files=settings.render_files,
                                metrics=rt.metrics,
                                **({"clock": clock} if clock is not None else {}))

        async def sample_timers() -> None:
            async with service.pool.acquire() as conn:
                due = await repo.count_due_timers(conn, service.clock())
            bus_metrics(rt.metrics).timers_due.labels("reporting").set(due)

        rt.sampler.add("timers", sample_timers)
        holder["service"] = service
        if extras is not None:
            extras["service"] = service
            extras["http_port"] = rt.http_port
        rollups = RollupHandler(rt.pool, repo, rt.registry, calendar)
        commands = CommandHandler(service)
        consumers = reporting_consumers(
            pool=rt.pool, schema=settings.db_schema, rollups=rollups.handle,
            commands=commands.handle, on_parked_command=commands.answer_parked,
            rollup_topics=[s.name for s in consumed], commands_topic=topics.commands,
            group=settings.consumer_group, max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms, metrics=rt.metrics,
            pipelined=settings.pipelined)
        consumers.append(province_sync_consumer(
            pool=rt.pool, schema=settings.db_schema,
            handler=SyncStatusHandler(rt.pool, SyncStatusRepository(settings.db_schema)).handle,
            topic=sync_status.name, group=settings.consumer_group,
            max_records=settings.batch_max_records, batch_timeout_ms=settings.batch_timeout_ms,
            metrics=rt.metrics))
        register_consumers(rt, consumers)
        stop_relay = asyncio.Event()
        relay = rt.supervise("outbox relay", lambda: relay_until(
            stop_relay, pool=rt.pool, schema=settings.db_schema,
            bootstrap=settings.kafka_bootstrap,
            client_id=f"reporting-outbox-{settings.instance_id}",
            topics=[topics.results, topics.published, topics.notifications,
                    topics.unauthenticated],
            batch_size=settings.relay_batch_size, grace_s=settings.shutdown_grace_s,
            producer_name="reporting", metrics=rt.metrics))
        scheduler = Scheduler(service, instance=settings.instance_id, poll_s=settings.timer_poll_s)
        if settings.timers_enabled:
            rt.supervise("scheduler", scheduler.run)
        retention = RetentionJob(rt.pool, settings.db_schema,
                                 retention_policies(settings, [*consumed, sync_status]),
                                 registry=rt.metrics,
                                 interval_s=settings.retention_interval_s,
                                 slice_rows=settings.retention_slice_rows)
        rt.supervise("retention", retention.run)
        try:
            await rt.start_broker()
            rt.log.info("reporting ready", schema=settings.db_schema, http_port=rt.http_port)
            if ready is not None:
                ready.set()
            await run_until(stop, rt)
        finally:
            scheduler.stop()
            retention.stop()
            grace = settings.shutdown_grace_s
            await stop_consumers_then_broker(rt, consumers, timeout_s=grace * 0.3)
            stop_relay.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay, grace * 0.5)
