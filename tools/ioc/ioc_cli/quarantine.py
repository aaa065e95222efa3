"""`ioc quarantine list`: what ingest quarantined, by its marks (never the raw bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from ingest.messages import H_Q_AT, H_Q_CODE, H_Q_DATASET, H_Q_EVENT_ID, H_Q_ORIGIN, H_Q_UNIT
from ioc_shared.platform.kafka import make_consumer

from ioc_cli.brokers import partitions_of
from ioc_cli.errors import kafka_unreachable

MARKS = {H_Q_CODE: "code", H_Q_UNIT: "unit", H_Q_DATASET: "dataset", H_Q_ORIGIN: "origin",
         H_Q_EVENT_ID: "event_id", H_Q_AT: "quarantined_at"}


async def list_quarantined(bootstrap: str, topic: str, since: datetime, *, limit: int = 200,
                           progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Quarantined copies from `since` on, oldest first, at most `limit`; `progress(done, total)`."""
    partitions = await partitions_of(bootstrap, topic)
    consumer = make_consumer(bootstrap=bootstrap, group_id=None, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(consumer.start(), 5)
    except Exception as exc:
        await consumer.stop()
        raise kafka_unreachable(bootstrap, exc) from None
    found: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        ends = await consumer.end_offsets(tps)
        pending = {}
        for tp in tps:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                consumer.seek(tp, start.offset)
                pending[tp] = start.offset
        total = sum(ends[tp] - first for tp, first in pending.items())
        done = 0
        while pending and len(found) < limit:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= ends[tp]:
                        break
                    done += 1
                    marks = {MARKS[k]: v.decode("utf-8", "replace") for k, v in rec.headers or ()
                             if k in MARKS}
                    found.append({"partition": tp.partition, "offset": rec.offset,
                                  "at": datetime.fromtimestamp(rec.timestamp / 1000, UTC), **marks})
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    del pending[tp]
            if progress is not None:
                progress(done, total)
    finally:
        await consumer.stop()
    found.sort(key=lambda r: r["at"])
    return found[:limit]
