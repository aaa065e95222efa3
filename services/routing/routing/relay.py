"""The outbox relay of routing, inline or in a child process (`python -m routing relay`).

The supervision (child restarted with backoff, dies with its parent, JSON logs) is
the kit's `ioc_shared.platform.relay`; this file names routing's topics and settings.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg
from ioc_shared.platform.db import close_pool
from ioc_shared.platform.kafka import use_district_security
from ioc_shared.platform.relay import (
    ChildProcess,
    child_env,
    create_pool_until,
    relay_until,
    run_child,
)
from prometheus_client import CollectorRegistry

from routing.publishing import RoutingTopics
from routing.settings import RoutingSettings


async def routing_relay_until(settings: RoutingSettings, pool: asyncpg.Pool,
                              stop: asyncio.Event, *, gc_tuning: bool = False,
                              metrics: CollectorRegistry | None = None) -> None:
    """Publish the outbox of `settings.db_schema` until `stop` is set."""
    topics = RoutingTopics.from_settings(settings)
    if gc_tuning:
        from routing.bootstrap import tune_gc

        tune_gc()
    await relay_until(stop, pool=pool, schema=settings.db_schema,
                      bootstrap=settings.kafka_bootstrap,
                      client_id=f"routing-outbox-{settings.instance_id}",
                      topics=[topics.results, topics.events, topics.notifications,
                              topics.reporter],
                      batch_size=settings.relay_batch_size, grace_s=settings.shutdown_grace_s,
                      producer_name="routing", metrics=metrics)


async def run_relay_process(settings: RoutingSettings) -> None:
    """Entry of `python -m routing relay`: until SIGTERM/SIGINT or the parent is gone."""
    use_district_security(settings.kafka_security())   # the service's own Kafka user

    async def main(stop: asyncio.Event) -> None:
        pool = await create_pool_until(stop, settings.database_url, max_size=3)
        if pool is None:
            return
        try:
            await routing_relay_until(settings, pool, stop, gc_tuning=True)
        finally:
            await close_pool(pool, settings.shutdown_grace_s / 4)

    await run_child("routing-relay", settings.log_level, main)


async def start_relay(settings: RoutingSettings, pool: asyncpg.Pool,
                      supervise: Any, metrics: CollectorRegistry | None = None
                      ) -> tuple[Any, Any]:
    """Start the relay as configured under `supervise(name, work)` (the runtime's);
    returns (stop coroutine function, task)."""
    if settings.relay_mode == "process":
        child = ChildProcess("routing-relay", [sys.executable, "-m", "routing", "relay"],
                             child_env(settings), grace_s=settings.shutdown_grace_s / 2)
        return child.stop, supervise("outbox relay process", child.run)
    stop = asyncio.Event()

    async def stop_inline() -> None:
        stop.set()

    return stop_inline, supervise("outbox relay", lambda: routing_relay_until(
        settings, pool, stop, metrics=metrics))
