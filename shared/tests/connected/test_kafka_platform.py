"""Topic declaration, lag measurement and the service runtime against the real servers."""

import asyncio
import uuid

import httpx
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from ioc_shared.contracts import TopicSpec
from ioc_shared.platform.kafka import (
    RepartitionRefused,
    declare_topics,
    make_admin,
    make_consumer,
    make_producer,
)
from ioc_shared.platform.observability import LagMonitor
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.testing import (
    database_url,
    delete_topics_under,
    free_port,
    kafka_bootstrap,
    unique,
)
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.connected


async def describe(name: str) -> tuple[int, dict[str, str]]:
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:
        [topic] = await admin.describe_topics([name])
        [configs] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)])
        entries = {e[0]: e[1] for e in configs.resources[0][4]}
        return len(topic["partitions"]), entries
    finally:
        await admin.close()


async def test_declare_creates_with_partitions_and_retention_and_grows_only_when_allowed() -> None:
    name = unique("t.declare").replace("_", "-")
    spec = TopicSpec(name, 4, 86_400_000, compacted=True)
    assert await declare_topics(kafka_bootstrap(), [spec]) == [name]
    partitions, config = await describe(name)
    assert partitions == 4
    assert config["retention.ms"] == "86400000"
    assert config["cleanup.policy"] == "compact,delete"
    assert await declare_topics(kafka_bootstrap(), [spec]) == []     # idempotent
    grown = TopicSpec(name, 6, 86_400_000, compacted=True)
    # More partitions move keys: refused unless the operator says so.
    with pytest.raises(RepartitionRefused, match="grow-partitions"):
        await declare_topics(kafka_bootstrap(), [grown])
    assert (await describe(name))[0] == 4
    await declare_topics(kafka_bootstrap(), [grown], allow_repartition=True)
    assert (await describe(name))[0] == 6


async def test_undeclared_topics_are_not_auto_created() -> None:
    producer = make_producer(kafka_bootstrap(), client_id="test", request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do, never a silent create
            await asyncio.wait_for(producer.send_and_wait(unique("t.nowhere"), b"x"), 8)
    finally:
        await producer.stop()


async def test_lag_monitor_measures_uncommitted_messages() -> None:
    topic = unique("t.lag").replace("_", "-")
    group = unique("g-lag")
    await declare_topics(kafka_bootstrap(), [TopicSpec(topic, 2, 3_600_000)])
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    await producer.start()
    for i in range(10):
        await producer.send_and_wait(topic, b"m", key=str(i).encode())
    await producer.stop()
    registry = CollectorRegistry()
    monitor = LagMonitor(kafka_bootstrap(), group, [topic], registry)
    assert await monitor.measure() == 10
    consumer = make_consumer(topic, bootstrap=kafka_bootstrap(), group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    seen = 0
    while seen < 4:
        for records in (await consumer.getmany(timeout_ms=500, max_records=4 - seen)).values():
            seen += len(records)
    await consumer.commit()
    await consumer.stop()
    assert await monitor.measure() == 6
    assert registry.get_sample_value("ioc_consumer_group_lag", {"group": group}) == 6
    # A second group in the same service shares the gauges, labelled by group.
    other = LagMonitor(kafka_bootstrap(), group + "-other", [topic], registry)
    assert await other.measure() == 10
    assert registry.get_sample_value("ioc_consumer_group_lag", {"group": group}) == 6


async def test_lag_monitor_keeps_the_last_value_and_says_it_is_stale() -> None:
    topic = unique("t.lag-stale").replace("_", "-")
    group = unique("g-lag-stale")
    await declare_topics(kafka_bootstrap(), [TopicSpec(topic, 1, 3_600_000)])
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    await producer.start()
    for _ in range(3):
        await producer.send_and_wait(topic, b"m")
    await producer.stop()
    registry = CollectorRegistry()
    monitor = LagMonitor(kafka_bootstrap(), group, [topic], registry)
    try:
        assert await monitor.measure() == 3
        assert registry.get_sample_value("ioc_consumer_lag_stale", {"group": group}) == 0
        monitor._bootstrap = f"127.0.0.1:{free_port()}"   # the broker is away
        await monitor.close()                              # its clients reconnect there
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017 - unreachable, whatever the error
                await monitor.measure()
            assert monitor._admin is None and monitor._consumer is None  # nothing left open
        assert registry.get_sample_value("ioc_consumer_lag_stale", {"group": group}) == 1
        assert registry.get_sample_value("ioc_consumer_group_lag", {"group": group}) == 3
    finally:
        await monitor.close()


async def test_runtime_serves_health_and_metrics() -> None:
    settings = ServiceSettings(kafka_bootstrap=kafka_bootstrap(), database_url=database_url(),
                               topic_namespace=unique("t"))
    async with ServiceRuntime("probe", settings, schema=unique("t_runtime"),
                              configure_logs=False) as rt:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.http_port}") as http:
            starting = await http.get("/health/ready")
            await rt.start_broker()
            for _ in range(100):   # the dependency probes answer within a second or two
                if rt.is_ready():
                    break
                await asyncio.sleep(0.1)
            health = await http.get("/health")
            ready = await http.get("/health/ready")
            live = await http.get("/health/live")
            metrics = await http.get("/metrics")
        assert starting.status_code == 503
        assert "starting" in starting.json()["reasons"]
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "reasons": [],
                                 "checks": {"started": True, "kafka": True, "postgres": True}}
        assert ready.json() == health.json()
        assert live.status_code == 200
        assert metrics.status_code == 200
        assert rt.pool is not None
        await rt.pool.execute(f"DROP SCHEMA {rt.schema} CASCADE")


async def test_clean_up_deletes_the_topics_of_this_run_only() -> None:
    namespace = unique("t-clean")
    ours = f"{namespace.replace('_', '-')}.data"
    theirs = f"other-run-{uuid.uuid4().hex[:12]}.data"   # not a name `unique()` gave out
    await declare_topics(kafka_bootstrap(), [TopicSpec(ours, 1, 3_600_000),
                                             TopicSpec(theirs, 1, 3_600_000)])
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:
        assert await delete_topics_under([namespace]) == 1
        remaining: set[str] = set()
        for _ in range(50):   # deletion is asynchronous on the broker
            remaining = set(await admin.list_topics())
            if ours not in remaining:
                break
            await asyncio.sleep(0.2)
        assert ours not in remaining
        assert theirs in remaining
    finally:
        await admin.delete_topics([theirs])
        await admin.close()
