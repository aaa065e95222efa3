"""The metrics every service exposes on `/metrics`, besides its own (Prometheus naming:
counters end in `_total`, durations are histograms in `_seconds`).

- `ioc_messages_consumed_total{consumer}`: records a durable consumer received;
- `ioc_handler_duration_seconds{consumer}`: time the handler took per batch (histogram);
- `ioc_messages_produced_total{producer}`: messages the outbox relay published;
- `ioc_messages_rejected_total{service,reason}`: inputs refused with a machine-readable
  reason (ingest's `ingest_records_total{outcome="rejected",code}` and routing's
  `routing_refused_inputs_total` have more labels);
- `ioc_outbox_backlog_messages`, `ioc_outbox_oldest_pending_seconds`: what the outbox
  holds not yet published, sampled from PostgreSQL (`Sampler`); `ioc_outbox_topic_offset
  {topic}`: where the relay has written up to in each topic (sum over partitions, from
  `outbox_positions`): its rate is the messages out, also when the relay runs in a child
  process whose counters no /metrics shows;
- `ioc_timers_due{service}`: timers whose time has come and that have not fired yet
  (routing's deadlines and reminders, reporting's report timers), sampled the same way;
- `ioc_consumer_lag{group,topic,partition}` (`observability.LagMonitor`).

One set per metrics registry (Prometheus refuses a name twice in one registry): every
part of a service gets the same objects from `bus_metrics(registry)`. Everything here is
counted per batch, never per record.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ioc_shared.platform.logging import get_logger

log = get_logger(__name__)

# Batch handling: from a millisecond (one record) to tens of seconds (a stuck dependency).
HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class BusMetrics:
    consumed: Counter
    handler_seconds: Histogram
    produced: Counter
    rejected: Counter
    outbox_backlog: Gauge
    outbox_oldest_s: Gauge
    outbox_offset: Gauge
    timers_due: Gauge

    @contextmanager
    def handling(self, consumer: str, records: int) -> Iterator[None]:
        """Count a batch in and time its handling (also when it raises)."""
        self.consumed.labels(consumer).inc(records)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.handler_seconds.labels(consumer).observe(time.perf_counter() - started)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, BusMetrics] = (
    weakref.WeakKeyDictionary())


_UNEXPOSED = CollectorRegistry()   # for parts built without the service's registry (tests)


def bus_metrics(registry: CollectorRegistry | None) -> BusMetrics:
    """The metrics of `registry` (of a registry nobody scrapes if None)."""
    registry = _UNEXPOSED if registry is None else registry
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = _BY_REGISTRY[registry] = _make(registry)
    return found


def _make(r: CollectorRegistry) -> BusMetrics:
    return BusMetrics(
        consumed=Counter("ioc_messages_consumed", "Records a durable consumer received",
                         ["consumer"], registry=r),
        handler_seconds=Histogram("ioc_handler_duration_seconds",
                                  "Time the handler took for one batch (retries included)",
                                  ["consumer"], buckets=HANDLER_BUCKETS, registry=r),
        produced=Counter("ioc_messages_produced", "Messages the outbox relay published",
                         ["producer"], registry=r),
        rejected=Counter("ioc_messages_rejected", "Inputs refused, by machine-readable reason",
                         ["service", "reason"], registry=r),
        outbox_backlog=Gauge("ioc_outbox_backlog_messages",
                             "Messages in the outbox not yet published", registry=r),
        outbox_oldest_s=Gauge("ioc_outbox_oldest_pending_seconds",
                              "Age of the oldest message not yet published (0: none)",
                              registry=r),
        outbox_offset=Gauge("ioc_outbox_topic_offset",
                            "Next offset the outbox relay writes, summed over the topic's "
                            "partitions (its rate: messages out)", ["topic"], registry=r),
        timers_due=Gauge("ioc_timers_due",
                         "Timers whose time has come and that have not fired yet",
                         ["service"], registry=r),
    )


Probe = Callable[[], Awaitable[None]]


class Sampler:
    """Runs each registered probe every `interval_s` (each sets its gauges); a failing
    probe keeps the gauge's last value and logs one line per outage, never stops."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._probes: dict[str, Probe] = {}
        self._failing: set[str] = set()

    def add(self, name: str, probe: Probe) -> None:
        self._probes[name] = probe

    async def sample_once(self) -> None:
        for name, probe in list(self._probes.items()):
            try:
                await asyncio.wait_for(probe(), max(1.0, self.interval_s))
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # diagnostic: the database may be away
                if name not in self._failing:
                    log.warning("metric sampling failed; keeping the last value", metric=name,
                                error=repr(exc))
                self._failing.add(name)
            else:
                self._failing.discard(name)

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval_s)
