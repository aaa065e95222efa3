"""BENCH routing: canonical field reports that routing verifies, approves and assigns itself.

Incidents of category `moi-truong` with normal priority are automated in
`config/routing.yaml` (verify, approve, assign without a human step), so each
incident on the bus ends in one `routing.incident.assigned` event.

Throughput: incidents preloaded on the canonical topic, rate of assignment
events from their timestamps, against the raw aiokafka reference over the
same messages (validating the envelope); runs alternate, ratio is the median
of per-pair ratios. Latency: at a steady 500 incidents/s, incident on the bus
-> assignment event on the bus (after the page cache of the throughput runs is flushed and
a 2 s warm-up at the same rate, so the consumer group's first join after start-up is not
counted, as in BENCH ingest), with the CPU per incident it costs.

Fairness (as in BENCH ingest): the outputs of a throughput run are read once the service
committed every input, not concurrently (a reader competes with the service for CPU,
which the reference loop does not have to); the rate still comes from their timestamps.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE
from ioc_shared.contracts.topics import ROUTING_EVENTS
from ioc_shared.platform.kafka import declare_topics
from routing.domain.model import incident_id_for
from routing.handlers import CANONICAL_PRODUCER, PRODUCER_HEADER

from bench.cpu import CpuMeter
from bench.harness import BenchResult, median, output_rate, preload, wait_committed
from bench.service import BenchService, paced_latency, percentile, settle

DATASET = "phan-anh-hien-truong"
ASSIGNED = "routing.incident.assigned"
# Units that may publish field reports (routing refuses records of any other).
COMMUNES = ["xa-loc-an", "tt-loc-ninh", "xa-loc-thanh-huyen", "xa-loc-thanh-nang"]
INCIDENTS = 20_000
LATENCY_RATE = 500.0
LATENCY_SECONDS = 15
WARMUP_SECONDS = 2
REPORTED_UNTIL = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def _reported_at(rng: random.Random) -> str:
    """Somewhen in the year before the run's fixed date, to the second.

    Reports spread over time as in real life: with one shared time, the 48 h duplicate
    window held every incident and most were flagged as likely duplicates of a neighbour
    within 200 m, which the spread locations were meant to avoid.
    """
    return (REPORTED_UNTIL - timedelta(seconds=rng.randrange(365 * 86400))).isoformat()


def incident_messages(n: int, tag: str, seed: int = 3) -> list[tuple[bytes, bytes, list]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        record_id = f"PA-{tag}-{i:07d}"
        commune = rng.choice(COMMUNES)
        env = Envelope(
            type="ingest.record.accepted", source_unit=commune, subject=f"{commune}/{record_id}",
            payload={"dataset": DATASET, "schema_version": 2, "record_id": record_id, "record": {
                "record_id": record_id, "reported_at": _reported_at(rng),
                "commune": commune, "category": "moi-truong", "priority": "binh-thuong",
                "channel": "ung-dung", "title": "Rác thải tồn đọng ven đường",
                # Spread out so no two incidents are likely duplicates of each other.
                "location": {"lat": 11.70 + rng.random() * 0.3, "lon": 106.50 + rng.random() * 0.2},
            }})
        # As ingest publishes them: keyed by unit and record id, with the producer header.
        headers = [(H_EVENT_ID, str(env.event_id).encode()), (H_EVENT_TYPE, env.type.encode()),
                   (PRODUCER_HEADER, CANONICAL_PRODUCER.encode())]
        out.append((f"{commune}/{record_id}".encode(), env.to_bytes(), headers))
    return out


def is_assignment(record: Any) -> bool:
    return dict(record.headers).get(H_EVENT_TYPE) == ASSIGNED.encode()


async def run(*, bootstrap: str, messages: list, repeats: int, reference: Any) -> BenchResult:
    incidents = incident_messages(min(INCIDENTS, len(messages)), "T")
    rates, ratios = [], []
    for _ in range(repeats):
        [ref_rate] = await reference(bootstrap, incidents, 1, Envelope)
        svc = BenchService("routing", bootstrap)
        source = svc.topic(canonical_topic(DATASET).name)
        await declare_topics(bootstrap, [dataclasses.replace(canonical_topic(DATASET), name=source)])
        await preload(bootstrap, source, incidents)
        async with svc:
            await wait_committed(bootstrap, svc.env["ROUTING_CONSUMER_GROUP"] + "-intake",
                                 len(incidents))
            _, rate = await output_rate(bootstrap, [svc.topic(ROUTING_EVENTS.name)], len(incidents),
                                        counts=is_assignment)
        rates.append(rate)
        ratios.append(rate / ref_rate)

    paced = incident_messages(int(LATENCY_RATE * LATENCY_SECONDS), "L", seed=5)
    await settle()
    async with BenchService("routing", bootstrap) as svc:
        def incident_of_assignment(rec: Any) -> str | None:
            if not is_assignment(rec):
                return None
            return rec.key.decode() if rec.key else None

        def incident_of_input(value: bytes) -> str:
            env = Envelope.from_bytes(value)
            return incident_id_for(env.source_unit, DATASET, env.payload["record"]["record_id"])

        warmup = incident_messages(int(LATENCY_RATE * WARMUP_SECONDS), "W", seed=7)
        await paced_latency(
            bootstrap, svc.topic(canonical_topic(DATASET).name), [svc.topic(ROUTING_EVENTS.name)],
            warmup, LATENCY_RATE, incident_of_assignment, incident_of_input)
        meter = CpuMeter(svc.process.pid)
        before = meter.snapshot()
        latency = await paced_latency(
            bootstrap, svc.topic(canonical_topic(DATASET).name), [svc.topic(ROUTING_EVENTS.name)],
            paced, LATENCY_RATE, incident_of_assignment, incident_of_input)
        cpu = meter.per_message_us(before, meter.snapshot(), len(paced))
    return BenchResult("routing", {
        "incidents": len(incidents), "repeats": repeats,
        "incidents_per_s": median(rates), "ratio": median(ratios),
        # The spread of the per-pair ratios: how much the shared machine moved them.
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        "p50_ms": percentile(latency, 50), "p99_ms": percentile(latency, 99),
        "latency_rate_per_s": LATENCY_RATE,
        # CPU per incident at that rate: routing (+ its relay process), PostgreSQL, Kafka.
        "cpu_us": round(cpu["total"]), "cpu_us_routing": round(cpu["service"] + cpu["helpers"]),
        "cpu_us_postgres": round(cpu["postgres"]), "cpu_us_kafka": round(cpu["kafka"]),
    })
