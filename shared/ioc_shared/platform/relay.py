"""Running a service's outbox relay: inline as a task, or in a child process of its own.

At thousands of events per second the relay (read outbox rows, send them to Kafka,
mark them) costs about as much CPU as the service's own work; Python runs one thread
at a time, so a service can run it as a child process on another core:

- `relay_until(stop, ...)`: the relay with its own producer until `stop` is set
  (inline, or the body of the child).
- `run_child(name, log_level, main)`: the entry of a child process: JSON logs like
  the service's, SIGTERM/SIGINT stop it, and it stops when its parent is gone.
- `ChildProcess`: the parent's side: keeps one child running (restarted with
  backoff when it dies), the child gets SIGTERM from the kernel if the parent dies
  (`PR_SET_PDEATHSIG`, Linux), and `stop()` ends and reaps it within a grace period.

Either way `OutboxRelay` keeps one active relay per schema (an advisory lock) and
publishes at least once; see `ioc_shared.platform.outbox` for what holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg
from prometheus_client import CollectorRegistry

from ioc_shared.platform.db import create_pool
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.logging import configure_logging, get_logger
from ioc_shared.platform.outbox import OutboxRelay, ProducerBroken
from ioc_shared.platform.runtime import restart_delay
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.platform.telemetry import setup_tracing

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1
# A child that ran this long before dying restarts its backoff from the beginning.
_HEALTHY_RUN_S = 60.0


async def relay_until(stop: asyncio.Event, *, pool: asyncpg.Pool, schema: str, bootstrap: str,
                      client_id: str, topics: Sequence[str] = (), batch_size: int = 2000,
                      grace_s: float = 10.0, producer_name: str | None = None,
                      metrics: CollectorRegistry | None = None) -> None:
    """Publish the outbox of `schema` until `stop` is set (`metrics`: the registry of the
    service's `/metrics`, for `ioc_messages_produced_total`; a relay in a child process
    has none: its progress shows as the parent's `ioc_outbox_backlog_messages`).

    The relay itself retries broker and database failures; if it still raises (a
    bug), this raises too, for the caller's supervisor to restart it."""
    while not stop.is_set():
        try:
            await _relay_with_one_producer(stop, pool=pool, schema=schema, bootstrap=bootstrap,
                                           client_id=client_id, topics=topics,
                                           batch_size=batch_size, grace_s=grace_s,
                                           producer_name=producer_name, metrics=metrics)
        except ProducerBroken:
            continue   # logged by the relay; a new producer, a new relay
        return


async def _relay_with_one_producer(stop: asyncio.Event, *, pool: asyncpg.Pool, schema: str,
                                   bootstrap: str, client_id: str, topics: Sequence[str],
                                   batch_size: int, grace_s: float,
                                   producer_name: str | None,
                                   metrics: CollectorRegistry | None) -> None:
    producer = make_producer(bootstrap, client_id=client_id)
    failures = 0
    while not stop.is_set():
        try:
            await producer.start()   # retried: the broker may be away at start
            break
        except Exception as exc:
            failures += 1
            if failures == 1:
                log.warning("outbox relay producer cannot start; retrying", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), restart_delay(failures))
    if stop.is_set():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), grace_s / 4)
        return
    relay = OutboxRelay(pool, schema, producer, bootstrap, batch_size=batch_size,
                        idle_poll_s=0.5, topics=topics, producer_name=producer_name,
                        metrics=metrics)
    task = asyncio.create_task(relay.run())
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()  # the relay failed: surface the error
    finally:
        relay.stop()
        try:
            await asyncio.wait_for(task, grace_s / 2)
        except Exception:   # already surfaced above, or a shutdown timeout
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), grace_s / 4)
        await relay.close()


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux only;
    elsewhere the orphan watch of `run_child` stops it within a second)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


async def run_child(name: str, log_level: str,
                    main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """The body of a child process: `main(stop)` until SIGTERM/SIGINT or the parent dies."""
    configure_logging(name, log_level)
    setup_tracing(name)   # a relay's publish spans (IOC_TRACES_FILE, OTLP endpoint)
    set_parent_death_signal()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    parent = int(os.environ.get("IOC_PARENT_PID") or os.getppid())
    watch = asyncio.create_task(_stop_when_orphaned(stop, parent))
    try:
        await main(stop)
    except Exception:
        # One JSON line, and an exit code for the parent (no traceback box on stderr).
        log.exception("child process failed", child=name)
        raise SystemExit(1) from None
    finally:
        watch.cancel()


async def create_pool_until(stop: asyncio.Event, dsn: str, *, max_size: int) -> asyncpg.Pool | None:
    """A pool, retried with backoff while the database is away; None if `stop` came first."""
    failures = 0
    while not stop.is_set():
        try:
            return await create_pool(dsn, max_size=max_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            failures += 1
            if failures == 1:
                log.warning("database unreachable; retrying", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), restart_delay(failures))
    return None


async def _stop_when_orphaned(stop: asyncio.Event, parent: int) -> None:
    """Backup of the death signal: a parent that is gone (or that is not ours any more)."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("parent process gone; stopping", parent=parent)
            stop.set()
        await asyncio.sleep(1.0)


class ChildProcess:
    """Keeps one child process (`argv`, `env`) running until `stop()`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], *,
                 grace_s: float = 10.0) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = {**env, "IOC_PARENT_PID": str(os.getpid())}
        self._grace_s = grace_s
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.restarts = 0
        self.started = asyncio.Event()   # set once the (first) child runs

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            started = loop.time()
            # The death signal is set in the child before exec: it holds from its first
            # instruction, and survives exec (the child is not set-uid).
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv, env=self._env, preexec_fn=set_parent_death_signal)
            self.started.set()
            code = await self._proc.wait()   # reaped here
            if self._stopping:
                return
            failures = 1 if loop.time() - started >= _HEALTHY_RUN_S else failures + 1
            delay = restart_delay(failures)
            self.restarts += 1
            log.error("child process exited; restarting", child=self.name, code=code,
                      retry_in_s=round(delay, 1))
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after the grace period; the child is reaped either way."""
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self._grace_s)
        except TimeoutError:
            log.warning("child process did not stop in time; killing it", child=self.name)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def child_env(settings: ServiceSettings) -> dict[str, str]:
    """The environment that gives a child process the same settings as its service."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"{settings.service_prefix}{name.upper()}"] = str(value)
    return env
