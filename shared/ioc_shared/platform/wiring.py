"""Wiring every service's `bootstrap` repeats around a `ServiceRuntime` (lives beside
`runtime.py`, which it only uses): durable consumers on the broker with their health
checks, running until asked to stop (SIGINT/SIGTERM) or a background task fails, stopping
consumers before the broker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence

from ioc_shared.platform.consumer import DurableConsumer
from ioc_shared.platform.runtime import ServiceRuntime


def register_consumers(rt: ServiceRuntime, consumers: Sequence[DurableConsumer]) -> None:
    """Subscribe each consumer on the runtime's broker and add its readiness to /health."""
    for consumer in consumers:
        consumer.register(rt.broker)
        rt.add_check(consumer.name, consumer.health)


async def stop_consumers_then_broker(rt: ServiceRuntime, consumers: Sequence[DurableConsumer],
                                     *, timeout_s: float = 3.0) -> None:
    """A batch waiting to retry stops now, uncommitted; then the broker stops consuming
    (bounded: the broker may be down)."""
    for consumer in consumers:
        consumer.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(rt.broker.stop(), timeout_s)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets, in the running loop (a process's entry point)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until(stop: asyncio.Event, rt: ServiceRuntime) -> None:
    """Return when `stop` is set or a task spawned on the runtime has failed."""
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(rt.wait_for_shutdown())
    try:
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopped, failed):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
