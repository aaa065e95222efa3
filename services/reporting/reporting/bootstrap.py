"""Wiring in one place: settings -> runtime -> config -> handlers, scheduler, relay -> broker.

`run_reporting(settings, stop)` runs the whole service in the current event loop until
`stop` is set; `python -m reporting serve`, the tests and the benchmark use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ioc_shared.contracts.topics import (
    INGEST_FRESHNESS,
    INGEST_QUALITY,
    INGEST_REJECTED,
    ROUTING_EVENTS,
    TopicSpec,
    canonical_topic,
)
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.registry import Registry, load_registry

from reporting.config import load_config
from reporting.repository import ReportingRepository
from reporting.rollups import RollupHandler
from reporting.settings import ReportingSettings
from reporting.subscribers import register_subscribers

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def consumed_specs(settings: ReportingSettings, registry: Registry) -> list[TopicSpec]:
    """Topics the rollups read: incident events, ingest's quality, freshness and
    rejections, and the canonical topics of the indicator datasets."""
    indicator = sorted(d.id for d in registry.datasets.values() if not d.incident)
    specs = [ROUTING_EVENTS, INGEST_QUALITY, INGEST_FRESHNESS, INGEST_REJECTED,
             *(canonical_topic(d) for d in indicator)]
    return [settings.topic(s) for s in specs]


async def run_reporting(settings: ReportingSettings, stop: asyncio.Event, *,
                        ready: asyncio.Event | None = None,
                        clock: Callable[[], datetime] | None = None,
                        configure_logs: bool = True, extras: dict[str, Any] | None = None) -> None:
    """Run reporting until `stop` is set (or a background task fails)."""
    registry = load_registry(settings.registry_file, settings.credentials_file)
    config = load_config(settings.reporting_config, registry)
    calendar = config.calendar()
    consumed = consumed_specs(settings, registry)
    runtime = ServiceRuntime(
        "reporting", settings, schema=settings.db_schema, migrations=MIGRATIONS,
        topics=consumed, configure_logs=configure_logs,
        consumer_groups=[(f"{settings.consumer_group}-rollups", [s.name for s in consumed])])
    async with runtime as rt:
        assert rt.pool is not None
        repo = ReportingRepository(settings.db_schema)
        rollups = RollupHandler(rt.pool, repo, rt.registry, calendar)
        register_subscribers(rt.broker, rollups=rollups.handle, commands=None,
                             rollup_topics=[s.name for s in consumed], commands_topic="",
                             group=settings.consumer_group,
                             max_records=settings.batch_max_records,
                             batch_timeout_ms=settings.batch_timeout_ms)
        try:
            await rt.start_broker()
            rt.log.info("reporting ready", schema=settings.db_schema)
            if ready is not None:
                ready.set()
            await _until(stop, rt)
        finally:
            await rt.broker.stop()


async def _until(stop: asyncio.Event, rt: ServiceRuntime) -> None:
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(rt.wait_for_shutdown())
    try:
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopped, failed):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
