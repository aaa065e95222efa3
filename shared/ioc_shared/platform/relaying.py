"""Running a service's outbox relay: as a task until stopped, or as a supervised child
process (`python -m <service> relay`) on another core.

At thousands of events per second the relay (read outbox rows, send them to Kafka, mark
them) costs as much CPU as deciding what to send; Python runs one thread at a time, so a
busy service runs it in a child. Either way `OutboxRelay` guarantees one active relay per
schema (advisory lock) and exactly-once publication; the child is restarted if it dies.
(Beside `outbox.py`, which another change owns now.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

import asyncpg

from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import OutboxRelay
from ioc_shared.platform.settings import ServiceSettings

log = get_logger(__name__)

_RESTART_PAUSE_S = 1.0


async def relay_until(pool: asyncpg.Pool, schema: str, bootstrap: str, stop: asyncio.Event, *,
                      client_id: str, topics: Sequence[str], batch_size: int,
                      when_started: Callable[[], None] | None = None) -> None:
    """Publish the outbox of `schema` until `stop` is set; a failed relay raises.
    `when_started`: called once the relay runs (a child process tunes its GC there)."""
    producer = make_producer(bootstrap, client_id=client_id)
    await producer.start()
    relay = OutboxRelay(pool, schema, producer, bootstrap, batch_size=batch_size,
                        idle_poll_s=0.5, topics=list(topics))
    task = asyncio.create_task(relay.run())
    if when_started is not None:
        when_started()
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


async def stop_when_orphaned(stop: asyncio.Event) -> None:
    """A relay whose service died (SIGKILL) must not outlive it."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("outbox relay: parent process gone; stopping")
            stop.set()
        await asyncio.sleep(1.0)


def child_env(settings: ServiceSettings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"{settings.service_prefix}{name.upper()}"] = str(value)
    return env


class RelayProcess:
    """Keeps one `python -m <module> relay` child running until stopped."""

    def __init__(self, module: str, settings: ServiceSettings) -> None:
        self._module = module
        self._settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def run(self) -> None:
        while not self._stopping:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self._module, "relay", env=child_env(self._settings))
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
