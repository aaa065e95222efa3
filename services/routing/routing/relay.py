"""The outbox relay of routing, inline or in a child process (`python -m routing relay`);
the machinery is the kit's (`ioc_shared.platform.relaying`), the choice is `relay_mode`."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from ioc_shared.platform.db import create_pool
from ioc_shared.platform.relaying import RelayProcess, stop_when_orphaned
from ioc_shared.platform.relaying import relay_until as kit_relay_until
from ioc_shared.platform.wiring import stop_on_signals

from routing.publishing import RoutingTopics
from routing.settings import RoutingSettings


async def relay_until(settings: RoutingSettings, pool: asyncpg.Pool, stop: asyncio.Event, *,
                      gc_tuning: bool = False) -> None:
    """Publish the outbox of `settings.db_schema` until `stop` is set."""
    topics = RoutingTopics.from_settings(settings)
    when_started = None
    if gc_tuning:
        from routing.bootstrap import tune_gc

        when_started = tune_gc
    await kit_relay_until(pool, settings.db_schema, settings.kafka_bootstrap, stop,
                          client_id=f"routing-outbox-{settings.instance_id}",
                          topics=[topics.results, topics.events, topics.notifications,
                                  topics.reporter],
                          batch_size=settings.relay_batch_size, when_started=when_started)


async def run_relay_process(settings: RoutingSettings) -> None:
    """Entry of `python -m routing relay`: until SIGTERM/SIGINT."""
    stop = stop_on_signals()
    watchdog = asyncio.create_task(stop_when_orphaned(stop))
    pool = await create_pool(settings.database_url, max_size=3)
    try:
        await relay_until(settings, pool, stop, gc_tuning=True)
    finally:
        watchdog.cancel()
        await pool.close()


async def start_relay(settings: RoutingSettings, pool: asyncpg.Pool,
                      spawn: Any) -> tuple[Any, Any]:
    """Start the relay as configured; returns (stop coroutine function, task)."""
    if settings.relay_mode == "process":
        child = RelayProcess("routing", settings)
        return child.stop, spawn(child.run())
    stop = asyncio.Event()

    async def stop_inline() -> None:
        stop.set()

    return stop_inline, spawn(relay_until(settings, pool, stop))
