"""Consumption of `ioc.sync-province.status.v1`: a batch of status snapshots -> the
province-sync rollup, in one transaction with the batch's event-id claims.

The figures come from `domain/province_sync.py` (differences of consecutive snapshots);
a record that is not a usable status snapshot is logged and skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.platform.consumer import Delivery
from ioc_shared.platform.idempotency import claim_events
from ioc_shared.platform.logging import get_logger

from reporting.domain import province_sync as ps
from reporting.repository import SyncStatusRepository

log = get_logger(__name__)

CONSUMER = "reporting-province-sync"


class SyncStatusHandler:
    def __init__(self, pool: asyncpg.Pool, repo: SyncStatusRepository) -> None:
        self.pool = pool
        self.repo = repo

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        snapshots: dict[uuid.UUID, ps.Snapshot] = {}
        for d in deliveries:
            try:
                event = Envelope.model_validate_json(d.value or b"")
            except ValueError:
                event = None
            if event is None or event.type != ps.STATUS_TYPE:
                log.warning("province sync: not a status event, skipped", topic=d.topic,
                            partition=d.partition, offset=d.offset)
                continue
            try:
                snapshots.setdefault(event.event_id, ps.snapshot_of(event.payload,
                                                                    event.occurred_at))
            except ps.StatusError as exc:
                log.warning("province sync: status unusable, skipped",
                            event_id=str(event.event_id), problem=str(exc))
        if not snapshots:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await claim_events(conn, self.repo.s, CONSUMER, list(snapshots))
            todo = [s for i, s in snapshots.items() if i in fresh]
            if not todo:
                return
            keys = {(s.target, s.stream) for s in todo} | {(s.target, ps.TARGET_STREAM)
                                                          for s in todo}
            stored = {k: ps.Baseline(at, counters, positions)
                      for k, (at, counters, positions) in
                      (await self.repo.load_baselines(conn, list(keys))).items()}
            out = ps.fold(stored, todo)
            baselines: dict[tuple[str, str], tuple[datetime, dict[str, int], dict[str, int]]] = {
                k: (b.occurred_at, b.counters, b.positions) for k, b in out.baselines.items()}
            await self.repo.save(conn, baselines,
                                 {k: (d.sent, d.parked, d.last_synced_at)
                                  for k, d in out.days.items()},
                                 out.failures)
