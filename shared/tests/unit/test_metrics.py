"""The kit's metrics: conventional names and units, counted per batch, sampled gauges that
survive an outage; readiness false while Kafka or PostgreSQL does not answer, liveness not."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiokafka import TopicPartition
from ioc_shared.platform.consumer import Delivery, DurableConsumer
from ioc_shared.platform.metrics import Sampler, bus_metrics
from ioc_shared.platform.observability import _lag_gauges, make_http_app
from ioc_shared.platform.outbox import OutboxRelay
from ioc_shared.platform.retention import RetentionJob
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.testing import metric_naming_problems
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _delivery(offset: int) -> Delivery:
    return Delivery("t", 0, offset, None, b"{}", (), 0)


async def _kit_registry() -> CollectorRegistry:
    """A registry with every metric of the kit, each with a sample."""
    registry = CollectorRegistry()
    seen: list[int] = []

    async def handler(batch: Any) -> None:
        seen.extend(d.offset for d in batch)

    consumer = DurableConsumer("c", ["t"], "g", handler, pool=None,  # type: ignore[arg-type]
                               schema="s", metrics=registry)
    await consumer.consume([_delivery(i) for i in range(3)])
    await consumer.consume([_delivery(3)])
    assert seen == [0, 1, 2, 3]
    OutboxRelay(None, "s", None, "x", producer_name="svc", metrics=registry)  # type: ignore[arg-type]
    RetentionJob(None, "s", [], registry=registry)  # type: ignore[arg-type]
    lag, group_lag, stale = _lag_gauges(registry)
    lag.labels("g", "t", "0").set(4)
    group_lag.labels("g").set(4)
    stale.labels("g").set(0)
    bus = bus_metrics(registry)
    bus.produced.labels("svc").inc(2)
    bus.rejected.labels("svc", "malformed").inc()
    bus.outbox_backlog.set(5)
    bus.outbox_oldest_s.set(1.5)
    bus.outbox_offset.labels("t").set(9)
    bus.timers_due.labels("svc").set(1)
    return registry


async def test_a_batch_is_counted_in_and_its_handling_timed() -> None:
    registry = await _kit_registry()
    assert registry.get_sample_value("ioc_messages_consumed_total", {"consumer": "c"}) == 4
    assert registry.get_sample_value("ioc_handler_duration_seconds_count", {"consumer": "c"}) == 2
    assert registry.get_sample_value("ioc_handler_duration_seconds_bucket",
                                     {"consumer": "c", "le": "+Inf"}) == 2


async def test_every_kit_metric_has_a_conventional_name() -> None:
    """Counters end in `_total`, nothing else does; durations are histograms in seconds."""
    registry = await _kit_registry()
    families = {f.name: f for f in registry.collect()}
    assert {"ioc_messages_consumed", "ioc_handler_duration_seconds", "ioc_messages_produced",
            "ioc_messages_rejected", "ioc_outbox_backlog_messages", "ioc_outbox_topic_offset",
            "ioc_outbox_oldest_pending_seconds", "ioc_timers_due", "ioc_consumer_lag",
            "ioc_consumer_group_lag", "ioc_consumer_parked", "ioc_retention_deleted"} <= set(families)
    for family in families.values():
        names = {s.name for s in family.samples}
        if family.type == "counter":
            assert all(n.endswith(("_total", "_created")) for n in names), family.name
        else:
            assert not any(n.endswith("_total") for n in names), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    lag = registry.get_sample_value("ioc_consumer_lag", {"group": "g", "topic": "t",
                                                         "partition": "0"})
    assert lag == 4   # per partition


async def test_the_metrics_endpoint_serves_them() -> None:
    registry = await _kit_registry()
    client = TestClient(make_http_app(registry, lambda: (True, {})))
    text = client.get("/metrics").text
    assert metric_naming_problems(text) == []
    assert 'ioc_messages_consumed_total{consumer="c"} 4.0' in text
    assert 'ioc_messages_rejected_total{reason="malformed",service="svc"} 1.0' in text
    assert "ioc_outbox_backlog_messages 5.0" in text
    assert 'ioc_timers_due{service="svc"} 1.0' in text


def test_metrics_of_one_registry_are_one_set() -> None:
    registry = CollectorRegistry()
    assert bus_metrics(registry) is bus_metrics(registry)
    assert bus_metrics(None) is bus_metrics(None)
    assert bus_metrics(CollectorRegistry()) is not bus_metrics(registry)


async def test_a_failing_probe_keeps_the_last_value_and_the_others_run() -> None:
    registry = CollectorRegistry()
    gauge = bus_metrics(registry).outbox_backlog
    sampler = Sampler(interval_s=0.01)
    answers: list[Any] = [3, ConnectionRefusedError("database away"), 7]

    async def outbox() -> None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        gauge.set(answer)

    timers: list[int] = []

    async def count_timers() -> None:
        timers.append(1)

    sampler.add("outbox", outbox)
    sampler.add("timers", count_timers)
    await sampler.sample_once()
    assert registry.get_sample_value("ioc_outbox_backlog_messages") == 3
    await sampler.sample_once()    # the database is away: the last value stays
    assert registry.get_sample_value("ioc_outbox_backlog_messages") == 3 and len(timers) == 2
    await sampler.sample_once()
    assert registry.get_sample_value("ioc_outbox_backlog_messages") == 7


@pytest.mark.parametrize("dependency", ["kafka", "postgres"])
async def test_readiness_is_false_while_a_dependency_does_not_answer_liveness_stays(
        dependency: str) -> None:
    """The runtime's own probes, against a port nothing listens on: the dependency's check
    fails with its reason, /health/ready answers 503, /health/live 200."""
    port = _closed_port()
    settings = ServiceSettings(kafka_bootstrap=f"127.0.0.1:{port}",
                               database_url=f"postgresql://ioc@127.0.0.1:{port}/ioc")
    rt = ServiceRuntime("unit", settings, configure_logs=False)
    rt.add_check("kafka", rt.kafka.check)
    rt.add_check("postgres", rt.postgres.check)
    watch, probe = ((rt.kafka, rt._probe_kafka()) if dependency == "kafka"
                    else (rt.postgres, rt._probe_postgres()))
    other = rt.postgres if dependency == "kafka" else rt.kafka
    other.record(None)             # the other one answers
    try:
        await probe()
    except Exception as exc:       # refused: what the probe loop records
        watch.record(exc)
    else:
        pytest.fail(f"{dependency} answered on a closed port")
    ready, checks = rt.readiness()
    assert not ready
    assert checks[dependency] is not None and checks[dependency].startswith(f"{dependency}: ")
    assert checks["postgres" if dependency == "kafka" else "kafka"] is None
    client = TestClient(make_http_app(CollectorRegistry(), rt.readiness))
    answer = client.get("/health/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"][dependency] is False
    assert client.get("/health/live").status_code == 200
    watch.record(None)              # it answers again: ready
    assert rt.readiness()[0] and client.get("/health/ready").status_code == 200


def test_lag_gauges_are_per_partition() -> None:
    registry = CollectorRegistry()
    lag, _, _ = _lag_gauges(registry)
    for partition in (0, 1):
        lag.labels("g", "t", str(partition)).set(partition + 1)
    assert [registry.get_sample_value("ioc_consumer_lag", {"group": "g", "topic": "t",
                                                           "partition": str(p)})
            for p in (0, 1)] == [1, 2]
    assert TopicPartition("t", 0)  # the key LagMonitor measures by
