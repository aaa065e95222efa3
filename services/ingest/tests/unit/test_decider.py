"""Decision workers: a child process decides exactly as the service process would."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from ingest.decider import (
    Decided,
    DecisionConfig,
    DecisionWorkerLost,
    LocalDecider,
    WorkerDecider,
)
from ingest.domain import Accepted, Inbound, Ingestor, Limits, Rejected
from ingest.messages import H_REPLAY_ID
from ingest.topics import IngestTopics
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.registry import Registry

from .conftest import NOW, REPO, report, signed

MAX_MESSAGE_BYTES = 256 * 1024   # as the `ingestor` fixture


def decision_config(registry: Registry) -> DecisionConfig:
    topics = IngestTopics.resolve(ServiceSettings(topic_namespace="unit"), registry)
    limits = Limits()
    return DecisionConfig(
        registry_file=str(REPO / "config" / "registry.yaml"),
        credentials_file=str(REPO / "config" / "credentials.dev.yaml"),
        future_tolerance_s=limits.future_tolerance.total_seconds(),
        geo_margin_deg=limits.geo_margin_deg, max_message_bytes=MAX_MESSAGE_BYTES,
        canonical=topics.canonical, special=topics.special, rejected=topics.rejected,
        quarantine=topics.quarantine, restricted=topics.restricted,
        unauthenticated=topics.unauthenticated, unit_feeds=topics.unit_rejections)


@pytest.fixture
async def workers(registry: Registry, ingestor: Ingestor) -> AsyncIterator[WorkerDecider]:
    config = decision_config(registry)
    decider = WorkerDecider(config, config.deciding(ingestor), workers=2)
    await decider.start()
    yield decider
    await decider.close()


def mixed_chunk() -> list[Inbound]:
    """Accepted, schema-invalid, unauthenticated, undecodable, unknown dataset, a replay."""
    replay = signed(report(record_id="PA-R", title=""), origin="t:0:9")
    replay.headers += ((H_REPLAY_ID, b"r-1"),)
    return [
        signed(report(record_id="PA-1"), origin="t:0:1"),
        signed(report(record_id="PA-2", title="x" * 500), origin="t:0:2"),
        signed(report(record_id="PA-3"), secret="wrong-secret", origin="t:0:3"),
        signed(None, raw=b"\xff\xfe not json", origin="t:0:4"),
        signed({**report(record_id="PA-5"), "dataset": "khong-co"}, origin="t:0:5"),
        signed(report(record_id="PA-6", location="11,85;106,60", reporter_name="Lê Thị C",
                      reporter_phone="0912345678"),
               principal="xa-loc-thanh-huyen-system", origin="t:0:6"),
        replay,
    ]


def comparable(decided: list[Decided]) -> list[tuple[Any, ...]]:
    """What must be equal whoever decided: each decision (an `Accepted` by its ids, keys and
    versions; a worker's carries no record dict) and the exact messages."""
    out: list[tuple[Any, ...]] = []
    for decision, messages in decided:
        if isinstance(decision, Accepted):
            d: Any = (decision.unit, decision.principal, decision.dataset,
                      decision.source_version, decision.canonical_version, decision.record_id,
                      decision.content_hash, decision.event_id, decision.client_event_id)
        else:
            d = decision
        out.append((d, [tuple(m) for m in messages]))
    return out


async def test_worker_decides_and_builds_exactly_as_the_service_process(
        registry: Registry, ingestor: Ingestor, workers: WorkerDecider) -> None:
    config = decision_config(registry)
    local = LocalDecider(config.deciding(ingestor))
    chunk = mixed_chunk()
    traces = [[("traceparent", b"00-%032x-%016x-01" % (n + 1, n + 1))] for n in range(len(chunk))]
    here = await (await local.request(chunk, NOW, traces))
    there = await (await workers.request(chunk, NOW, traces))
    assert comparable(there) == comparable(here)
    kinds = [type(d).__name__ for d, _ in there]
    assert kinds == ["Accepted", "Rejected", "Rejected", "Rejected", "Rejected", "Accepted",
                     "Rejected"]
    assert isinstance(there[1][0], Rejected) and there[1][0].problems[0].field == "title"
    # The canonical message carries the whole record, decided by the worker.
    canonical = orjson.loads(there[0][1][0][1])
    assert canonical["payload"]["record"]["commune"] == "xa-loc-an"
    # Personal fields: out of the canonical record, on the restricted topic (same bytes).
    personal = [m for m in there[5][1] if ".restricted." in m.topic]
    assert len(personal) == 1 and b"+84912345678" in personal[0].value
    assert b"912345678" not in there[5][1][0].value and b"reporter_ref" in there[5][1][0].value


async def test_chunks_go_round_robin_and_come_back_in_order(workers: WorkerDecider) -> None:
    chunks = [[signed(report(record_id=f"PA-{k}-{n}"), origin=f"t:0:{k}{n}") for n in range(3)]
              for k in range(5)]
    futures = [await workers.request(c, NOW, [[] for _ in c]) for c in chunks]
    assert len(set(workers.pids)) == 2
    for k, future in enumerate(futures):
        decided = await future
        assert [d.record_id for d, _ in decided if isinstance(d, Accepted)] == [
            f"PA-{k}-{n}" for n in range(3)]


async def test_a_lost_worker_fails_its_chunks_and_a_new_one_takes_over(
        workers: WorkerDecider) -> None:
    chunk = [signed(report(record_id=f"PA-{n}"), origin=f"t:0:{n}") for n in range(3000)]
    before = workers.pids
    future = await workers.request(chunk, NOW, [[] for _ in chunk])
    workers._slots[0].process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    with pytest.raises(DecisionWorkerLost):
        await future
    # The next requests start a new worker in the lost one's place; the other one is untouched.
    again = [await workers.request(chunk[:2], NOW, [[], []]) for _ in range(2)]
    assert [len(await f) for f in again] == [2, 2]
    after = workers.pids
    assert after[1] == before[1] and after[0] != before[0]


async def test_workers_exit_when_the_service_closes_them(
        registry: Registry, ingestor: Ingestor) -> None:
    config = decision_config(registry)
    decider = WorkerDecider(config, config.deciding(ingestor))
    await decider.start()
    process = decider._slots[0].process  # type: ignore[union-attr]
    # A worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group): the
    # service finishes its batches first, then closes the worker's input.
    process.send_signal(signal.SIGINT)
    decided = await (await decider.request([signed(report())], NOW, [[]]))
    assert isinstance(decided[0][0], Accepted)
    await decider.close()
    assert process.returncode == 0
    await asyncio.sleep(0)


async def test_a_trickle_is_decided_in_the_service_process(
        registry: Registry, ingestor: Ingestor) -> None:
    config = decision_config(registry)
    decider = WorkerDecider(config, config.deciding(ingestor), in_process_below=3)
    chunk = mixed_chunk()[:2]
    decided = await (await decider.request(chunk, NOW, [[], []]))
    assert decider.pids == []   # no worker was needed (nor started)
    assert comparable(decided) == comparable(config.deciding(ingestor).chunk(chunk, NOW, [[], []]))
    await decider.close()
