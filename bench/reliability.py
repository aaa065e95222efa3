"""Fault injection: ingest, routing, reporting and sync-province ride out broker and database faults.

On a private platform (its own Kafka broker and PostgreSQL server on free ports, in a
temporary run dir: `scripts/platform.sh` with `IOC_RUN_DIR`, never the shared one),
`python -m ingest serve`, `python -m routing serve` and `python -m reporting serve` run
(and `python -m sync_province serve`, mirroring to the province's broker, which
`platform.sh` starts beside with `IOC_PROVINCE_KAFKA=1` and which is never faulted)
as real processes, started once. For each fault, mid-stream (field reports sent at a
steady rate to ingest's inbound topic; each becomes a canonical record, then a routing
incident, then one incident of reporting's rollups, and one record at the province's
topic, the dataset being shared with the province and granted to its principal):

- `kafka-term`: SIGTERM to the broker, down a few seconds, started again;
- `kafka-kill`: SIGKILL to the broker, likewise;
- `pg-restart`: `pg_ctl restart -m fast`;
- `pg-kill`: SIGKILL to the postmaster, down a few seconds, started again;
- `kafka-pause`, `pg-pause` (`make chaos` only): the broker, or the postmaster and its
  backends, stopped with SIGSTOP for a while (connections stay open, nothing answers,
  as in a network stall), then continued.

At the end the broker is killed and the services get SIGTERM: each must be gone
within its grace period (`shutdown_s`).

Measured per fault: inputs; lost (no canonical record, no incident, or a routing
incident that reporting's rollups do not count as received); duplicate effects (a record
with two canonical event ids, two incidents, or an incident counted as received more than
once by reporting; and, over the whole run, `incident_daily`'s received total against the
incidents' own contributions: a delta applied twice shows there); record ids missing at
the province topic or there under two event ids (read_committed); extra copies of one
event (same event id) on the canonical and the province topic, as `redelivered` (at
least once: not a duplicate effect for a consumer that deduplicates by event id); whether every service
still runs; whether their readiness went false while the dependency was down and true
after; how long until all were ready again once the dependency was back (`recovery_s`)
and until every input was through, up to reporting (`caught_up_s`); log lines.

`tests/faults/` runs one short round of the four faults in `make test`; `make chaos`
(`python -m bench.reliability`) runs longer rounds, repeatedly, and writes the figures
to `bench/reliability.json`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber
from ioc_shared.contracts import canonical_topic
from ioc_shared.contracts.topics import INGEST_INBOUND
from ioc_shared.platform.kafka import declare_topics, make_consumer, make_producer
from ioc_shared.platform.security import KafkaSecurity
from ioc_shared.testing import ServiceProcess, free_port, process_tree, unique

from bench.workload import DATASET, bench_registry, make_messages

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "reliability.json"
SERVICES = ("ingest", "routing", "reporting", "sync-province")
FAULTS = ("kafka-term", "kafka-kill", "pg-restart", "pg-kill")
# `make chaos` adds network-pause-like stalls: the process is stopped (SIGSTOP), so its
# sockets stay open and nothing answers, then continued.
CHAOS_FAULTS = (*FAULTS, "kafka-pause", "pg-pause")
# The shared platform of the project: never stopped or killed here.
_SHARED_PORTS = {19092, 19093, 15432}


class PrivatePlatform:
    """A Kafka broker and a PostgreSQL server of this run only, stopped (and their run dir
    removed) at the end; a detached reaper stops them too if this process dies first."""

    def __init__(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="ioc-faults-"))
        ports = {free_port() for _ in range(5)}
        while len(ports) < 5 or ports & _SHARED_PORTS:
            ports = {free_port() for _ in range(5)}
        (self.kafka_port, self.controller_port, self.pg_port, self.province_port,
         self.province_controller_port) = sorted(ports)
        # The province's broker (sync-province's target) runs beside, never faulted.
        self.env = {**os.environ, "IOC_RUN_DIR": str(self.run_dir),
                    "IOC_KAFKA_PORT": str(self.kafka_port),
                    "IOC_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                    "IOC_PG_PORT": str(self.pg_port), "IOC_PROVINCE_KAFKA": "1",
                    "IOC_PROVINCE_KAFKA_PORT": str(self.province_port),
                    "IOC_PROVINCE_KAFKA_CONTROLLER_PORT": str(self.province_controller_port)}
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.database_url = f"postgresql://ioc@127.0.0.1:{self.pg_port}/ioc"
        self.province_env: dict[str, str] = {}   # IOC_PROVINCE_KAFKA_* of `platform.sh env`
        self._started = False

    # --- whole platform -----------------------------------------------------------
    def _script(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(["bash", str(REPO / "scripts/platform.sh"), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"platform.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> None:
        self._started = True
        atexit.register(self.stop)
        self._start_reaper()
        self._script("start")
        for line in self._script("env").splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name.startswith("IOC_PROVINCE_KAFKA_"):
                self.province_env[name] = value
        assert self.province_env["IOC_PROVINCE_KAFKA_BOOTSTRAP"].endswith(f":{self.province_port}")

    def province_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            sasl_user=self.province_env["IOC_PROVINCE_KAFKA_SASL_USER"],
            sasl_password_file=Path(self.province_env["IOC_PROVINCE_KAFKA_SASL_PASSWORD_FILE"]),
            ca_file=Path(self.province_env["IOC_PROVINCE_KAFKA_CA_FILE"]))

    def _start_reaper(self) -> None:
        """Stops the platform once this process is gone, however it ended."""
        # Every process started with this run dir in its environment (the services under
        # test, and the servers) goes too, but the reaper itself.
        script = (f'while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; '
                  f'for env in $(grep -lszx "IOC_RUN_DIR={self.run_dir}" /proc/[0-9]*/environ); do '
                  f'pid="${{env#/proc/}}"; pid="${{pid%/environ}}"; '
                  f'[[ "$pid" == "$$" ]] || kill -TERM "$pid" 2>/dev/null; done; sleep 12; '
                  f'bash "{REPO}/scripts/platform.sh" stop >/dev/null 2>&1; '
                  f'rm -rf "{self.run_dir}"')
        subprocess.Popen(["setsid", "bash", "-c", script], env=self.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._script("stop", timeout=120)
        finally:
            for pid in (self._kafka_pid(), self._postmaster_pid()):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- faults -------------------------------------------------------------------
    def _kafka_pid(self) -> int | None:
        return _read_pid(self.run_dir / "kafka" / "kafka.pid")

    def _postmaster_pid(self) -> int | None:
        return _read_pid(self.run_dir / "pg" / "data" / "postmaster.pid")

    def _ours(self, pid: int | None) -> int:
        """A pid of this platform (its pid file is in our run dir and it is alive)."""
        assert pid is not None and Path(f"/proc/{pid}").exists(), "dependency not running"
        assert not ({self.kafka_port, self.pg_port, self.province_port} & _SHARED_PORTS)
        return pid

    async def kafka_down(self, sig: signal.Signals) -> None:
        pid = self._ours(self._kafka_pid())
        os.kill(pid, sig)
        await _gone([pid], 60)

    async def kafka_up(self) -> None:
        await asyncio.to_thread(self._script, "start")

    async def pg_kill(self) -> None:
        pid = self._ours(self._postmaster_pid())
        backends = process_tree(pid)
        os.kill(pid, signal.SIGKILL)
        # Its backends notice the postmaster's death and exit; until they have, the old
        # shared memory is in use and a new postmaster refuses to start.
        await _gone(backends, 30)

    async def pause(self, which: str, seconds: float) -> None:
        """SIGSTOP the broker (or the postmaster and its backends), SIGCONT after `seconds`."""
        root = self._ours(self._kafka_pid() if which == "kafka" else self._postmaster_pid())
        pids = process_tree(root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    async def pg_up(self) -> None:
        await asyncio.to_thread(self._script, "start")

    async def pg_restart_fast(self) -> None:
        self._ours(self._postmaster_pid())
        await asyncio.to_thread(self._pg_ctl_restart)

    def _pg_ctl_restart(self) -> None:
        data = self.run_dir / "pg" / "data"
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        pg_ctl = str(found[-1]) if found else (shutil.which("pg_ctl") or "pg_ctl")
        command = [pg_ctl, "-D", str(data), "-l", str(data.parent / "pg.log"),
                   "-w", "-t", "60", "restart", "-m", "fast"]
        if os.geteuid() == 0:   # the server runs as the data dir's owner
            command = ["runuser", "-u", data.owner(), "--", "setsid", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=90,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {done.stderr[-2000:]}")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


async def _gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} still alive after {timeout}s")
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@contextlib.asynccontextmanager
async def private_platform() -> AsyncIterator[PrivatePlatform]:
    platform = PrivatePlatform()
    try:
        await asyncio.to_thread(platform.start)
        yield platform
    finally:
        await asyncio.to_thread(platform.stop)


# --- the services --------------------------------------------------------------------
@dataclass
class Readiness:
    """What the services' `/health/ready` answered, polled every 0.2 s."""

    samples: dict[str, list[tuple[float, int | None]]] = field(default_factory=dict)

    def ready_at(self, service: str, after: float) -> float | None:
        """First moment from `after` on at which the service answered 200 again."""
        return next((t for t, code in self.samples[service] if t >= after and code == 200), None)

    def unready_between(self, service: str, start: float, end: float) -> bool:
        return any(code == 503 for t, code in self.samples[service] if start <= t <= end)

    def unanswered(self, service: str) -> int:
        """Polls that got no answer within a second (health must answer at once)."""
        return sum(1 for _, code in self.samples[service] if code is None)


class Deployment:
    """ingest, routing, reporting and sync-province as processes on the private platform,
    one namespace, a schema each."""

    def __init__(self, platform: PrivatePlatform, log_dir: Path) -> None:
        self.platform = platform
        self.namespace = unique("faults").replace("_", "-")
        self.schemas = {"ingest": unique("faults_ingest"), "routing": unique("faults_routing"),
                        "reporting": unique("faults_reporting"),
                        "sync-province": unique("faults_sync")}
        # sync-province mirrors to the province's broker under this prefix.
        self.province_prefix = f"{self.namespace}.loc-ninh"
        # Every commune of the workload publishes (the seed registry grants only a few).
        registry, credentials = bench_registry(log_dir)
        env = {
            **platform.env,
            "IOC_KAFKA_BOOTSTRAP": platform.bootstrap,
            "IOC_DATABASE_URL": platform.database_url,
            "IOC_TOPIC_NAMESPACE": self.namespace,
            "IOC_LOG_LEVEL": "INFO",
            "IOC_DEV_MODE": "1",
            "IOC_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",   # the private local broker
            "IOC_REGISTRY_FILE": str(registry),
            "IOC_CREDENTIALS_FILE": str(credentials),
            "IOC_SHUTDOWN_GRACE_S": "10",
            "INGEST_DB_SCHEMA": self.schemas["ingest"],
            "INGEST_CONSUMER_GROUP": unique("faults-ingest"),
            "ROUTING_DB_SCHEMA": self.schemas["routing"],
            "ROUTING_CONSUMER_GROUP": unique("faults-routing"),
            "REPORTING_DB_SCHEMA": self.schemas["reporting"],
            "REPORTING_CONSUMER_GROUP": unique("faults-reporting"),
            "REPORTING_OUTPUT_DIR": str(log_dir / "reports"),
            # Timers stay on (they poll PostgreSQL through every fault); a draft they
            # generate is not rendered (Typst would only cost CPU here).
            "REPORTING_RENDER_FILES": "false",
            **platform.province_env,
            "SYNC_PROVINCE_TARGETS": "kafka",
            "SYNC_PROVINCE_SCHEMA_NAME": self.schemas["sync-province"],
            "SYNC_PROVINCE_PROVINCE_TOPIC_PREFIX": self.province_prefix,
            "SYNC_PROVINCE_SIGNING_KEY_FILE": str(log_dir / "share-log.pem"),
            "SYNC_PROVINCE_RETRY_MAX_WAIT_S": "2",
        }
        self.services = {name: ServiceProcess(name, env, log_dir / f"{name}.log", REPO)
                         for name in SERVICES}
        self.readiness = Readiness({name: [] for name in self.services})
        self._poller: asyncio.Task[None] | None = None
        self._tags = 0

    def next_tag(self) -> str:
        """Distinct record ids for every injection."""
        self._tags += 1
        return f"x{self._tags}"

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    async def start(self) -> None:
        # The inbound topic exists before ingest starts, as a unit system would find it.
        await declare_topics(self.platform.bootstrap, [
            dataclasses.replace(INGEST_INBOUND, name=self.topic(INGEST_INBOUND.name))])
        for service in self.services.values():
            await service.start(timeout=120)
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                for name, service in self.services.items():
                    code: int | None
                    try:
                        code = (await http.get(
                            f"http://127.0.0.1:{service.port}/health/ready")).status_code
                    except httpx.HTTPError:
                        code = None
                    self.readiness.samples[name].append((time.monotonic(), code))
                await asyncio.sleep(0.2)

    def running(self) -> dict[str, bool]:
        return {name: s._proc is not None and s._proc.poll() is None
                for name, s in self.services.items()}

    def log_lines(self) -> dict[str, int]:
        return {name: len(s.log_path.read_bytes().splitlines()) if s.log_path.exists() else 0
                for name, s in self.services.items()}

    async def stop(self) -> tuple[dict[str, float], dict[str, int]]:
        """SIGTERM each service; seconds each took to exit, and its exit code."""
        if self._poller is not None:
            self._poller.cancel()
        took, codes = {}, {}
        for name, service in self.services.items():
            started = time.monotonic()
            codes[name] = await asyncio.to_thread(service.stop, 30.0)
            took[name] = round(time.monotonic() - started, 2)
        return took, codes


@dataclass
class FaultResult:
    fault: str
    inputs: int
    sent: int      # inputs the broker confirmed (the sender retries until each is)
    send_errors: list[str]
    send_retries: int
    lost_canonical: int
    lost_incidents: int
    duplicate_canonical: int
    duplicate_incidents: int
    lost_reported: int         # routing incidents reporting does not count as received
    duplicate_reported: int    # incidents reporting counts as received more than once
    rollup_drift: int          # incident_daily received - the incidents' own (whole run)
    lost_province: int         # record ids (all granted to the province) not at its topic
    duplicate_province: int    # record ids at the province topic under two event ids
    # Extra copies of one event (same event id) on the canonical and the province topic:
    # at-least-once delivery (a send retried after a lost producer sequence), which the
    # sync mirrors as it is; consumers deduplicate by event id, so not a duplicate effect.
    redelivered_canonical: int
    redelivered_province: int
    running_after: dict[str, bool]
    unready_during: dict[str, bool]
    ready_after: dict[str, bool]
    health_unanswered: dict[str, int]
    down_s: float
    recovery_s: float | None
    caught_up_s: float | None
    log_lines: dict[str, int]

    def problems(self, *, max_log_lines: int) -> list[str]:
        out = []
        if self.sent != self.inputs:
            out.append(f"the harness sent {self.sent} of {self.inputs} inputs")
        if self.lost_canonical or self.lost_incidents:
            out.append(f"lost: {self.lost_canonical} canonical, {self.lost_incidents} incidents")
        if self.duplicate_canonical or self.duplicate_incidents:
            out.append(f"duplicate effects: {self.duplicate_canonical} canonical, "
                       f"{self.duplicate_incidents} incidents")
        if self.lost_reported or self.duplicate_reported or self.rollup_drift:
            out.append(f"reporting: {self.lost_reported} lost, {self.duplicate_reported} "
                       f"counted twice, rollup drift {self.rollup_drift}")
        if self.lost_province or self.duplicate_province:
            out.append(f"province: {self.lost_province} lost, {self.duplicate_province} "
                       "duplicate")
        for what, flags in (("not running", self.running_after),
                            ("readiness never false", self.unready_during),
                            ("not ready after", self.ready_after)):
            bad = [n for n, ok in flags.items() if not ok]
            if bad:
                out.append(f"{what}: {bad}")
        noisy = {n: c for n, c in self.log_lines.items() if c > max_log_lines}
        if noisy:
            out.append(f"more than {max_log_lines} log lines: {noisy}")
        unanswered = {n: c for n, c in self.health_unanswered.items() if c}
        if unanswered:
            out.append(f"/health/ready unanswered within 1 s: {unanswered}")
        return out


async def _send(bootstrap: str, topic: str, messages: list[Any], rate: float,
                at_third: asyncio.Event, sent: list[int], errors: list[str]) -> None:
    """Send at `rate`/s; a send that fails (the broker is away) is retried until it lands."""
    def new_producer() -> AIOKafkaProducer:
        return make_producer(bootstrap, client_id="faults-load", acks="all", linger_ms=5,
                             enable_idempotence=True, request_timeout_ms=10_000,
                             retry_backoff_ms=500)

    producer = new_producer()
    await producer.start()
    try:
        start = time.monotonic()
        for i, (key, value, headers) in enumerate(messages):
            if i == len(messages) // 3:
                at_third.set()
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while True:
                try:
                    await asyncio.wait_for(
                        producer.send_and_wait(topic, value, key=key, headers=headers), 15)
                    sent[0] += 1
                    break
                except (KafkaError, TimeoutError, OSError) as exc:
                    errors.append(repr(exc))
                    await asyncio.sleep(0.5)
                    if isinstance(exc, OutOfOrderSequenceNumber):
                        # aiokafka's idempotent producer does not recover from this (its
                        # sequence state is gone with the broker's): start a new one.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(producer.stop(), 10)
                        producer = new_producer()
                        await producer.start()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)


def _received_sql(dep: Deployment) -> str:
    """Per routing incident of the record ids ($1): its record id and how many times
    reporting's rollups count it as received (its own contribution, as added to
    `incident_daily`; 0 when reporting has no row for it)."""
    return (f"SELECT r.record_id, coalesce((SELECT sum((c->>6)::bigint) "
            f"FROM jsonb_array_elements(i.contribution) c WHERE c->>1 = 'received'), 0) AS n "
            f"FROM {dep.schemas['routing']}.incidents r "
            f"LEFT JOIN {dep.schemas['reporting']}.incidents i ON i.incident_id = r.id "
            "WHERE r.record_id = ANY($1::text[])")


async def _outcome(dep: Deployment, record_ids: set[str]) -> tuple[dict[str, set[str]], int,
                                                                     dict[str, int],
                                                                     list[int], int]:
    """Canonical event ids per record id (read from the topic) and the number of copies,
    incidents per record id, reporting's received count per routing incident, and the
    drift of `incident_daily`'s received total from the incidents' own contributions (0
    unless a delta went twice)."""
    consumer = make_consumer(dep.topic(canonical_topic(DATASET).name),
                             bootstrap=dep.platform.bootstrap, group_id=None,
                             auto_offset_reset="earliest")
    await consumer.start()
    events: dict[str, set[str]] = {}
    copies = 0
    try:
        ends = None
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    body = json.loads(rec.value)
                    rid = str(body["payload"]["record_id"])   # the key is <unit>/<record id>
                    if rid in record_ids:
                        events.setdefault(rid, set()).add(str(body["event_id"]))
                        copies += 1
            if ends is None:
                ends = await consumer.end_offsets(list(consumer.assignment()))
            positions = {tp: await consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                break
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(dep.platform.database_url)
    try:
        rows = await conn.fetch(
            f"SELECT record_id, count(*) AS n FROM {dep.schemas['routing']}.incidents "
            "WHERE record_id = ANY($1::text[]) GROUP BY record_id", list(record_ids))
        received = [int(r["n"]) for r in await conn.fetch(_received_sql(dep), list(record_ids))]
        reporting = dep.schemas["reporting"]
        drift = int(await conn.fetchval(
            f"SELECT (SELECT coalesce(sum(n), 0) FROM {reporting}.incident_daily "
            "WHERE measure = 'received') - (SELECT coalesce(sum((c->>6)::bigint), 0) "
            f"FROM {reporting}.incidents i, jsonb_array_elements(i.contribution) c "
            "WHERE c->>1 = 'received')"))
    finally:
        await conn.close()
    return events, copies, {r["record_id"]: r["n"] for r in rows}, received, drift


async def _province_outcome(dep: Deployment, record_ids: set[str], timeout: float
                            ) -> dict[str, list[str]]:
    """The event id of each copy per record id at the province topic (read_committed, the
    province's own security settings), read until every record id is there or `timeout`,
    then a second more for late duplicates."""
    topic = f"{dep.province_prefix}.{canonical_topic(DATASET).name}"
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=dep.platform.province_env["IOC_PROVINCE_KAFKA_BOOTSTRAP"],
        group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
        isolation_level="read_committed", metadata_max_age_ms=1000,
        **dep.platform.province_security().client_kwargs())
    await consumer.start()
    copies: dict[str, list[str]] = {}
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for rec in records:
                    body = json.loads(rec.value)
                    rid = str(body["payload"]["record_id"])
                    if rid in record_ids:
                        copies.setdefault(rid, []).append(str(body["event_id"]))
            if settle_until is None and len(copies) == len(record_ids):
                settle_until = time.monotonic() + 1.0
    finally:
        await consumer.stop()
    return copies


async def _reported_count(dep: Deployment, record_ids: list[str]) -> int:
    """Record ids whose incident reporting's rollups count (routing has them all then)."""
    try:
        conn = await asyncpg.connect(dep.platform.database_url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return -1
    try:
        return int(await conn.fetchval(
            f"SELECT count(DISTINCT record_id) FROM ({_received_sql(dep)}) AS x WHERE n > 0",
            record_ids, timeout=5))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return -1
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)


async def inject(dep: Deployment, fault: str, *, records: int, rate: float, down_s: float,
                 settle_timeout_s: float, round_no: int = 0) -> FaultResult:
    """One fault while `records` field reports stream in; waits until they are all through."""
    platform = dep.platform
    tag = f"{fault.replace('-', '')}{round_no}{dep.next_tag()}-"
    messages = make_messages(records, seed=zlib.crc32(tag.encode()), invalid_ratio=0.0, run_tag=tag)
    record_ids = [json.loads(v)["record"]["record_id"] for _, v, _ in messages]
    lines_before = dep.log_lines()
    at_third = asyncio.Event()
    sent, send_errors = [0], []
    sender = asyncio.create_task(_send(platform.bootstrap, dep.topic(INGEST_INBOUND.name),
                                       messages, rate, at_third, sent, send_errors))
    await at_third.wait()
    fault_at = time.monotonic()
    if fault in ("kafka-term", "kafka-kill"):
        await platform.kafka_down(signal.SIGTERM if fault == "kafka-term" else signal.SIGKILL)
        await asyncio.sleep(down_s)
        await platform.kafka_up()
    elif fault == "pg-restart":
        await platform.pg_restart_fast()
    elif fault == "pg-kill":
        await platform.pg_kill()
        await asyncio.sleep(down_s)
        await platform.pg_up()
    elif fault in ("kafka-pause", "pg-pause"):
        await platform.pause(fault.split("-")[0], down_s)
    else:
        raise ValueError(f"unknown fault {fault}")
    back_at = time.monotonic()
    deadline = back_at + settle_timeout_s
    caught_up_at = None
    while time.monotonic() < deadline:
        if sender.done() and await _reported_count(dep, record_ids) == len(record_ids):
            caught_up_at = time.monotonic()
            break
        await asyncio.sleep(0.5)
    if not sender.done():
        sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender   # anything else it raised is a fault of this harness: raise
    await asyncio.sleep(1.0)   # late duplicates, if any, have time to show
    events, copies, incidents, received, drift = await _outcome(dep, set(record_ids))
    province = await _province_outcome(dep, set(record_ids),
                                       max(5.0, deadline - time.monotonic()))
    readiness = dep.readiness
    ready = {n: readiness.ready_at(n, back_at) for n in dep.services}
    recovered = [t for t in ready.values() if t is not None]
    lines_after = dep.log_lines()
    return FaultResult(
        fault=fault, inputs=len(record_ids), sent=sent[0],
        send_errors=sorted(set(send_errors))[:5], send_retries=len(send_errors),
        lost_canonical=len(record_ids) - len(events),
        lost_incidents=len(record_ids) - len(incidents),
        duplicate_canonical=sum(1 for ids in events.values() if len(ids) > 1),
        duplicate_incidents=sum(1 for n in incidents.values() if n > 1),
        lost_reported=sum(1 for n in received if n == 0),
        duplicate_reported=sum(1 for n in received if n > 1),
        rollup_drift=drift,
        lost_province=len(record_ids) - len(province),
        duplicate_province=sum(1 for ids in province.values() if len(set(ids)) > 1),
        redelivered_canonical=copies - sum(map(len, events.values())),
        redelivered_province=sum(len(ids) - len(set(ids)) for ids in province.values()),
        running_after=dep.running(),
        unready_during={n: readiness.unready_between(n, fault_at, back_at + 5.0)
                        for n in dep.services},
        ready_after={n: t is not None for n, t in ready.items()},
        health_unanswered={n: readiness.unanswered(n) for n in dep.services},
        down_s=round(back_at - fault_at, 2),
        recovery_s=round(max(recovered) - back_at, 2) if len(recovered) == len(ready) else None,
        caught_up_s=round(caught_up_at - back_at, 2) if caught_up_at else None,
        log_lines={n: lines_after[n] - lines_before[n] for n in dep.services})


async def run_faults(*, rounds: int, records: int, rate: float, down_s: float,
                     settle_timeout_s: float = 90.0, log_dir: Path | None = None,
                     faults: tuple[str, ...] = FAULTS) -> dict[str, Any]:
    """Start a private platform and the services once; inject every fault `rounds` times."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="ioc-faults-logs-"))
    results: list[FaultResult] = []
    async with private_platform() as platform:
        dep = Deployment(platform, log_dir)
        try:
            await dep.start()
            for round_no in range(rounds):
                for fault in faults:
                    results.append(await inject(dep, fault, records=records, rate=rate,
                                                down_s=down_s, settle_timeout_s=settle_timeout_s,
                                                round_no=round_no))
            # SIGTERM must end each service within its grace period even with the
            # broker away: measured with the broker killed.
            await platform.kafka_down(signal.SIGKILL)
            await asyncio.sleep(2.0)
        finally:
            shutdown_s, exit_codes = await dep.stop()
    return {"records_per_fault": records, "rate_per_s": rate, "down_s": down_s,
            "rounds": rounds, "shutdown_s": shutdown_s, "exit_codes": exit_codes, "log_dir": str(log_dir),
            "results": [asdict(r) for r in results]}


def main() -> None:
    """`make chaos`: longer rounds, repeated; figures to bench/reliability.json."""
    os.environ["IOC_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"   # the private broker is local
    rounds = int(os.environ.get("CHAOS_ROUNDS", "3"))
    records = int(os.environ.get("CHAOS_RECORDS", "6000"))
    rate = float(os.environ.get("CHAOS_RATE", "300"))
    down_s = float(os.environ.get("CHAOS_DOWN_S", "25"))
    faults = tuple(os.environ.get("CHAOS_FAULTS", ",".join(CHAOS_FAULTS)).split(","))
    report = asyncio.run(run_faults(rounds=rounds, records=records, rate=rate, down_s=down_s,
                                    settle_timeout_s=180.0, faults=faults))
    report["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    failed = False
    for r in report["results"]:
        result = FaultResult(**r)
        problems = result.problems(max_log_lines=400)
        failed |= bool(problems)
        sys.stdout.write(
            f"CHAOS {r['fault']} inputs={r['inputs']} lost={r['lost_canonical']}/"
            f"{r['lost_incidents']} duplicates={r['duplicate_canonical']}/"
            f"{r['duplicate_incidents']} reporting_lost={r['lost_reported']} "
            f"reporting_duplicates={r['duplicate_reported']} rollup_drift={r['rollup_drift']} "
            f"province_lost={r['lost_province']} province_duplicates={r['duplicate_province']} "
            f"redelivered={r['redelivered_canonical']}/{r['redelivered_province']} "
            f"down_s={r['down_s']} recovery_s={r['recovery_s']} "
            f"caught_up_s={r['caught_up_s']} log_lines={r['log_lines']}"
            f"{' PROBLEMS: ' + '; '.join(problems) if problems else ''}\n")
    failed |= any(report["exit_codes"].values())
    sys.stdout.write(f"CHAOS shutdown_s={report['shutdown_s']} exit_codes={report['exit_codes']}"
                     f" -> {RESULTS}\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
