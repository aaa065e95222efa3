"""Periodic rounds backed by PostgreSQL: freshness checks and quality counter snapshots.

Each round runs in one transaction under a transaction-scoped advisory lock,
so two instances never both run it; its events go through the transactional
outbox with the state change (a crash cannot emit without recording or record
without emitting).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioc_shared.contracts.envelope import Envelope, deterministic_event_id
from ioc_shared.platform.kafka import envelope_headers
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import enqueue_many
from ioc_shared.registry import ID_PATTERN, Cadence, Registry

from ingest.domain import FreshnessPolicy, Transition, assess, expected_publishers
from ingest.domain.normalize import iso_utc
from ingest.repository import IngestRepository

log = get_logger(__name__)
QUALITY_TYPE = "ingest.quality.counters"
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FreshnessChecker:
    def __init__(self, repository: IngestRepository, registry: Registry, topic: str,
                 policy: FreshnessPolicy, *, clock: Clock = _utc_now) -> None:
        self.repository = repository
        self.registry = registry
        self.topic = topic
        self.policy = policy
        self.clock = clock
        self._pairs = expected_publishers(registry)
        self._cadences: dict[str, Cadence] = {d.id: d.cadence for d in registry.datasets.values()}

    async def check_once(self) -> list[Transition]:
        """One round: declare lateness and recoveries; returns the transitions emitted."""
        now = self.clock()
        repo = self.repository
        async with repo.pool.acquire() as conn, conn.transaction():
            if not await repo.try_round_lock(conn, "freshness"):
                return []
            await repo.watch(conn, self._pairs, now)
            expected = set(self._pairs)
            states = [s for s in await repo.freshness_states(conn, self._cadences)
                      if (s.unit, s.dataset) in expected]
            transitions = [t for s in states if (t := assess(s, now, self.policy)) is not None]
            messages = []
            for t in transitions:
                if t.kind == "late":
                    assert t.deadline is not None
                    await repo.mark_late(conn, t.state, now, t.deadline)
                else:
                    await repo.mark_recovered(conn, t.state, now)
                envelope = Envelope(event_id=t.event_id, type=t.event_type,
                                    source_unit=self.registry.centre.unit,
                                    subject=f"{t.state.unit}/{t.state.dataset}", occurred_at=now,
                                    produced_at=now, payload=t.payload())
                messages.append((self.topic, envelope, t.state.dataset.encode(),
                                 envelope_headers(envelope)))
            await enqueue_many(conn, repo.schema, messages)
        for t in transitions:
            log.info("freshness " + t.kind, unit=t.state.unit, dataset=t.state.dataset)
        return transitions


class QualityPublisher:
    """Publishes cumulative per-day counters of each (unit, dataset) that changed."""

    def __init__(self, repository: IngestRepository, registry: Registry, topic: str, *,
                 clock: Clock = _utc_now) -> None:
        self.repository = repository
        self.registry = registry
        self.topic = topic
        self.clock = clock

    async def publish_once(self) -> int:
        now = self.clock()
        repo = self.repository
        async with repo.pool.acquire() as conn, conn.transaction():
            if not await repo.try_round_lock(conn, "quality"):
                return 0
            rows = await repo.changed_counters(conn)
            groups: dict[tuple[date, str, str], list[dict[str, Any]]] = defaultdict(list)
            for r in rows:
                groups[(r["day"], r["unit"], r["dataset"])].append(r)
            messages = [self._message(key, group) for key, group in groups.items()]
            await enqueue_many(conn, repo.schema, messages)
            await repo.mark_counters_published(conn, groups, now)
        return len(messages)

    def _message(self, key: tuple[date, str, str],
                 rows: list[dict[str, Any]]) -> tuple[str, Envelope, bytes, dict[str, str]]:
        day, unit, dataset = key
        unit, dataset = _id_or_unknown(unit), _id_or_unknown(dataset)
        as_of = max(r["updated_at"] for r in rows)
        rejected = {r["code"]: r["n"] for r in rows if r["outcome"] == "rejected"}
        accepted = sum(r["n"] for r in rows if r["outcome"] == "accepted")
        envelope = Envelope(
            event_id=deterministic_event_id(QUALITY_TYPE, day.isoformat(), unit, dataset, iso_utc(as_of)),
            type=QUALITY_TYPE, source_unit=self.registry.centre.unit,
            subject=f"{unit or 'unknown'}/{dataset or 'unknown'}/{day.isoformat()}",
            occurred_at=as_of, payload={
                # `unknown`: an unverified sender, or a dataset not in the registry.
                "day": day.isoformat(), "unit": _known(unit), "dataset": _known(dataset),
                "accepted": accepted, "rejected": rejected, "rejected_total": sum(rejected.values()),
                "as_of": iso_utc(as_of), "cumulative": True})
        return (self.topic, envelope, (unit or "unknown").encode(), envelope_headers(envelope))


def _id_or_unknown(value: str) -> str:
    """Counters hold registry ids or `unknown`; anything else (an old row, a bug) is not
    allowed to break the round on the envelope's subject limit."""
    return value if _REGISTRY_ID.match(value) else "unknown"


def _known(value: str) -> str | None:
    return None if value in ("", "unknown") else value


_REGISTRY_ID = re.compile(ID_PATTERN)


async def every(interval_s: float, action: Callable[[], Any], name: str) -> None:
    """Run `action` forever every `interval_s`; a failed round is logged and retried next time."""
    while True:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be briefly unavailable: try next round
            log.warning(f"{name} round failed", error=repr(exc))
        await asyncio.sleep(interval_s)


def policy_from(registry: Registry, continuous_s: float, grace_s: float) -> FreshnessPolicy:
    return FreshnessPolicy(local=ZoneInfo(registry.centre.timezone),
                           continuous_after=timedelta(seconds=continuous_s),
                           grace=timedelta(seconds=grace_s))
