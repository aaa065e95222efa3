"""Riding out outages: backoff, supervision, readiness from memory, quiet logs, topic layout."""

import asyncio
import json
import logging
import os
import signal

import pytest
from aiokafka.client import AIOKafkaClient
from ioc_shared.contracts import TopicSpec
from ioc_shared.platform import kafka
from ioc_shared.platform import runtime as runtime_module
from ioc_shared.platform.kafka import (
    RepartitionRefused,
    client_options,
    main,
    partitions_to_add,
    producer_options,
)
from ioc_shared.platform.logging import RepeatFilter, configure_logging
from ioc_shared.platform.observability import DependencyWatch, make_http_app
from ioc_shared.platform.runtime import PermanentError, ServiceRuntime, restart_delay
from ioc_shared.platform.settings import ServiceSettings
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient


def test_growing_an_existing_keyed_topic_is_refused_unless_allowed() -> None:
    specs = [TopicSpec("a", 6, 1000), TopicSpec("b", 3, 1000), TopicSpec("new", 9, 1000)]
    existing = {"a": 4, "b": 5}
    with pytest.raises(RepartitionRefused, match="a has 4, declared 6"):
        partitions_to_add(specs, existing, allow_repartition=False)
    assert partitions_to_add(specs, existing, allow_repartition=True) == {"a": (4, 6)}
    # More partitions than declared, or none missing: nothing to do, nothing refused.
    assert partitions_to_add(specs[1:], existing, allow_repartition=False) == {}


def test_grow_partitions_command_demands_the_confirmation(capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["grow-partitions", "some.topic", "12"])
    assert exit_info.value.code == 2
    assert "--i-understand-keys-move" in capsys.readouterr().err


def test_clients_back_off_and_failed_metadata_updates_are_paced() -> None:
    assert client_options()["retry_backoff_ms"] >= 500
    assert producer_options()["retry_backoff_ms"] == client_options()["retry_backoff_ms"]
    assert getattr(AIOKafkaClient._metadata_update, "_ioc_throttled", False)


async def test_failed_metadata_updates_wait_longer_each_time(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    pauses: list[float] = []

    async def record(delay: float) -> None:
        pauses.append(delay)

    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1", retry_backoff_ms=100)
    monkeypatch.setattr(kafka, "_metadata_pause", record)
    for _ in range(8):
        assert await client._metadata_update(client.cluster, []) is False  # no broker known
    assert 0.08 <= pauses[0] <= 0.12
    assert pauses[-1] >= 4.0                       # grew (with jitter) to the cap
    assert max(pauses) <= 5.0 * 1.2


def test_restart_delay_grows_with_jitter_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert 0.5 <= delays[0] <= 1.0
    assert delays[4] > delays[1]
    assert max(delays) <= 30.0


def test_repeat_filter_lets_one_line_through_per_interval() -> None:
    now = [0.0]
    f = RepeatFilter(interval_s=60.0, clock=lambda: now[0])

    def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, ("x",), None)

    assert f.filter(record("aiokafka.client", "Unable connect to node with id %s"))
    passed = sum(f.filter(record("aiokafka.client", "Unable connect to node with id %s"))
                 for _ in range(2000))
    assert passed == 0
    assert f.filter(record("aiokafka.client", "Unable to update metadata from %s"))  # other text
    assert f.filter(record("ingest", "Unable connect to node with id %s"))  # not a library line
    assert f.filter(record("aiokafka.client", "Unable connect to node with id %s", logging.INFO))
    now[0] = 61.0
    later = record("aiokafka.client", "Unable connect to node with id %s")
    assert f.filter(later)
    assert "suppressed=2000" in later.getMessage()


def test_dependency_watch_logs_down_once_a_minute_and_back(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    configure_logging("unit")
    now = [0.0]
    watch = DependencyWatch("kafka", clock=lambda: now[0])
    assert watch.check() == (False, "kafka: not checked yet")
    watch.record(None)
    assert watch.check() == (True, None)
    for _ in range(25 * 10):          # 25 s of failed probes, ten a second
        now[0] += 0.1
        watch.record(ConnectionRefusedError("refused"))
    assert watch.check()[0] is False
    assert "refused" in (watch.check()[1] or "")
    now[0] += 60
    watch.record(ConnectionRefusedError("refused"))
    watch.record(None)
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events == ["dependency down", "dependency still down", "dependency back"]


def _runtime() -> ServiceRuntime:
    return ServiceRuntime("unit", ServiceSettings(), configure_logs=False)


async def test_supervised_work_is_restarted_until_it_succeeds(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(runtime_module, "restart_delay", lambda failures: 0.0)
    rt = _runtime()
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionResetError("database gone")
        return "done"

    assert await rt.supervise("flaky", flaky) == "done"
    assert len(attempts) == 4
    assert not rt._stop.is_set()


async def test_a_permanent_error_stops_the_service_at_once() -> None:
    rt = _runtime()

    async def misconfigured() -> None:
        raise PermanentError("credentials refused")

    task = rt.supervise("bad", misconfigured)
    with pytest.raises(PermanentError):
        await task
    await asyncio.sleep(0)
    assert rt._stop.is_set()
    assert isinstance(rt.failure, PermanentError)


def test_readiness_answers_from_the_checks_with_reasons() -> None:
    rt = _runtime()
    rt.add_check("consumer", lambda: (False, "consumer: waiting for kafka"))
    rt.add_check("fine", lambda: (True, None))

    def broken() -> tuple[bool, str | None]:
        raise RuntimeError("bug")

    rt.add_check("broken", broken)
    ready, reasons = rt.readiness()
    assert not ready
    assert reasons["fine"] is None
    assert reasons["consumer"] == "consumer: waiting for kafka"
    assert "bug" in (reasons["broken"] or "")
    client = TestClient(make_http_app(CollectorRegistry(), rt.readiness))
    answer = client.get("/health/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"consumer": False, "fine": True, "broken": False}
    assert "consumer: waiting for kafka" in answer.json()["reasons"]
    assert client.get("/health").json() == answer.json()
    assert client.get("/health/live").status_code == 200


def test_exceptions_are_logged_as_json_without_local_variables(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("unit")
    citizen_phone = "0912 345 678"  # a local variable of the failing frame
    try:
        raise ValueError("bad " + citizen_phone[:0])
    except ValueError:
        logging.getLogger("unit").exception("failed")
    [line] = capsys.readouterr().out.splitlines()
    entry = json.loads(line)
    assert entry["exception"][0]["exc_type"] == "ValueError"
    assert citizen_phone not in line


async def test_sigterm_reaches_the_service_handler_and_arms_the_watchdog() -> None:
    loop = asyncio.get_running_loop()
    service_stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, service_stop.set)   # what a main.py installs
    rt = ServiceRuntime("unit", ServiceSettings(shutdown_grace_s=3600), configure_logs=False)
    try:
        rt._chain_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(service_stop.wait(), 5)
        assert rt._stop.is_set()
        assert rt._watchdog is not None and rt._watchdog.is_alive()
        rt._restore_signal_handlers()
        service_stop.clear()
        os.kill(os.getpid(), signal.SIGTERM)     # the service's own handler again, alone
        await asyncio.wait_for(service_stop.wait(), 5)
    finally:
        if rt._watchdog is not None:
            rt._watchdog.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


async def test_a_lost_producer_sequence_gets_a_new_producer_id() -> None:
    from aiokafka.producer.sender import SendProduceReqHandler
    from aiokafka.producer.transaction_manager import TransactionManager
    from aiokafka.structs import TopicPartition
    from ioc_shared.platform.kafka import reset_producer_id

    assert getattr(SendProduceReqHandler.handle_response, "_ioc_renews", False)
    txn = TransactionManager(None, 60_000)
    txn.set_pid_and_epoch(41, 0)
    tp = TopicPartition("t", 0)
    txn.increment_sequence_number(tp, 500)
    reset_producer_id(txn)
    assert not txn.has_pid()               # the sender asks for a new id before sending
    assert txn.sequence_number(tp) == 0
    waiter = asyncio.ensure_future(txn.wait_for_pid())
    await asyncio.sleep(0)
    assert not waiter.done()
    txn.set_pid_and_epoch(42, 0)
    await asyncio.wait_for(waiter, 1)
    assert txn.producer_id == 42
