"""Operator replay of quarantined inputs after a fix (a grant added, a schema corrected ...).

Reads the quarantine topic from `since`, keeps the copies that match the
filters, and re-publishes their exact bytes and original headers (so the
unit's signature still verifies) to the inbound topic, marked with a replay
header: a replay that is rejected again is answered but not quarantined again
(its original copy is still in quarantine), so nothing loops forever.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from ioc_shared.platform.kafka import make_admin, make_consumer, make_producer

from ingest.messages import (
    H_Q_CODE,
    H_Q_DATASET,
    H_Q_ORIGIN,
    H_Q_UNIT,
    H_REPLAY_ID,
    H_REPLAY_NOTE,
    H_REPLAY_OF,
    QUARANTINE_PREFIX,
)
from ingest.settings import IngestSettings
from ingest.topics import IngestTopics

_REPLAY_HEADERS = (H_REPLAY_ID, H_REPLAY_OF, H_REPLAY_NOTE)


@dataclass(frozen=True)
class ReplayFilter:
    since: datetime
    until: datetime | None = None
    codes: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    datasets: frozenset[str] = frozenset()

    def matches(self, timestamp_ms: int, marks: dict[str, str]) -> bool:
        if self.until is not None and timestamp_ms > self.until.timestamp() * 1000:
            return False
        return ((not self.codes or marks.get(H_Q_CODE, "") in self.codes)
                and (not self.units or marks.get(H_Q_UNIT, "") in self.units)
                and (not self.datasets or marks.get(H_Q_DATASET, "") in self.datasets))


@dataclass
class ReplaySummary:
    replay_id: str
    dry_run: bool
    scanned: int = 0
    replayed: int = 0
    by_code: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"replay_id": self.replay_id, "dry_run": self.dry_run, "scanned": self.scanned,
                "matched": sum(self.by_code.values()), "replayed": self.replayed,
                "by_code": dict(self.by_code)}


def replay_headers(headers: Iterable[tuple[str, bytes]], replay_id: str,
                   note: str) -> list[tuple[str, bytes]]:
    """Original headers without quarantine marks or earlier replay marks, plus this replay's."""
    kept = [(k, v) for k, v in headers
            if not k.startswith(QUARANTINE_PREFIX) and k not in _REPLAY_HEADERS]
    origin = next((v for k, v in headers if k == H_Q_ORIGIN), b"")
    return [*kept, (H_REPLAY_ID, replay_id.encode()), (H_REPLAY_OF, origin),
            (H_REPLAY_NOTE, note.encode()[:500])]


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    # The consumer's metadata only covers topics it subscribed to; ask the admin API.
    admin = make_admin(bootstrap, client_id="ingest-replay")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(TopicPartition(t["topic"], p["partition"]) for t in described
                  if not t.get("error_code") for p in t["partitions"])


async def replay_quarantine(settings: IngestSettings, topics: IngestTopics, selection: ReplayFilter,
                            *, note: str = "", dry_run: bool = False,
                            limit: int | None = None) -> ReplaySummary:
    summary = ReplaySummary(replay_id=uuid.uuid4().hex, dry_run=dry_run)
    consumer = make_consumer(bootstrap=settings.kafka_bootstrap, group_id=None)
    producer = make_producer(settings.kafka_bootstrap, client_id="ingest-replay")
    await consumer.start()
    if not dry_run:
        await producer.start()
    try:
        tps = await _partitions(settings.kafka_bootstrap, topics.quarantine)
        if not tps:
            return summary
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: int(selection.since.timestamp() * 1000)
                                                   for tp in tps})
        ends = await consumer.end_offsets(tps)
        pending = set()
        for tp in tps:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                consumer.seek(tp, start.offset)
                pending.add(tp)
        futures = []
        while pending and (limit is None or summary.replayed < limit):
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    summary.scanned += 1
                    headers = list(rec.headers or ())
                    marks = {k: v.decode("utf-8", "replace") for k, v in headers
                             if k.startswith(QUARANTINE_PREFIX)}
                    if not selection.matches(rec.timestamp, marks):
                        continue
                    if limit is not None and summary.replayed >= limit:
                        break
                    summary.by_code[marks.get(H_Q_CODE, "")] += 1
                    if not dry_run:
                        futures.append(await producer.send(
                            topics.inbound, rec.value, key=rec.key,
                            headers=replay_headers(headers, summary.replay_id, note)))
                    summary.replayed += 1
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if futures:
            await asyncio.gather(*futures)
        if dry_run:
            summary.replayed = 0
    finally:
        await consumer.stop()
        if not dry_run:
            await producer.stop()
    return summary
