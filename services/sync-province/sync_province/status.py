"""Operations: status events on `ioc.sync-province.status.v1`, metrics, health checks and
the retention-risk alert."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.platform.kafka import make_admin
from ioc_shared.platform.logging import get_logger
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sync_province.domain import retention_at_risk
from sync_province.pipeline import Pipeline

log = get_logger(__name__)

STATUS_TYPE = "sync-province.status"
DRIFT_TYPE = "sync-province.drift"

Publish = Callable[[Envelope], Awaitable[None]]


class StatusReporter:
    def __init__(self, pipelines: Sequence[Pipeline], *, district_bootstrap: str, district: str,
                 metrics: CollectorRegistry, publish: Publish, unreachable_after_s: float,
                 retention_margin_s: float) -> None:
        self.pipelines = list(pipelines)
        self._bootstrap = district_bootstrap
        self._district = district
        self._publish = publish
        self._unreachable_after = unreachable_after_s
        self._margin_ms = int(retention_margin_s * 1000)
        self.retention_ms: dict[str, int] = {}
        self.at_risk: set[tuple[str, str]] = set()
        labels = ["target", "stream"]
        self.g_lag = Gauge("sync_province_lag_records", "Records not yet at the province", labels,
                           registry=metrics)
        self.g_lag_s = Gauge("sync_province_lag_seconds", "Age of the oldest record not yet at the"
                             " province", labels, registry=metrics)
        self.g_risk = Gauge("sync_province_retention_risk", "1 when the oldest unsynced record is"
                            " within the margin of the source topic's retention", labels,
                            registry=metrics)
        self.g_unreachable = Gauge("sync_province_unreachable_seconds", "Seconds the target has"
                                   " been failing", ["target"], registry=metrics)
        # Delivered, skipped, parked and failed are counters, read from the pipelines'
        # progress when /metrics is scraped.
        metrics.register(_ProgressCounters(self.pipelines))

    async def refresh_retention(self) -> None:
        topics = sorted({s.source_topic for p in self.pipelines for s in p.streams})
        admin = make_admin(self._bootstrap, client_id="sync-province-cfg")
        await admin.start()
        try:
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
            for response in described:
                for resource in response.resources:
                    name, entries = resource[3], resource[4]
                    for entry in entries:
                        if entry[0] == "retention.ms" and entry[1] is not None:
                            self.retention_ms[name] = int(entry[1])
        finally:
            await admin.close()

    def snapshot(self) -> list[dict[str, Any]]:
        now_ms = int(time.time() * 1000)
        rows = []
        risk: set[tuple[str, str]] = set()
        for p in self.pipelines:
            health = p.target.health
            lag = p.lag()
            for stream in p.streams:
                entry = lag.get(stream.name, {})
                oldest = entry.get("oldest_unsynced_ms")
                at_risk = retention_at_risk(int(oldest) if oldest is not None else None,
                                            self.retention_ms.get(stream.source_topic),
                                            self._margin_ms, now_ms)
                if at_risk:
                    risk.add((p.target.name, stream.name))
                positions = {f"{tp}:{part}": pr.next_offset
                             for (tp, part), pr in p.progress.partitions.items()
                             if tp == stream.source_topic}
                rows.append({
                    "stream": stream.name, "target": p.target.name, "positions": positions,
                    "last_synced_at": entry.get("last_synced_at"),
                    "lag_records": entry.get("records", 0), "lag_seconds": entry.get("seconds", 0.0),
                    "sent": p.progress.sent.get(stream.name, 0),
                    "skipped": p.progress.skipped.get(stream.name, {}),
                    "parked": p.progress.parked.get(stream.name, 0),
                    "paused": stream.name in p.paused,
                    "failures": dict(health.failures or {}),
                    "unreachable_s": round(health.unreachable_for(), 1),
                    "last_error": health.last_error, "retention_risk": at_risk,
                    "registry_generation": p.registry_generation})
        for t, s in risk - self.at_risk:
            log.error("ALERT oldest unsynced record is near the source topic's retention",
                      target=t, stream=s)
        self.at_risk = risk
        return rows

    async def report(self) -> list[dict[str, Any]]:
        for p in self.pipelines:
            try:
                await p.refresh_ends()
            except Exception as exc:   # diagnostic only
                log.warning("end offsets unavailable", error=str(exc))
        rows = self.snapshot()
        for row in rows:
            labels = (row["target"], row["stream"])
            self.g_lag.labels(*labels).set(row["lag_records"])
            self.g_lag_s.labels(*labels).set(row["lag_seconds"])
            self.g_risk.labels(*labels).set(1 if row["retention_risk"] else 0)
            await self._publish(Envelope(type=STATUS_TYPE, source_unit=self._district,
                                         subject=row["stream"], payload=row))
        for p in self.pipelines:
            self.g_unreachable.labels(p.target.name).set(p.target.health.unreachable_for())
        return rows


class _ProgressCounters(Collector):
    """`sync_province_records_sent_total`, `sync_province_records_skipped_total` (by
    reason: not granted, not the expected producer ...), `sync_province_batches_parked_total`
    and `sync_province_failures_total` (by reason), since the process started."""

    def __init__(self, pipelines: Sequence[Pipeline]) -> None:
        self._pipelines = pipelines

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = ["target", "stream"]
        sent = CounterMetricFamily("sync_province_records_sent", "Records delivered", labels=labels)
        skipped = CounterMetricFamily("sync_province_records_skipped", "Records not mirrored, "
                                      "by reason", labels=[*labels, "reason"])
        parked = CounterMetricFamily("sync_province_batches_parked",
                                     "Batches the province refused", labels=labels)
        failures = CounterMetricFamily("sync_province_failures", "Failed attempts by reason",
                                       labels=["target", "reason"])
        for p in self._pipelines:
            target, progress = p.target.name, p.progress
            for stream in p.streams:
                sent.add_metric([target, stream.name], progress.sent.get(stream.name, 0))
                parked.add_metric([target, stream.name], progress.parked.get(stream.name, 0))
                for reason, n in progress.skipped.get(stream.name, {}).items():
                    skipped.add_metric([target, stream.name, reason], n)
            for reason, n in (p.target.health.failures or {}).items():
                failures.add_metric([target, reason], n)
        yield from (sent, skipped, parked, failures)

