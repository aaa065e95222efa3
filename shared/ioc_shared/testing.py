"""Helpers for the connected and end-to-end test tiers (real Kafka and PostgreSQL).

Tests share one broker and one database server; each test isolates itself
with a unique topic namespace, schema and consumer group from `unique()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ioc_shared.contracts.envelope import Envelope
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.platform.kafka import decode_headers, make_admin, make_consumer
from ioc_shared.platform.security import KafkaSecurity
from ioc_shared.registry import sign


def kafka_bootstrap() -> str:
    return os.environ.get("IOC_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def secure_kafka_env() -> dict[str, str]:
    """`IOC_KAFKA_*` for the local SASL_SSL broker (SCRAM-SHA-512, its own CA), for tests
    that run the kit on a secured cluster as a deployment would; {} when there is none.
    That broker is the provincial cluster's stand-in (`IOC_PROVINCE_KAFKA_*`)."""
    if not os.environ.get("IOC_PROVINCE_KAFKA_BOOTSTRAP"):
        return {}
    return {"IOC_KAFKA_BOOTSTRAP": os.environ["IOC_PROVINCE_KAFKA_BOOTSTRAP"],
            "IOC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "IOC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "IOC_KAFKA_SASL_USER": os.environ["IOC_PROVINCE_KAFKA_SASL_USER"],
            "IOC_KAFKA_SASL_PASSWORD_FILE": os.environ["IOC_PROVINCE_KAFKA_SASL_PASSWORD_FILE"],
            "IOC_KAFKA_CA_FILE": os.environ["IOC_PROVINCE_KAFKA_CA_FILE"]}


def province_security() -> KafkaSecurity:
    """The local provincial broker's credentials (scripts/platform.sh: SASL_SSL, its CA)."""
    return KafkaSecurity(
        sasl_user=os.environ["IOC_PROVINCE_KAFKA_SASL_USER"],
        sasl_password_file=Path(os.environ["IOC_PROVINCE_KAFKA_SASL_PASSWORD_FILE"]),
        ca_file=Path(os.environ["IOC_PROVINCE_KAFKA_CA_FILE"]))


async def delete_province_topics(prefix: str) -> None:
    """Delete the provincial broker's topics named `prefix...` (a test's own)."""
    admin = make_admin(os.environ["IOC_PROVINCE_KAFKA_BOOTSTRAP"], client_id="test-cleanup",
                       security=province_security())
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def eventually(check: Callable[[], Any], timeout: float = 30.0, *, interval: float = 0.1,
                     what: str | None = None) -> Any:
    """Call `check` (plain or async) until it returns something truthy, and return that;
    an AssertionError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check}")


def database_url() -> str:
    return os.environ.get("IOC_DATABASE_URL", "postgresql://ioc@127.0.0.1:15432/ioc")


# Every name `unique()` gave out in this process: the topic namespaces to clean up at the end.
_ISSUED: set[str] = set()


def unique(prefix: str) -> str:
    """A name no other test run uses: `prefix_<12 hex>` (valid as schema and topic part)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _ISSUED.add(name)
    return name


async def delete_topics_of_this_run(bootstrap: str | None = None) -> int:
    """Delete the topics namespaced by names `unique()` gave out in this process.

    Tests and benchmarks create topics under fresh namespaces on the project's broker;
    left behind, thousands of partitions pile up run after run and slow the broker
    down (start-up, metadata, page cache). Topics of other runs are left alone.
    """
    return await delete_topics_under(_ISSUED, bootstrap)


async def delete_topics_under(namespaces: Iterable[str], bootstrap: str | None = None) -> int:
    """Delete every topic named `<namespace>` or `<namespace>.<...>` (either spelling: `_`
    or `-`)."""
    names = set(namespaces)
    if not names:
        return 0
    exact = names | {n.replace("_", "-") for n in names}
    prefixes = tuple(f"{n}." for n in exact)
    admin = make_admin(bootstrap or kafka_bootstrap(), client_id="test-clean-up")
    await admin.start()
    try:
        doomed = sorted(t for t in await admin.list_topics()
                        if t in exact or t.startswith(prefixes))
        for i in range(0, len(doomed), 100):
            await admin.delete_topics(doomed[i:i + 100])
        return len(doomed)
    finally:
        await admin.close()


async def read_topic(topic: str, *, until: Callable[[list[ConsumerRecord[Any, Any]]], bool],
                     timeout: float = 20.0, bootstrap: str | None = None
                     ) -> list[ConsumerRecord[Any, Any]]:
    """Read `topic` from the beginning until `until(records)` holds or `timeout` passes."""
    consumer = make_consumer(topic, bootstrap=bootstrap or kafka_bootstrap(),
                             group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(records) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return decode_headers(record.headers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (Linux /proc)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(FileNotFoundError):
                todo += [int(c) for c in task.read_text().split()]
    return pids


def _vm_hwm_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:   # exited meanwhile
        return 0
    return next((int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("VmHWM")), 0)


class ServiceProcess:
    """A service run for real as `python -m <module> serve`, for e2e tests and benchmarks."""

    def __init__(self, service: str, env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.service = service
        self.module = service.replace("-", "_")
        self.port = free_port()
        prefix = self.module.upper() + "_"
        self._env = {**env, f"{prefix}HTTP_PORT": str(self.port)}
        self.log_path = log_path
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    async def start(self, timeout: float = 60.0, *, healthy: bool = True) -> None:
        """Start and wait until /health says 200 (`healthy=False`: until it answers at all,
        for a service that is meant to be unready soon, and may be before it was ready)."""
        # Popen only forks; waiting happens below without blocking the loop.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", self.module, "serve"], cwd=self._cwd, env=self._env,
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient() as http:
            while loop.time() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self.service} exited:\n{self.log_tail()}")
                try:
                    code = (await http.get(f"http://127.0.0.1:{self.port}/health")).status_code
                    if code == 200 or (not healthy and code == 503):
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        tail = self.log_tail()
        self.kill()   # never left running: the test that started it is failing
        raise RuntimeError(f"{self.service} did not become healthy:\n{tail}")

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) of the service: its process and its child processes
        (e.g. ingest's decision workers), summed. Each peaks on its own, so the sum is an
        upper bound of the tree's peak."""
        return sum(_vm_hwm_kb(pid) for pid in process_tree(self.pid)) / 1024

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the service drains and commits), SIGKILL if it hangs; returns the exit code."""
        if self._proc is None:
            return 0
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing drained."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


# A service's `run_<service>(settings, stop, ready=ready, ...)`, bound to its settings.
ServiceRun = Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]]
RunningService = tuple["asyncio.Task[None]", asyncio.Event]


async def start_in_loop(name: str, run: ServiceRun) -> RunningService:
    """Run a service in this event loop; return once it is ready, or raise what it failed
    with (an AssertionError if it is not ready within 60 s)."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(stop, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    assert ready.is_set(), f"{name} did not start within 60 s"
    return task, stop


class InLoopServices:
    """The instances of one service a test runs in its event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.instances: list[RunningService] = []

    async def start(self, run: ServiceRun) -> None:
        self.instances.append(await start_in_loop(self.name, run))

    async def stop(self) -> None:
        """Ask every instance to stop, wait for each (30 s at most), forget them."""
        for _, stop in self.instances:
            stop.set()
        for task, _ in self.instances:
            await asyncio.wait_for(task, 30)
        self.instances.clear()


def signed_headers(principal: str, secret: str, value: bytes) -> list[tuple[str, bytes]]:
    """Kafka headers of a command `value` sent by `principal`, signed with `secret`."""
    return [(H_PRINCIPAL, principal.encode()), (H_SIGNATURE, sign(secret, value).encode())]


def signed_command(type: str, subject: str, payload: dict[str, Any], *, principal: str,
                   secret: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A command as a unit's system sends it: the envelope's bytes and the headers signing
    them as `principal` with `secret`. Its `source_unit` claims nothing: identity comes
    from the signature."""
    value = Envelope(type=type, source_unit="whoever", subject=subject, payload=payload).to_bytes()
    return value, signed_headers(principal, secret, value)


class _Switch(SpanExporter):
    """Forwards to an exporter until switched off (a span processor cannot be removed)."""

    def __init__(self, to: SpanExporter) -> None:
        self.to: SpanExporter | None = to

    def export(self, spans: Any) -> SpanExportResult:
        return self.to.export(spans) if self.to is not None else SpanExportResult.SUCCESS


@contextlib.contextmanager
def recorded_spans(service: str = "test") -> Iterator[InMemorySpanExporter]:
    """Every span finished inside, read after the block: the services' module-level
    tracers use the process's first tracer provider (OpenTelemetry sets it once), so the
    exporter is attached to that one too. Spans are recorded (`telemetry.recording()`)
    inside only; database calls are not traced."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from ioc_shared.platform.telemetry import setup_tracing

    exporter = InMemorySpanExporter()
    provider = setup_tracing(service, exporter=exporter, trace_db=False)
    first = trace.get_tracer_provider()
    switch = _Switch(exporter)
    if first is not provider and isinstance(first, TracerProvider):
        first.add_span_processor(SimpleSpanProcessor(switch))
    try:
        yield exporter
    finally:
        provider.force_flush()
        switch.to = None
        setup_tracing(service)   # no exporter for what runs after


# --- /metrics text, as Prometheus scrapes it ----------------------------------------------
def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample `name` with (at least) `labels` in /metrics text."""
    for line in text.splitlines():
        found = re.match(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if found is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(found.group(3))
    return None


def metric_naming_problems(text: str) -> list[str]:
    """What in /metrics text breaks the usual naming: a counter's samples not `_total`, a
    gauge or histogram named `_total`, a histogram of time not in `_seconds`."""
    problems = []
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        samples = set(re.findall(rf"^({re.escape(name)}\w*)[{{ ]", text, re.M))
        if kind == "counter" and not all(s.endswith(("_total", "_created")) for s in samples):
            problems.append(f"{name}: a counter's samples end in _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: a {kind} named _total")
        if kind == "histogram" and not name.endswith(("_seconds", "_bytes", "_records")):
            problems.append(f"{name}: a histogram without its unit")
    return problems
