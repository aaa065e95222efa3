"""BENCH sync: sync-province catching up a backlog, and its lag at a steady rate.

- Kafka catch-up: field reports preloaded on the district's canonical topic, then
  sync-province (target: the provincial SASL_SSL broker, transactional, with its cursor
  topic) started; rate from the service's own count of delivered records between its
  first and last observation (start-up excluded), against the raw aiokafka reference
  loop over the same messages (`ratio=`).
- HTTP catch-up: the same backlog to the province simulator process (JSON batches of
  `SYNC_PROVINCE_BATCH_RECORDS`), records/s.
- Steady state: at 1,000 records/s, record on the district topic -> the same record
  readable (read_committed) on the province's topic; p50/p99, with the peak RSS of the
  service over the whole run.

Needs the provincial broker (`scripts/platform.sh start`, `IOC_PROVINCE_KAFKA_*`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE
from ioc_shared.platform.kafka import declare_topics, make_producer
from ioc_shared.testing import ServiceProcess, database_url, free_port, province_security, unique

from bench.harness import RAW_CLIENT, BenchResult, median, preload
from bench.service import REPO, BenchService, paced, percentile, settle

DATASET = "phan-anh-hien-truong"
LATENCY_RATE = 1000.0
LATENCY_SECONDS = 10


def field_reports(n: int, tag: str) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    out = []
    for i in range(n):
        unit = ("xa-loc-an", "tt-loc-ninh", "xa-loc-hiep")[i % 3]
        record_id = f"PA-{tag}-{i:07d}"
        env = Envelope(type="ingest.record.accepted", source_unit=unit, subject=record_id,
                       payload={"dataset": DATASET, "schema_version": 2, "record_id": record_id,
                                "record": {"record_id": record_id, "commune": unit,
                                           "reported_at": "2026-11-30T01:00:00+00:00",
                                           "category": "moi-truong", "priority": "binh-thuong",
                                           "channel": "ung-dung", "title": "Rác thải ven đường",
                                           "reporter_ref": f"p-{i}"}})
        headers = [(H_EVENT_ID, str(env.event_id).encode()), (H_EVENT_TYPE, env.type.encode()),
                   ("ioc-producer", b"ingest"),
                   ("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode())]
        out.append((f"{unit}/{record_id}".encode(), env.to_bytes(), headers))
    return out


def _service(bootstrap: str, targets: str, **extra: str) -> BenchService:
    svc = BenchService("sync-province", bootstrap)
    svc.env.update({
        "SYNC_PROVINCE_TARGETS": targets, "SYNC_PROVINCE_SCHEMA_NAME": svc.schema,
        "SYNC_PROVINCE_PROVINCE_TOPIC_PREFIX": f"{svc.namespace}.loc-ninh",
        "SYNC_PROVINCE_SIGNING_KEY_FILE": str(Path(tempfile.gettempdir()) / f"{svc.namespace}.pem"),
        "SYNC_PROVINCE_EVENT_TOPICS": "", "SYNC_PROVINCE_STATUS_INTERVAL_S": "5", **extra})
    # ServiceProcess copies its environment when made: make it again with these settings.
    svc.process = ServiceProcess("sync-province", svc.env, svc.process.log_path, REPO)
    svc.processes = [svc.process]
    return svc


async def _drop_province_topics(svc: BenchService) -> None:
    """The province's copies of this run (its broker is not cleaned by the harness)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["IOC_PROVINCE_KAFKA_BOOTSTRAP"],
                                **province_security().client_kwargs())
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(f"{svc.namespace}.")]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def _source(bootstrap: str, svc: BenchService) -> str:
    source = svc.topic(canonical_topic(DATASET).name)
    await declare_topics(bootstrap, [dataclasses.replace(canonical_topic(DATASET), name=source)])
    return source


async def _delivered(port: int) -> int:
    async with httpx.AsyncClient() as http:
        rows = (await http.get(f"http://127.0.0.1:{port}/status")).json()
    return sum(int(r["sent"]) for r in rows if r["stream"] == DATASET)


async def catch_up_rate(svc: BenchService, expected: int, timeout: float = 600) -> float:
    """Records/s from the service's own delivered count, first to last observation."""
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = await _delivered(svc.process.port)
        now = time.perf_counter()
        if done > 0 and first is None:
            first = (now, done)
        if done >= expected and first is not None:
            return (done - first[1]) / max(now - first[0], 1e-3)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"sync-province delivered only {done} of {expected}")


class Simulator:
    def __init__(self) -> None:
        self.port = free_port()
        self.schema = unique("bench_sim")
        self.token = Path(tempfile.gettempdir()) / f"{self.schema}.token"
        self.token.write_text("bench-token-0123456789")
        self._proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Simulator:
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "sync_province.simulator", "--port", str(self.port), "--schema",
             self.schema, "--database-url", database_url(), "--token-file", str(self.token)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"http://127.0.0.1:{self.port}/health")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("simulator did not start")

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        from ioc_shared.platform.db import create_pool
        pool = await create_pool(database_url(), max_size=1)
        await pool.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        await pool.close()


async def steady_lag(bootstrap: str, svc: BenchService, source: str) -> list[float]:
    """ms from sending a record to the district to reading it at the province."""
    target = f"{svc.namespace}.loc-ninh.{canonical_topic(DATASET).name}"
    messages = field_reports(int(LATENCY_RATE * LATENCY_SECONDS), "L")
    warm = field_reports(200, "W")
    producer = make_producer(bootstrap, client_id="bench-sync", acks="all", linger_ms=0,
                             enable_idempotence=True, **RAW_CLIENT)
    await producer.start()
    for key, value, headers in warm:      # creates the province topic before we read it
        await producer.send(source, value, key=key, headers=headers)
    await producer.flush()
    await catch_up_rate(svc, len(warm))
    # A consumer started before the province topic existed would not see it for minutes.
    consumer = AIOKafkaConsumer(bootstrap_servers=os.environ["IOC_PROVINCE_KAFKA_BOOTSTRAP"],
                                group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", **province_security().client_kwargs())
    await consumer.start()
    if target not in await consumer.topics():
        raise RuntimeError(f"{target} absent at the province after the warm-up")
    tps = [TopicPartition(target, p) for p in range(canonical_topic(DATASET).partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    try:
        return await paced(producer, consumer, source, messages, LATENCY_RATE,
                           match=lambda rec: dict(rec.headers).get(H_EVENT_ID, b"").decode() or None,
                           ident=lambda value: str(orjson.loads(value)["event_id"]))
    finally:
        await producer.stop()
        await consumer.stop()


async def run(*, bootstrap: str, messages: list[Any], repeats: int, reference: Any) -> BenchResult:
    count = len(messages)
    backlog = field_reports(count, "T")
    kafka_rates, ratios, http_rates, rss = [], [], [], []
    for _ in range(repeats):
        [ref_rate] = await reference(bootstrap, backlog, 1, Envelope)
        svc = _service(bootstrap, "kafka")
        await preload(bootstrap, await _source(bootstrap, svc), backlog)
        async with svc:
            rate = await catch_up_rate(svc, count)
            rss.append(svc.process.peak_rss_mb())
        await _drop_province_topics(svc)
        kafka_rates.append(rate)
        ratios.append(rate / ref_rate)
        print(f"# sync kafka catch-up {rate:.0f}/s, reference {ref_rate:.0f}/s", flush=True)
        async with Simulator() as sim:
            svc = _service(bootstrap, "http", SYNC_PROVINCE_GATEWAY_URL=f"http://127.0.0.1:{sim.port}",
                           SYNC_PROVINCE_GATEWAY_TOKEN_FILE=str(sim.token))
            await preload(bootstrap, await _source(bootstrap, svc), backlog)
            async with svc:
                http_rates.append(await catch_up_rate(svc, count))
                rss.append(svc.process.peak_rss_mb())
                print(f"# sync http catch-up {http_rates[-1]:.0f}/s", flush=True)
    await settle()
    svc = _service(bootstrap, "kafka")
    source = await _source(bootstrap, svc)
    async with svc:
        latency = await steady_lag(bootstrap, svc, source)
        rss.append(svc.process.peak_rss_mb())
    await _drop_province_topics(svc)
    return BenchResult("sync", {
        "records": count, "repeats": repeats,
        "kafka_records_per_s": median(kafka_rates), "ratio": median(ratios),
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        "http_records_per_s": median(http_rates),
        "lag_p50_ms": percentile(latency, 50), "lag_p99_ms": percentile(latency, 99),
        "latency_rate_per_s": LATENCY_RATE, "peak_rss_mb": round(max(rss)),
    })


