"""The outbox relay of routing, inline or in a child process.

At thousands of events per second the relay (read outbox rows, send them to
Kafka, mark them) costs as much CPU as deciding the incidents. Python runs one
thread at a time, so by default `serve` runs the relay as a child process
(`python -m routing relay`) on another core. Either way the shared
`OutboxRelay` guarantees one active relay per schema (advisory lock) and
exactly-once publication; the child is restarted if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import asyncpg
from ioc_shared.platform.db import create_pool
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import OutboxRelay

from routing.publishing import RoutingTopics
from routing.settings import RoutingSettings

log = get_logger(__name__)

_RESTART_PAUSE_S = 1.0


async def relay_until(settings: RoutingSettings, pool: asyncpg.Pool, stop: asyncio.Event, *,
                      gc_tuning: bool = False) -> None:
    """Publish the outbox of `settings.db_schema` until `stop` is set."""
    producer = make_producer(settings.kafka_bootstrap,
                             client_id=f"routing-outbox-{settings.instance_id}")
    await producer.start()
    topics = RoutingTopics.from_settings(settings)
    relay = OutboxRelay(pool, settings.db_schema, producer, settings.kafka_bootstrap,
                        batch_size=settings.relay_batch_size, idle_poll_s=0.5,
                        topics=[topics.results, topics.events, topics.notifications,
                                topics.reporter])
    task = asyncio.create_task(relay.run())
    if gc_tuning:
        from routing.bootstrap import tune_gc

        tune_gc()
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()  # the relay failed: surface the error
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await producer.stop()
        await relay.close()


async def run_relay_process(settings: RoutingSettings) -> None:
    """Entry of `python -m routing relay`: until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_stop_when_orphaned(stop))
    pool = await create_pool(settings.database_url, max_size=3)
    try:
        await relay_until(settings, pool, stop, gc_tuning=True)
    finally:
        watchdog.cancel()
        await pool.close()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """A relay whose service died (SIGKILL) must not outlive it."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("outbox relay: parent process gone; stopping")
            stop.set()
        await asyncio.sleep(1.0)


def _child_env(settings: RoutingSettings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"{settings.service_prefix}{name.upper()}"] = str(value)
    return env


class RelayProcess:
    """Keeps one `python -m routing relay` child running until stopped."""

    def __init__(self, settings: RoutingSettings) -> None:
        self._settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def run(self) -> None:
        while not self._stopping:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "routing", "relay", env=_child_env(self._settings))
            code = await self._proc.wait()
            if not self._stopping:
                log.error("outbox relay process exited; restarting", code=code)
                await asyncio.sleep(_RESTART_PAUSE_S)

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def start_relay(settings: RoutingSettings, pool: asyncpg.Pool,
                      spawn: Any) -> tuple[Any, Any]:
    """Start the relay as configured; returns (stop coroutine function, task)."""
    if settings.relay_mode == "process":
        child = RelayProcess(settings)
        return child.stop, spawn(child.run())
    stop = asyncio.Event()

    async def stop_inline() -> None:
        stop.set()

    return stop_inline, spawn(relay_until(settings, pool, stop))
