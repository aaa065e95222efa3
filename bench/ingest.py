"""BENCH ingest: the mixed workload (about 5 % invalid) through the ingest service.

Like with like: ONE ingest process against the one-process reference loop (`BENCH
ingest`), and, on a line of its own, two processes of one consumer group on the same
machine (`BENCH ingest-2p`): ingest scales by partitions, the workload's keys spread
over all of them.

Throughput: the inbound topic is preloaded, the service started, and the rate taken
from the timestamps of its outputs: one per input, the canonical record of an accepted
one or the rejection of a rejected one (the restricted copy of an accepted record's
personal fields, the unit's rejection feed and the quarantine copy are further outputs,
not counted), the same way as the reference loop's over the same messages (outputs are
read once the service committed every input, as the reference's are read after it ran).
Each repeat runs the reference, then one process, then two; each ratio is the median of
the per-repeat ratios to that repeat's reference.
Latency: at a steady 1,000 records/s, publish -> canonical record visible (after the
page cache of the throughput runs is flushed, and a 2 s warm-up at the same rate, so the
consumer group join after start-up is not counted), with the CPU per record it costs.
Memory: peak RSS (VmHWM) of the service process (summed over the processes).
CPU under load (`cpu_us_load`): CPU seconds of the one service process over its
throughput phase per input, median over the repeats: on a shared machine the rate swings
with everyone else's load, this much less, so it is the figure to compare changes by.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from ioc_shared.contracts import canonical_topic
from ioc_shared.contracts.topics import INGEST_INBOUND, INGEST_REJECTED
from ioc_shared.platform.kafka import declare_topics

from bench.cpu import CpuMeter
from bench.harness import BenchResult, median, output_rate, preload, wait_committed
from bench.service import BenchService, paced_latency, percentile, settle
from bench.workload import DATASET, bench_registry, make_messages

LATENCY_RATE = 1000.0
LATENCY_SECONDS = 15
WARMUP_SECONDS = 2


async def run(*, bootstrap: str, messages: list, repeats: int, reference: Any,
              ) -> list[BenchResult]:
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as directory:
        registry, credentials = bench_registry(Path(directory))
        env = {"INGEST_REGISTRY_FILE": str(registry), "INGEST_CREDENTIALS_FILE": str(credentials)}
        ref_rates: list[float] = []
        runs: dict[int, tuple[list[float], list[float]]] = {1: ([], []), 2: ([], [])}
        load_cpu: list[float] = []
        for _ in range(repeats):
            [ref_rate] = await reference(bootstrap, messages, 1)
            ref_rates.append(ref_rate)
            for processes, (rates, rss) in runs.items():
                rate, peak, cpu_us = await _throughput(bootstrap, messages, env, processes)
                rates.append(rate)
                rss.append(peak)
                if processes == 1:
                    load_cpu.append(cpu_us)
        latency, cpu = await _latency(bootstrap, env)
    results = []
    for processes, (rates, rss) in runs.items():
        ratios = [rate / ref for rate, ref in zip(rates, ref_rates, strict=True)]
        figures: dict[str, float | int | str] = {
            "messages": len(messages), "repeats": repeats, "processes": processes,
            "messages_per_s": median(rates), "ratio": median(ratios),
            # The spread of the per-repeat ratios: how much the shared machine moved them.
            "ratio_min": min(ratios), "ratio_max": max(ratios), "peak_rss_mb": max(rss)}
        if processes == 1:
            figures |= {
                "p50_ms": percentile(latency, 50), "p99_ms": percentile(latency, 99),
                "latency_rate_per_s": LATENCY_RATE,
                # CPU per record at that rate: ingest, PostgreSQL, Kafka.
                "cpu_us": round(cpu["total"]),
                "cpu_us_load": round(median(load_cpu)),
                "cpu_us_ingest": round(cpu["service"] + cpu["helpers"]),
                "cpu_us_postgres": round(cpu["postgres"]), "cpu_us_kafka": round(cpu["kafka"])}
        results.append(BenchResult("ingest" if processes == 1 else f"ingest-{processes}p",
                                   figures))
    return results


async def _throughput(bootstrap: str, messages: list, env: dict[str, str],
                      processes: int) -> tuple[float, float, float]:
    svc = BenchService("ingest", bootstrap, env, processes=processes)
    inbound = svc.topic(INGEST_INBOUND.name)
    await declare_topics(bootstrap, [dataclasses.replace(INGEST_INBOUND, name=inbound)])
    await preload(bootstrap, inbound, messages)
    async with svc:
        meter = CpuMeter(svc.process.pid)
        before = meter.snapshot()
        # Wait for the service to commit every input without reading its outputs meanwhile
        # (a concurrent reader would compete with it for CPU, which the reference loop does
        # not have to); then rate its outputs from their timestamps, as for the reference.
        await wait_committed(bootstrap, svc.env["INGEST_CONSUMER_GROUP"], len(messages))
        cpu_us = meter.per_message_us(before, meter.snapshot(), len(messages))["service"]
        peak = svc.peak_rss_mb()
        outputs = [svc.topic(canonical_topic(DATASET).name), svc.topic(INGEST_REJECTED.name)]
        _, rate = await output_rate(bootstrap, outputs, len(messages))
    return rate, peak, cpu_us


async def _latency(bootstrap: str, env: dict[str, str]) -> tuple[list[float], dict[str, float]]:
    paced = make_messages(int(LATENCY_RATE * LATENCY_SECONDS), seed=11, invalid_ratio=0.0,
                          run_tag="L")
    await settle()
    async with BenchService("ingest", bootstrap, env) as svc:
        canonical = svc.topic(canonical_topic(DATASET).name)

        def record_id_of_output(rec: Any) -> str | None:
            return str(json.loads(rec.value)["payload"]["record_id"])

        def record_id_of_input(value: bytes) -> str:
            return str(json.loads(value)["record"]["record_id"])

        # Steady state: a warm-up at the same rate first (not measured), so that the consumer
        # group's first join and assignment after start-up are not counted as record latency.
        warmup = make_messages(int(LATENCY_RATE * WARMUP_SECONDS), seed=12, invalid_ratio=0.0,
                               run_tag="W")
        await paced_latency(bootstrap, svc.topic(INGEST_INBOUND.name), [canonical], warmup,
                            LATENCY_RATE, record_id_of_output, record_id_of_input)
        meter = CpuMeter(svc.process.pid)
        before = meter.snapshot()
        latency = await paced_latency(bootstrap, svc.topic(INGEST_INBOUND.name), [canonical],
                                      paced, LATENCY_RATE, record_id_of_output, record_id_of_input)
        return latency, meter.per_message_us(before, meter.snapshot(), len(paced))
