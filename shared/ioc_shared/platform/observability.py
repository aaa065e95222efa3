"""Health and metrics endpoints, and consumer-lag measurement.

Every service serves `/health` (liveness and dependency checks), and
`/metrics` (Prometheus text, including `ioc_consumer_lag` per group, topic and
partition) on its HTTP port. Extra routes (the ingest HTTP intake) can be
mounted on the same server.
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

from ioc_shared.platform.logging import get_logger

log = get_logger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]

# One pair of lag gauges per metrics registry, shared by every monitored group
# (Prometheus refuses a second metric of the same name in one registry).
_LAG_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Gauge]] = (
    weakref.WeakKeyDictionary())


def _lag_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    if registry not in _LAG_GAUGES:
        _LAG_GAUGES[registry] = (
            Gauge("ioc_consumer_lag", "Messages not yet committed by the group",
                  ["group", "topic", "partition"], registry=registry),
            Gauge("ioc_consumer_lag_total", "Sum of lag over partitions", ["group"],
                  registry=registry))
    return _LAG_GAUGES[registry]


class LagMonitor:
    """Periodically measures committed-offset lag of a consumer group into a gauge."""

    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str],
                 registry: CollectorRegistry, interval_s: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._group = group_id
        self._topics = list(topics)
        self._interval = interval_s
        self.gauge, self.total = _lag_gauges(registry)

    async def measure(self) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self._group)
            described = await admin.describe_topics(self._topics)
            tps = [TopicPartition(t["topic"], p["partition"]) for t in described
                   if not t.get("error_code") for p in t["partitions"]]
            ends = await consumer.end_offsets(tps) if tps else {}
            total = 0
            for tp, end in ends.items():
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                lag = max(0, end - done)
                total += lag
                self.gauge.labels(self._group, tp.topic, str(tp.partition)).set(lag)
            self.total.labels(self._group).set(total)
            return total
        finally:
            await consumer.stop()
            await admin.close()

    async def run(self) -> None:
        while True:
            try:
                await self.measure()
            except Exception as exc:  # lag is diagnostic: never take the service down
                log.warning("lag measurement failed", error=str(exc))
            await asyncio.sleep(self._interval)


def make_http_app(registry: CollectorRegistry, checks: dict[str, HealthCheck],
                  extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    async def health(_: Request) -> JSONResponse:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), 3.0))
            except Exception:
                results[name] = False
        ok = all(results.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": results},
                            status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health", health), Route("/metrics", metrics),
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
