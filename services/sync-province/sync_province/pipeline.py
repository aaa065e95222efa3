"""One pipeline per target: district topics -> grants -> the province, in order per key.

The pipeline reads the district cluster with its own consumer (no group): positions
belong to the target (the cursor topic in the province's transaction, or the PostgreSQL
cursor moved with the share log), so a group's committed offsets would be a second,
disagreeing truth. It holds one poll at a time: while the province is unreachable the
backlog stays in Kafka, and the same batch is retried until it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from ioc_shared.platform.kafka import make_consumer
from ioc_shared.platform.logging import get_logger
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from sync_province.domain import Batch, Figures, Outgoing, Rule, Stream, day_bounds_ms, make_batch
from sync_province.grants_watch import RegistryWatcher
from sync_province.repository import Repository
from sync_province.targets import Target, Unreachable

log = get_logger(__name__)

# The streams that should leave now and the partition count of their source topics.
Discover = Callable[[], Awaitable[tuple[list[Stream], dict[str, int]]]]


@dataclass(slots=True)
class PartitionProgress:
    next_offset: int = 0
    end_offset: int = 0
    last_synced_at: float | None = None
    last_record_ms: int | None = None
    oldest_unsynced_ms: int | None = None


@dataclass(slots=True)
class Progress:
    partitions: dict[tuple[str, int], PartitionProgress] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    parked: dict[str, int] = field(default_factory=dict)

    def of(self, topic: str, partition: int) -> PartitionProgress:
        return self.partitions.setdefault((topic, partition), PartitionProgress())


class Pipeline:
    def __init__(self, target: Target, streams: Sequence[Stream], partitions: dict[str, int], *,
                 district_bootstrap: str,
                 district: str, repo: Repository, grants: RegistryWatcher,
                 require_producer: str | None, forwarded_types: frozenset[str],
                 batch_records: int, retry_max_wait_s: float, registry_check_s: float,
                 discover: Discover | None = None) -> None:
        self.target = target
        self.streams = list(streams)
        self._by_topic = {s.source_topic: s for s in streams}
        self._partitions = partitions        # source topic -> partition count
        self._bootstrap = district_bootstrap
        self._district = district
        self.repo = repo
        self.grants = grants
        self._require_producer = require_producer
        self._forwarded = forwarded_types
        self._batch_records = batch_records
        self._max_wait = retry_max_wait_s
        self._registry_check_s = registry_check_s
        self.progress = Progress()
        self.paused: set[str] = set()
        self.registry_generation = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        # The streams as the registry has them now (a dataset newly flagged and granted is
        # added while running); looked at again whenever the registry's generation moves.
        self._discover = discover
        self._streams_generation = grants.generation
        self._discover_not_before = 0.0
        self._not_before = 0.0       # the target's Retry-After, for all lanes
        # Where drift found by reconciliation is told (the service publishes an event).
        self.drift_sink: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    # --- rules --------------------------------------------------------------------
    def rule(self, stream: Stream) -> Rule:
        if stream.dataset is None:
            return Rule(None, forwarded_types=self._forwarded)
        return Rule(self.grants.projection(stream.dataset), self._require_producer)

    def _batches(self, polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> list[Batch]:
        rules = {s.name: self.rule(s) for s in self.streams}
        return [make_batch(records, self._by_topic[tp.topic], rules[self._by_topic[tp.topic].name],
                           self._district)
                for tp, records in polled.items() if records]

    # --- retries ----------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_exponential_jitter(initial=0.2, max=self._max_wait, jitter=0.5)(state)
        if isinstance(exc, Unreachable) and exc.retry_after_s is not None:
            # Retry-After is for this client, not one request: every lane holds back.
            self._not_before = max(self._not_before, time.monotonic() + exc.retry_after_s)
            return max(exc.retry_after_s, min(backoff, exc.retry_after_s + 1.0))
        return float(backoff)

    async def _pending(self, batches: list[Batch]) -> list[Batch]:
        """After a failure, the batches not yet committed: a commit whose answer was lost may
        have happened (read back the target's own positions, read_committed)."""
        if not self.target.holds_positions:
            return batches
        positions = await self.target.positions()
        return [b for b in batches
                if positions.get((b.stream.source_topic, b.partition), -1) < b.next_offset]

    def _rejudged(self, batches: list[Batch], judged: int) -> list[Batch]:
        """The same records judged by the grants in force now (a grant revoked while the
        province was away stops them too); `judged`: the registry generation they were
        judged by."""
        self.grants.check()
        self.registry_generation = self.grants.generation
        if judged == self.grants.generation:
            return batches
        only = {o.event_id for b in batches for o in b.outgoing}
        out = []
        for b in batches:
            again = make_batch(b.source, b.stream, self.rule(b.stream), self._district)
            again.outgoing = [o for o in again.outgoing if o.event_id in only]
            out.append(again)
        return out

    async def deliver(self, batches: list[Batch], *, kind: str = "ship",
                      record_positions: bool = True) -> None:
        """Deliver until the province took them (retrying for as long as it takes).

        A transactional target takes the poll in one delivery. Otherwise each source
        partition is a lane of its own: lanes go concurrently (their cursors are
        independent), the batches of one lane one after the other (order per key)."""
        if self.target.transactional:
            await self._deliver_group(batches, kind, record_positions)
            return
        lanes: dict[tuple[str, int], list[Batch]] = {}
        for b in batches:
            lanes.setdefault((b.stream.source_topic, b.partition), []).append(b)

        async def lane(queue: list[Batch]) -> None:
            for b in queue:
                await self._deliver_group([b], kind, record_positions)

        if len(lanes) == 1:
            await lane(next(iter(lanes.values())))
            return
        try:
            async with asyncio.TaskGroup() as group:
                for queue in lanes.values():
                    group.create_task(lane(queue))
        except ExceptionGroup as failed:     # callers see the error itself, as before
            raise failed.exceptions[0] from None

    async def _deliver_group(self, group: list[Batch], kind: str, record_positions: bool) -> None:
        # The PostgreSQL cursor: the authority for targets that cannot hold positions, a
        # hint (for lag while the target is away) for those that do.
        advance = record_positions

        async def confirm(done: list[Batch]) -> None:
            await self.repo.confirm_delivery(self.target.name, done, advance_cursor=advance,
                                             kind=kind)

        oldest = min((o.timestamp_ms for b in group for o in b.outgoing), default=None)
        judged = self.registry_generation      # what the batches were shaped by
        first = True
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(Unreachable),
                                           wait=self._wait, reraise=True):
            with attempt:
                held = self._not_before - time.monotonic()
                if held > 0:
                    await asyncio.sleep(held)
                if not first:
                    # A re-send is below the positions by design: only shipments are
                    # checked against what the target already committed.
                    pending = await self._pending(group) if record_positions else group
                    group = self._rejudged(pending, judged)
                    judged = self.registry_generation
                first = False
                for b in group:
                    self.progress.of(b.stream.source_topic, b.partition).oldest_unsynced_ms = oldest
                if attempt.retry_state.attempt_number in (2, 10) or \
                        attempt.retry_state.attempt_number % 50 == 0:
                    log.warning("province unreachable, retrying", target=self.target.name,
                                attempt=attempt.retry_state.attempt_number,
                                error=self.target.health.last_error)
                refused = await self.target.deliver(group, confirm,
                                                    record_positions=record_positions)
        for refusal in refused:
            parked = await self.repo.park(self.target.name, refusal.batch, refusal.status_code,
                                          refusal.answer, advance_cursor=advance)
            name = refusal.batch.stream.name
            self.progress.parked[name] = self.progress.parked.get(name, 0) + 1
            # The alert: an operator must look at what the province refused and why.
            log.error("ALERT province refused a batch: parked", target=self.target.name,
                      stream=name, parked_id=parked, status=refusal.status_code,
                      first_offset=refusal.batch.first_offset,
                      next_offset=refusal.batch.next_offset, answer=refusal.answer[:300])
        if kind == "ship":
            self._advanced(group)

    def _advanced(self, batches: list[Batch]) -> None:
        now = time.time()
        for b in batches:
            p = self.progress.of(b.stream.source_topic, b.partition)
            p.next_offset = max(p.next_offset, b.next_offset)
            p.last_synced_at, p.oldest_unsynced_ms = now, None
            if b.outgoing:
                p.last_record_ms = b.outgoing[-1].timestamp_ms
            self.progress.sent[b.stream.name] = self.progress.sent.get(b.stream.name, 0) + len(b.outgoing)
            skipped = self.progress.skipped.setdefault(b.stream.name, {})
            for reason, n in b.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n

    # --- the loop -----------------------------------------------------------------------
    async def _connect(self) -> dict[tuple[str, int], int]:
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(Unreachable),
                                           wait=self._wait, reraise=True):
            with attempt:
                try:
                    await self.target.start()
                    if self.target.holds_positions:
                        return await self.target.positions()
                except Unreachable as exc:
                    self.target.health.failed(exc.reason)
                    log.warning("province not reachable yet", target=self.target.name,
                                error=exc.reason, attempt=attempt.retry_state.attempt_number)
                    await self.target.stop()
                    raise
        return await self.repo.cursor.load(self.repo.pool, self.target.name)

    def _consumer_for(self) -> AIOKafkaConsumer:
        return make_consumer(bootstrap=self._bootstrap, group_id=None,
                             isolation_level="read_committed",
                             auto_offset_reset="earliest", max_partition_fetch_bytes=1 << 20,
                             client_id=f"sync-province-{self.target.name}")

    def _partitions_of_streams(self) -> list[TopicPartition]:
        return [TopicPartition(stream.source_topic, p) for stream in self.streams
                for p in range(self._partitions.get(stream.source_topic, 0))]

    async def _assign(self, consumer: AIOKafkaConsumer, positions: dict[tuple[str, int], int]
                      ) -> list[TopicPartition]:
        tps = self._partitions_of_streams()
        consumer.assign(tps)
        await self._seek(consumer, tps, positions)
        return tps

    async def _seek(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                    positions: dict[tuple[str, int], int]) -> None:
        """Each partition at the target's position, or at its beginning if it has none."""
        beginnings = await consumer.beginning_offsets(tps) if tps else {}
        for tp in tps:
            start = positions.get((tp.topic, tp.partition))
            if start is None:
                start = beginnings[tp]
            elif start < beginnings[tp]:
                # Retention deleted records before they left: say it, never skip silently.
                log.error("ALERT records deleted by retention before they reached the province",
                          target=self.target.name, topic=tp.topic, partition=tp.partition,
                          lost_from=start, lost_to=beginnings[tp])
                start = beginnings[tp]
            consumer.seek(tp, start)
            self.progress.of(tp.topic, tp.partition).next_offset = start

    async def _positions_now(self) -> dict[tuple[str, int], int]:
        if self.target.holds_positions:
            return await self.target.positions()
        return await self.repo.cursor.load(self.repo.pool, self.target.name)

    async def _add_new_streams(self, consumer: AIOKafkaConsumer) -> None:
        """A dataset flagged `shared_with_province` since start: read it from the target's
        position for it, or from its beginning (what a restart would do)."""
        generation = self.grants.generation
        if self._discover is None or generation == self._streams_generation or \
                time.monotonic() < self._discover_not_before:
            return
        found, partitions = await self._discover()
        new = [s for s in found if s.source_topic not in self._by_topic]
        if new:
            try:
                positions = await self._positions_now()
            except Unreachable as exc:
                # The target holds the positions: without them, wait (never guess a start).
                log.warning("new stream waits for the province's positions",
                            target=self.target.name, streams=[s.name for s in new], error=exc.reason)
                self._discover_not_before = time.monotonic() + 5.0
                return
            # Re-assigning forgets every position: keep those of the partitions read so far.
            kept = {tp: await consumer.position(tp) for tp in self._tps}
            self.streams += new
            self._by_topic.update({s.source_topic: s for s in new})
            self._partitions.update({s.source_topic: partitions[s.source_topic] for s in new})
            added = [TopicPartition(s.source_topic, p) for s in new
                     for p in range(self._partitions[s.source_topic])]
            self._tps = [*self._tps, *added]
            consumer.assign(self._tps)
            for tp, offset in kept.items():
                consumer.seek(tp, offset)
            await self._seek(consumer, added, positions)
            log.info("new streams forwarded", target=self.target.name,
                     streams=[s.name for s in new], partitions=len(added))
        self._streams_generation = generation

    async def run(self) -> None:
        consumer = self._consumer = self._consumer_for()
        await consumer.start()
        try:
            # Last positions known here, so lag shows while the target is still away; for
            # the Kafka target the authority is its cursor topic, read once it answers.
            # (Not assigned yet: one assignment, one seek, from the authority.)
            hint = await self.repo.cursor.load(self.repo.pool, self.target.name)
            self._tps = self._partitions_of_streams()
            for tp in self._tps:
                self.progress.of(tp.topic, tp.partition).next_offset = hint.get(
                    (tp.topic, tp.partition), 0)
            positions = await self._connect()
            self._tps = await self._assign(consumer, positions)
            log.info("pipeline started", target=self.target.name, partitions=len(self._tps),
                     positions=len(positions))
            last_check = 0.0
            while True:
                now = time.monotonic()
                if now - last_check >= self._registry_check_s:
                    last_check = now
                    await self._controls(consumer)
                polled = await consumer.getmany(timeout_ms=200, max_records=self._batch_records)
                if not polled:
                    continue
                # The registry is checked right before the records are judged.
                self.grants.check()
                self.registry_generation = self.grants.generation
                await self.deliver(self._batches(polled))
        finally:
            self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.target.stop()

    async def _controls(self, consumer: AIOKafkaConsumer) -> None:
        self.grants.check()
        self.registry_generation = self.grants.generation
        await self._add_new_streams(consumer)
        tps = self._tps
        switches = await self.repo.paused()
        paused = {s.name for s in self.streams
                  if {(self.target.name, s.name), ("*", s.name), (self.target.name, "*"),
                      ("*", "*")} & switches}
        if paused != self.paused:
            log.info("paused streams changed", target=self.target.name, paused=sorted(paused))
        self.paused = paused
        stop = [tp for tp in tps if self._by_topic[tp.topic].name in paused]
        go = [tp for tp in tps if self._by_topic[tp.topic].name not in paused]
        if stop:
            consumer.pause(*stop)
        if go:
            consumer.resume(*go)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                self.progress.of(tp.topic, tp.partition).end_offset = hw
        for request in await self.repo.pending_requests(self.target.name):
            stream = next((s for s in self.streams if s.name == request["stream"]), None)
            if stream is None:
                await self.repo.finish_request(request["id"], {"error": "unknown stream"})
                continue
            if request["kind"] == "resend":
                result = await self.resend(stream, request["from_ms"], request["to_ms"])
            else:
                result = await self.reconcile(stream, date.fromisoformat(
                    _day_of_request(request["from_ms"])))
                if result.get("drift") and self.drift_sink is not None:
                    log.warning("drift between district and province", **result)
                    await self.drift_sink(result)
            await self.repo.finish_request(request["id"], result)

    # --- ranges: re-send and reconciliation ------------------------------------------------
    async def read_range(self, stream: Stream, from_ms: int, to_ms: int,
                         only: set[str] | None = None) -> list[Batch]:
        """Batches of `stream`'s records with timestamps in [from_ms, to_ms) that were already
        synced (below the cursor), shaped by the grants in force now."""
        consumer = self._consumer_for()
        await consumer.start()
        batches: list[Batch] = []
        try:
            tps = [TopicPartition(stream.source_topic, p)
                   for p in range(self._partitions.get(stream.source_topic, 0))]
            consumer.assign(tps)
            starts = await consumer.offsets_for_times({tp: from_ms for tp in tps})
            limit: dict[TopicPartition, int] = {}
            for tp in tps:
                found = starts.get(tp)
                synced = self.progress.of(tp.topic, tp.partition).next_offset
                if found is None or found.offset >= synced:
                    continue
                consumer.seek(tp, found.offset)
                limit[tp] = synced
            rule = self.rule(stream)
            while limit:
                polled = await consumer.getmany(*limit, timeout_ms=500, max_records=1000)
                for tp, records in polled.items():
                    keep = [r for r in records if r.offset < limit.get(tp, -1) and r.timestamp < to_ms]
                    if keep:
                        batch = make_batch(keep, stream, rule, self._district)
                        if only is not None:
                            batch.outgoing = [o for o in batch.outgoing if o.event_id in only]
                        batches.append(batch)
                    if len(keep) < len(records):
                        limit.pop(tp, None)
                for tp in list(limit):
                    if await consumer.position(tp) >= limit[tp]:
                        del limit[tp]
        finally:
            await consumer.stop()
        return batches

    async def resend(self, stream: Stream, from_ms: int, to_ms: int,
                     only: set[str] | None = None, kind: str = "resend") -> dict[str, Any]:
        batches = [b for b in await self.read_range(stream, from_ms, to_ms, only) if b.outgoing]
        if batches:
            await self.deliver(batches, kind=kind, record_positions=False)
        sent = sum(len(b.outgoing) for b in batches)
        log.info("range sent again", target=self.target.name, stream=stream.name, records=sent,
                 kind=kind)
        return {"resent": sent}

    async def reconcile(self, stream: Stream, day: date) -> dict[str, Any]:
        """Compare count and checksum of event ids of `day` on both sides; re-send what the
        province lacks. Returns both figures (the drift event carries them)."""
        start, end = day_bounds_ms(day)
        ours_ids = {o.event_id for b in await self.read_range(stream, start, end)
                    for o in b.outgoing}
        try:
            theirs_ids = await self.target.day_event_ids(stream, day)
        except (Unreachable, KafkaError) as exc:
            return {"stream": stream.name, "day": day.isoformat(), "error": str(exc)}
        ours, theirs = Figures.of(ours_ids), Figures.of(theirs_ids)
        missing = ours_ids - theirs_ids
        result: dict[str, Any] = {
            "stream": stream.name, "target": self.target.name, "day": day.isoformat(),
            "district": {"count": ours.count, "checksum": ours.checksum},
            "province": {"count": theirs.count, "checksum": theirs.checksum},
            "drift": ours != theirs, "missing": len(missing),
            "unexpected": len(theirs_ids - ours_ids), "repaired": 0}
        if missing:
            repaired = await self.resend(stream, start, end, only=missing, kind="repair")
            result["repaired"] = repaired["resent"]
        return result

    async def refresh_ends(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        tps = self._tps
        if tps:
            for tp, end in (await consumer.end_offsets(tps)).items():
                self.progress.of(tp.topic, tp.partition).end_offset = end

    def lag(self) -> dict[str, dict[str, float | int | None]]:
        """Per stream: records not yet at the province, and seconds behind."""
        out: dict[str, dict[str, float | int | None]] = {}
        now_ms = time.time() * 1000
        for (topic, _), p in self.progress.partitions.items():
            stream = self._by_topic[topic].name
            entry = out.setdefault(stream, {"records": 0, "seconds": 0.0, "oldest_unsynced_ms": None,
                                            "last_synced_at": None})
            lag = max(0, p.end_offset - p.next_offset)
            entry["records"] = int(entry["records"] or 0) + lag
            if p.oldest_unsynced_ms is not None:
                seconds = max(0.0, (now_ms - p.oldest_unsynced_ms) / 1000)
                entry["seconds"] = max(float(entry["seconds"] or 0.0), seconds)
                old = entry["oldest_unsynced_ms"]
                entry["oldest_unsynced_ms"] = p.oldest_unsynced_ms if old is None else min(
                    int(old), p.oldest_unsynced_ms)
            if p.last_synced_at is not None:
                entry["last_synced_at"] = max(float(entry["last_synced_at"] or 0), p.last_synced_at)
        return out


def _day_of_request(from_ms: int) -> str:
    from sync_province.domain import local_day
    return local_day(from_ms).isoformat()


__all__ = ["Outgoing", "Pipeline"]
