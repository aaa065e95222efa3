"""Health and metrics endpoints, dependency state, and consumer-lag measurement.

Every service serves on its HTTP port:
- `/health/live`: 200 while the process serves at all;
- `/health/ready`: 200 when every readiness check holds, else 503 with the reasons
  (JSON); `/health` is the same as `/health/ready` (older callers);
- `/metrics`: Prometheus text, including `ioc_consumer_lag` per group, topic and
  partition, and `ioc_consumer_lag_stale` per group (1: the last measurement
  failed, the gauges hold the last value measured).

Health answers at once from state kept in memory: checks are plain functions
returning `(ok, reason)`, never a broker or database call. `DependencyWatch`
keeps a dependency's up/down state from a background probe and logs one line
when it goes down, one a minute while it stays down, one when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ioc_shared.platform.kafka import make_admin, make_consumer
from ioc_shared.platform.logging import get_logger

log = get_logger(__name__)

# A readiness check: answers from memory, at once: (ok, reason when not ok).
ReadinessCheck = Callable[[], tuple[bool, str | None]]


class DependencyWatch:
    """Up/down state of one dependency, fed by `probe` results, with its log lines."""

    def __init__(self, name: str, *, repeat_s: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.up: bool | None = None     # None: not probed yet
        self.reason: str | None = "not checked yet"
        self.down_since: float | None = None
        self._repeat_s = repeat_s
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._last_line = 0.0

    def check(self) -> tuple[bool, str | None]:
        return bool(self.up), None if self.up else f"{self.name}: {self.reason}"

    def record(self, error: BaseException | None) -> None:
        now = self._clock()
        if error is None:
            if self.up is False and self.down_since is not None:
                log.warning("dependency back", dependency=self.name,
                            down_s=round(now - self.down_since, 1))
            self.up, self.reason, self.down_since = True, None, None
            return
        reason = repr(error) if not isinstance(error, TimeoutError) else "no answer in time"
        if self.up is not False:
            log.error("dependency down", dependency=self.name, error=reason)
            self.down_since = now
            self._last_line = now
        elif now - self._last_line >= self._repeat_s:
            log.error("dependency still down", dependency=self.name, error=reason,
                      down_s=round(now - (self.down_since or now), 1))
            self._last_line = now
        self.up, self.reason = False, reason

    async def run(self, probe: Callable[[], Awaitable[object]], *, interval_s: float = 1.0,
                  timeout_s: float = 2.0) -> None:
        """Probe every `interval_s` (each at most `timeout_s`) until cancelled."""
        while True:
            try:
                await asyncio.wait_for(probe(), timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.record(exc)
            else:
                self.record(None)
            await asyncio.sleep(interval_s)


# One set of lag gauges per metrics registry, shared by every monitored group
# (Prometheus refuses a second metric of the same name in one registry).
_LAG_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Gauge, Gauge]] = (
    weakref.WeakKeyDictionary())


def _lag_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Gauge]:
    if registry not in _LAG_GAUGES:
        _LAG_GAUGES[registry] = (
            Gauge("ioc_consumer_lag", "Messages not yet committed by the group",
                  ["group", "topic", "partition"], registry=registry),
            Gauge("ioc_consumer_group_lag", "Sum of lag over partitions (a gauge: no `_total`)",
                  ["group"], registry=registry),
            Gauge("ioc_consumer_lag_stale", "1 when the last lag measurement failed "
                  "(the lag gauges hold the last value measured)", ["group"],
                  registry=registry))
    return _LAG_GAUGES[registry]


class LagMonitor:
    """Measures committed-offset lag of a consumer group into gauges every `interval_s`.

    Its two clients live as long as the monitor; after a failed measurement they are
    closed (bounded) and made anew for the next one, so none leaks while the broker is
    away. The gauges keep the last value and `ioc_consumer_lag_stale` says it is old.
    """

    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str],
                 registry: CollectorRegistry, interval_s: float = 2.0) -> None:
        self._bootstrap = bootstrap
        self._group = group_id
        self._topics = list(topics)
        self._interval = interval_s
        self.gauge, self.total, self.stale = _lag_gauges(registry)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._failing = False

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            await self.close()
            admin = make_admin(self._bootstrap, client_id=f"lag-{self._group}")
            consumer = make_consumer(bootstrap=self._bootstrap, group_id=None)
            self._admin, self._consumer = admin, consumer
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def measure(self) -> int:
        try:
            admin, consumer = await self._clients()
            committed = await admin.list_consumer_group_offsets(self._group)
            described = await admin.describe_topics(self._topics)
            tps = [TopicPartition(t["topic"], p["partition"]) for t in described
                   if not t.get("error_code") for p in t["partitions"]]
            ends = await consumer.end_offsets(tps) if tps else {}
        except BaseException:
            self.stale.labels(self._group).set(1)
            await asyncio.shield(self.close())
            raise
        total = 0
        for tp, end in ends.items():
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag = max(0, end - done)
            total += lag
            self.gauge.labels(self._group, tp.topic, str(tp.partition)).set(lag)
        self.total.labels(self._group).set(total)
        self.stale.labels(self._group).set(0)
        return total

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for stop in ((consumer.stop,) if consumer else ()) + ((admin.close,) if admin else ()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stop(), 5.0)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await asyncio.wait_for(self.measure(), max(5.0, 3 * self._interval))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # lag is diagnostic: never take the service down
                    if not self._failing:   # one line per outage, not one per attempt
                        log.warning("lag measurement failed; keeping the last value",
                                    group=self._group, error=repr(exc))
                    self._failing = True
                else:
                    if self._failing:
                        log.info("lag measurement back", group=self._group)
                    self._failing = False
                await asyncio.sleep(self._interval)
        finally:
            await asyncio.shield(self.close())


def make_http_app(registry: CollectorRegistry,
                  readiness: Callable[[], tuple[bool, dict[str, str | None]]],
                  extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """`readiness()` answers from memory: (ready, {check: reason or None})."""

    async def ready(_: Request) -> JSONResponse:
        ok, checks = readiness()
        reasons = [r for r in checks.values() if r]
        return JSONResponse({"status": "ok" if ok else "unavailable",
                             "checks": {name: r is None for name, r in checks.items()},
                             "reasons": reasons},
                            status_code=200 if ok else 503)

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health", ready), Route("/health/ready", ready),
                             Route("/health/live", live), Route("/metrics", metrics),
                             *extra_routes])


class HttpServer:
    """uvicorn in the service's own event loop; port 0 picks a free port."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        sock = self._server.servers[0].sockets[0]
        port = int(sock.getsockname()[1])
        log.info("http listening", port=port)
        return port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
