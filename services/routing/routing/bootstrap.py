"""Wiring in one place: settings -> runtime -> policy -> handlers, relay, timers -> broker.

`run_routing(settings, stop)` runs the whole service in the current event
loop until `stop` is set; `python -m routing serve` and the benchmark use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ioc_shared.contracts.topics import ROUTING_COMMANDS, canonical_topic
from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.retention import RetentionJob, RetentionPolicy, platform_policies
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.wiring import register_consumers, run_until, stop_consumers_then_broker
from ioc_shared.registry import load_registry

from routing.config import load_policy, organisation_from_registry
from routing.domain.states import State
from routing.handlers import CommandHandler, IntakeHandler, RoutingCore
from routing.positions import PositionReader
from routing.publishing import RoutingTopics, incident_topic_specs
from routing.relay import start_relay
from routing.repository import RoutingRepository
from routing.settings import RoutingSettings
from routing.subscribers import routing_consumers
from routing.timers import TimerWorker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Bounded wait for the outbox to empty on shutdown; anything left goes out on the next start.
_DRAIN_ON_STOP_S = 3.0


async def run_routing(settings: RoutingSettings, stop: asyncio.Event, *,
                      ready: asyncio.Event | None = None,
                      clock: Callable[[], datetime] | None = None,
                      configure_logs: bool = True, gc_tuning: bool = False) -> None:
    """Run routing until `stop` is set (or a background task fails).

    `gc_tuning`: apply `tune_gc()` once started (the `serve` command; not for in-process use).
    """
    # The registry names the incident datasets, hence the topics to declare and consume.
    registry = load_registry(settings.registry_file, settings.credentials_file)
    org = organisation_from_registry(registry)
    policy = load_policy(settings.routing_config, org)
    datasets = sorted(org.incident_datasets)
    topics = RoutingTopics.from_settings(settings)
    incident_topics = [settings.topic(canonical_topic(d)).name for d in datasets]
    group = settings.consumer_group
    runtime = ServiceRuntime(
        "routing", settings, schema=settings.db_schema, migrations=MIGRATIONS,
        topics=incident_topic_specs(settings, datasets), configure_logs=configure_logs,
        # Lag of the intake group only: the runtime's LagMonitor registers one gauge per
        # group in a single registry, so a second group would collide.
        consumer_groups=[(f"{group}-intake", incident_topics)])

    async with runtime as rt:
        assert rt.pool is not None
        core = RoutingCore(rt.pool, RoutingRepository(settings.db_schema), topics, policy,
                           policy.calendar.build(), org, rt.registry, settings.instance_id,
                           metrics=rt.metrics,
                           positions=PositionReader(settings.kafka_bootstrap))
        if clock is not None:
            core.clock = clock
        # Load this year's and next year's holidays now, not in the first batch's deadlines.
        today = core.clock().date()
        for year in (today.year, today.year + 1):
            core.calendar.is_working_day(today.replace(year=year, month=1, day=1))
        consumers = routing_consumers(
            core, intake=IntakeHandler(core), commands=CommandHandler(core),
            incident_topics=incident_topics, commands_topic=topics.commands, group=group,
            max_records=settings.batch_max_records, batch_timeout_ms=settings.batch_timeout_ms,
            metrics=rt.metrics)
        register_consumers(rt, consumers)
        stop_relay, relay_task = await start_relay(settings, rt.pool, rt.supervise,
                                                   metrics=rt.metrics)

        async def sample_timers() -> None:
            async with core.pool.acquire() as conn:
                due = await core.repo.count_due_work(conn, core.clock())
            bus_metrics(rt.metrics).timers_due.labels("routing").set(due)

        rt.sampler.add("timers", sample_timers)
        timers = TimerWorker(core, poll_s=settings.timer_poll_s, batch=settings.timer_batch)
        rt.supervise("timers", timers.run)
        retention = RetentionJob(rt.pool, settings.db_schema,
                                 retention_policies(settings, datasets), registry=rt.metrics,
                                 interval_s=settings.retention_interval_s,
                                 slice_rows=settings.retention_slice_rows)
        rt.supervise("retention", retention.run)
        try:
            await rt.start_broker()
            rt.log.info("routing ready", rules=len(policy.rules), datasets=datasets,
                        schema=settings.db_schema)
            if gc_tuning:
                tune_gc()
            if ready is not None:
                ready.set()
            await run_until(stop, rt)
        finally:
            timers.stop()
            retention.stop()
            # Stop consuming first so the outbox can drain what was already decided;
            # each step bounded (a dependency may be down).
            grace = settings.shutdown_grace_s
            await stop_consumers_then_broker(rt, consumers, timeout_s=grace * 0.3)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_drain(core), _DRAIN_ON_STOP_S + 0.5)
            await stop_relay()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay_task, grace * 0.5)


# Due work is history once its incident no longer waits for anything (a reopened
# incident gets new rows); until then the overdue view reads its latest rows.
_NOT_WAITING = ", ".join(f"'{s.value}'" for s in
                         (State.RESOLVED, State.CLOSED, State.REJECTED, State.MERGED))


def retention_policies(settings: RoutingSettings, datasets: list[str]) -> list[RetentionPolicy]:
    """What routing deletes, when (deploy/README.md, "Retention"). Incidents, their
    transitions (the audit trail) and survey answers are kept: they are the record.

    Processed events are claimed by the consumers of the commands topic and of the
    incident datasets' canonical topics: kept longer than both keep their records."""
    consumed = [settings.topic(ROUTING_COMMANDS),
                *(settings.topic(canonical_topic(d)) for d in datasets)]
    processed = settings.retention_processed_events_days
    return [
        *platform_policies(consumed,
                           processed_events=None if processed is None else timedelta(processed),
                           handled_parked=timedelta(settings.retention_parked_days)),
        RetentionPolicy("due_work", "coalesce(fired_at, skipped_at)",
                        timedelta(settings.retention_due_work_days),
                        where="EXISTS (SELECT 1 FROM {schema}.incidents i WHERE "
                              f"i.id = t.incident_id AND i.state IN ({_NOT_WAITING}))"),
        RetentionPolicy("commands", "received_at", timedelta(settings.retention_commands_days)),
    ]


def tune_gc() -> None:
    """Process-wide GC settings for a service process, applied once started.

    Start-up objects (modules, registry, policy, clients) never become garbage: freezing
    them keeps every later collection from traversing them again. A batch allocates many
    short-lived objects, so young collections run less often. Collection stays on.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _drain(core: RoutingCore) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DRAIN_ON_STOP_S
    while loop.time() < deadline:
        pending = await core.pool.fetchval(
            f"SELECT count(*) FROM {core.repo.s}.outbox WHERE published_at IS NULL")
        if not pending:
            return
        await asyncio.sleep(0.05)
