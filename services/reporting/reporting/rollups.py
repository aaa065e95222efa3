"""Rollup consumption: a batch of raw records -> rollup deltas, in one transaction.

`RollupHandler.handle(deliveries)` claims the batch's event ids and applies every
fresh event's effect in the same PostgreSQL transaction: a redelivered batch (crash
between this commit and the offset commit) finds its ids claimed and changes nothing.
Records that cannot be used (not an envelope, unknown type, bad fields) are logged and
skipped: they never stop a partition.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson
from ioc_shared.calendar_vn import WorkingCalendar
from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.platform.consumer import Delivery
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.telemetry import context_of, recording
from ioc_shared.registry import Registry
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from reporting.domain import incidents as inc
from reporting.domain import indicators as ind
from reporting.domain.working_time import WorkingTime
from reporting.repository import INCIDENT_STATES, ReportingRepository

log = get_logger(__name__)
_tracer = trace.get_tracer("reporting")

CONSUMER = "reporting-rollups"


def producer_of(event_type: str) -> str:
    """The service that may produce an event of this type: incident events are routing's,
    everything else counted here is ingest's. Inside the check; the broker's WRITE ACLs on
    those topics are what enforce it (deploy/README.md)."""
    return "routing" if event_type.startswith(inc.EVENT_PREFIX) else "ingest"


_ROUTING, _INGEST = b"routing", b"ingest"


def _producer_header(d: Delivery) -> bytes | None:
    """The first producer header's raw value (what `Delivery.header` would decode)."""
    for key, value in d.headers:
        if key == H_PRODUCER:
            return value
    return None


RECORD_ACCEPTED = "ingest.record.accepted"
QUALITY = "ingest.quality.counters"
REJECTED = "ingest.record.rejected"
LATE = "ingest.freshness.late"
# Incident rows per statement while the rest of the batch is folded.
INCIDENT_CHUNK = 250
RECOVERED = "ingest.freshness.recovered"


# The canonical form this system writes; anything else goes through uuid.UUID.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(slots=True)   # not frozen: a frozen __init__ costs 4x, once per record
class Event:
    event_id: str           # canonical lowercase UUID text (cheaper than uuid.UUID per record)
    type: str
    occurred_at: datetime
    payload: dict[str, Any]
    source_unit: str = ""


def parse(value: bytes) -> Event | None:
    try:
        data = orjson.loads(value)
        event_id = data["event_id"]
        if not isinstance(event_id, str) or not _CANONICAL_UUID.fullmatch(event_id):
            event_id = str(uuid.UUID(str(event_id)))
        occurred = datetime.fromisoformat(str(data["occurred_at"]))
        payload = data.get("payload") or {}
        kind = data["type"]
        source_unit = str(data.get("source_unit") or "")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(kind, str) or occurred.tzinfo is None:
        return None
    return Event(event_id, kind, occurred.astimezone(UTC), payload, source_unit)


_KNOWN_STATES = frozenset(INCIDENT_STATES)

Parsed = tuple[str, inc.Transition, dict[str, Any]]   # incident id, transition, its JSON


def _transitions(events: dict[str, Event]) -> dict[str, Parsed]:
    """Event id -> (incident id, transition, its JSON) of the usable incident events
    (the others are logged)."""
    out: dict[str, Parsed] = {}
    for event_id, e in events.items():
        if not e.type.startswith(inc.EVENT_PREFIX):
            continue
        try:
            t = inc.transition_from_event(event_id, e.type, e.payload)
            if t.to_state is not None and t.to_state not in _KNOWN_STATES:
                # Counted per state: a state with no rollup column cannot be counted.
                raise inc.EventError(f"unknown state {t.to_state[:40]!r}")
            out[event_id] = (e.payload["incident_id"], t, t.to_json())
        except (inc.EventError, ValueError, TypeError, AttributeError, KeyError) as exc:
            log.warning("rollups: event unusable, skipped", event_id=event_id, type=e.type,
                        problem=str(exc))
    return out


def _day(value: Any, fallback: datetime) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10]) if len(value) == 10 else \
                inc.local_day(datetime.fromisoformat(value))
        except ValueError:
            pass
    return inc.local_day(fallback)


class RollupHandler:
    def __init__(self, pool: asyncpg.Pool, repo: ReportingRepository, registry: Registry,
                 calendar: WorkingCalendar) -> None:
        self.pool = pool
        self.repo = repo
        self.registry = registry
        self.calendar = calendar
        self.working_time = WorkingTime(calendar)   # the same durations, days kept
        self.indicator_datasets = {d.id for d in registry.datasets.values() if not d.incident}
        # The last batch's transaction (its last writes and COMMIT may still be running).
        self._committing: asyncio.Future[None] | None = None

    async def handle(self, deliveries: Sequence[Delivery]) -> Awaitable[None] | None:
        """Apply the batch; returns once its last statements and COMMIT are on their way,
        with the future of that COMMIT (the kit's consumer commits the batch's offsets
        only after it: `DurableConsumer(pipelined=True)` takes the next batch meanwhile,
        the plain one awaits it). The next batch's claim waits for this COMMIT (it may
        load the same incidents), its parse does not.

        In the batch's span (FastStream's; its queries are children). With an exporter,
        each event counted gets a span in its own trace too, once committed, linked to the
        batch's (so an incident's trace shows where each of its events was counted)."""
        read = self._read(deliveries)
        if read is None:
            return None
        handed_over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        work = asyncio.ensure_future(self._transaction(*read, self._committing, handed_over))
        try:
            await asyncio.wait([handed_over, work], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        if work.done():
            work.result()   # raises what the transaction raised
        self._committing = work
        return work

    def _read(self, deliveries: Sequence[Delivery]
              ) -> tuple[dict[str, Event], set[str], dict[str, str]] | None:
        """The batch's usable events by id, their incident ids and trace contexts (None if
        there is nothing to count)."""
        traces: dict[str, str] = {}
        traced = recording()   # read only when spans go somewhere
        events: dict[str, Event] = {}
        incident_ids: set[str] = set()
        for d in deliveries:
            event = parse(d.value or b"")
            if event is None:
                log.warning("rollups: not an envelope, skipped", topic=d.topic,
                            partition=d.partition, offset=d.offset)
                continue
            is_incident = event.type.startswith(inc.EVENT_PREFIX)
            # Raw bytes: decoding every record's headers was a few % of the batch.
            if _producer_header(d) != (_ROUTING if is_incident else _INGEST):
                # A unit system that can write the topic must not be able to forge figures.
                log.error("rollups: event not from the service that produces it, skipped",
                          topic=d.topic, partition=d.partition, offset=d.offset,
                          event_type=event.type[:80], expected=producer_of(event.type))
                continue
            if event.event_id not in events:
                events[event.event_id] = event
                incident_id = event.payload.get("incident_id") if is_incident else None
                if isinstance(incident_id, str):
                    incident_ids.add(incident_id)
            traceparent = d.header("traceparent") if traced else None
            if traceparent:
                traces.setdefault(event.event_id, traceparent)
        return (events, incident_ids, traces) if events else None

    async def _transaction(self, events: dict[str, Event], incident_ids: set[str],
                           traces: dict[str, str], previous: asyncio.Future[None] | None,
                           handed_over: asyncio.Future[None]) -> None:
        """Claim + load, fold, writes, COMMIT; `handed_over` is set before the last writes."""
        transitions: dict[str, Parsed] | None = None
        if previous is not None and not previous.done():
            transitions = _transitions(events)   # while the previous batch commits
            # Its failure is the consumer's to settle (it works that batch again).
            await asyncio.wait([previous])
        todo: list[Event] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                # Round trips: BEGIN; claim + load; the writes; COMMIT.
                loading = asyncio.ensure_future(self.repo.claim_and_load(
                    conn, CONSUMER, list(events), list(incident_ids)))
                await asyncio.sleep(0)   # the query is on its way: read the transitions meanwhile
                try:
                    if transitions is None:
                        transitions = _transitions(events)
                finally:
                    fresh, stored = await loading
                todo = [e for eid, e in events.items() if eid in fresh]
                writes = await self._apply(conn, todo, stored, transitions) if todo else None
                if not handed_over.done():
                    handed_over.set_result(None)   # the rest is PostgreSQL's
                if writes is not None:
                    await writes
        finally:
            if not handed_over.done():
                handed_over.set_result(None)
        counted = [(e, traces[e.event_id]) for e in todo if e.event_id in traces]
        if counted and recording():
            self._spans(counted)

    @staticmethod
    def _spans(counted: list[tuple[Event, str]]) -> None:
        batch = trace.get_current_span()
        link = [Link(batch.get_span_context())] if batch.get_span_context().is_valid else []
        started = getattr(batch, "start_time", None)   # the batch's time, its commit included
        for event, traceparent in counted:
            parent = context_of(traceparent)
            if parent is None:
                continue   # no trace of its own to show it in
            _tracer.start_span("reporting.rollup", context=parent,
                               kind=SpanKind.CONSUMER, links=link, start_time=started,
                               attributes={"ioc.event_id": event.event_id,
                                           "ioc.event_type": event.type}).end()

    async def _apply(self, conn: asyncpg.Connection, todo: list[Event],
                     stored: dict[str, tuple[list[Any], list[Any]]],
                     parsed: dict[str, Parsed]) -> Coroutine[Any, Any, None]:
        """Folds and writes the batch but its last statements, returned to be awaited."""
        transitions: dict[str, list[Parsed]] = defaultdict(list)
        quality: list[tuple[date, str, str, int, dict[str, int], datetime]] = []
        rejections: dict[tuple[date, str, str, str], int] = defaultdict(int)
        freshness: dict[tuple[date, str, str], tuple[int, int]] = {}
        records: dict[tuple[str, str], tuple[Event, ind.IndicatorContribution]] = {}
        for e in todo:
            try:
                if e.type.startswith(inc.EVENT_PREFIX):
                    found = parsed.get(e.event_id)
                    if found is not None:    # unusable ones were logged by _transitions
                        transitions[found[0]].append(found)
                elif e.type == QUALITY:
                    p = e.payload
                    rejected = {str(k): int(v) for k, v in (p.get("rejected") or {}).items()}
                    as_of = datetime.fromisoformat(str(p.get("as_of") or e.occurred_at.isoformat()))
                    if as_of.tzinfo is None:
                        raise ValueError("as_of without offset")
                    quality.append((_day(p.get("day"), e.occurred_at), str(p.get("unit") or ""),
                                    str(p.get("dataset") or ""), int(p.get("accepted") or 0),
                                    rejected, as_of))
                elif e.type == REJECTED:
                    p = e.payload
                    rejections[(inc.local_day(e.occurred_at), str(p.get("unit") or ""),
                                str(p.get("dataset") or ""), str(p.get("code") or ""))] += 1
                elif e.type in (LATE, RECOVERED):
                    p = e.payload
                    key = (_day(p.get("detected_at"), e.occurred_at), str(p.get("unit") or ""),
                           str(p.get("dataset") or ""))
                    late, recovered = freshness.get(key, (0, 0))
                    freshness[key] = (late + (e.type == LATE), recovered + (e.type == RECOVERED))
                elif e.type == RECORD_ACCEPTED:
                    self._record(e, records)
            except (inc.EventError, ind.RecordError, ValueError, TypeError, AttributeError,
                    KeyError) as exc:
                log.warning("rollups: event unusable, skipped", event_id=e.event_id,
                            type=e.type, problem=str(exc))
        rows, deltas = await self._incidents(conn, transitions, stored)

        async def last_writes() -> None:
            await self.repo.save_incidents(conn, rows, deltas)
            await self.repo.upsert_quality(conn, quality)
            await self.repo.add_rejections(conn, rejections)
            await self.repo.add_freshness(conn, freshness)
            if records:
                await self._indicators(conn, records)

        return last_writes()

    def _record(self, e: Event,
                records: dict[tuple[str, str], tuple[Event, ind.IndicatorContribution]]) -> None:
        dataset = str(e.payload.get("dataset") or "")
        record = e.payload.get("record")
        if dataset not in self.indicator_datasets or not isinstance(record, dict):
            return
        record_id = str(record.get(self.registry.datasets[dataset].record_id_field) or "")
        if not record_id:
            raise ind.RecordError("no record id")
        contribution = ind.contribution_of(dataset, record)
        # Record ids are the publishing unit's own: two units may use the same one.
        key = (dataset, f"{e.source_unit}/{record_id}")
        known = records.get(key)
        if known is None or (e.occurred_at, e.event_id) > (known[0].occurred_at, known[0].event_id):
            records[key] = (e, contribution)

    async def _incidents(self, conn: asyncpg.Connection,
                         transitions: dict[str, list[Parsed]],
                         stored: dict[str, tuple[list[Any], list[Any]]]
                         ) -> tuple[list[dict[str, Any]], inc.Contribution]:
        """Incident rows saved but the last chunk; returns it and the batch's deltas."""
        deltas: inc.Contribution = defaultdict(int)
        rows: list[dict[str, Any]] = []
        # Incident rows go in chunks while the next ones are folded (PostgreSQL works
        # while Python does); the deltas go last, in one sorted statement. Sorted
        # incidents: two members handling the same records lock the rows in one order.
        saving: asyncio.Future[None] | None = None
        try:
            for incident_id in sorted(transitions):
                rows.append(self._fold(incident_id, transitions[incident_id], stored, deltas))
                if len(rows) >= INCIDENT_CHUNK:
                    if saving is not None:
                        await saving
                    saving = asyncio.ensure_future(self.repo.save_incidents(conn, rows, {}))
                    await asyncio.sleep(0)   # sent: fold the next chunk meanwhile
                    rows = []
        finally:
            if saving is not None:
                await saving
        return rows, {k: n for k, n in deltas.items() if n}

    def _fold(self, incident_id: str, new: list[Parsed],
              stored: dict[str, tuple[list[Any], list[Any]]],
              deltas: inc.Contribution) -> dict[str, Any]:
        """The incident's row after `new`; its change of contribution added to `deltas`."""
        old_list, old_contribution = stored.get(incident_id, ([], []))
        merged = {t["id"]: inc.Transition.from_json(t) for t in old_list}
        as_json = list(old_list)
        for _, t, t_json in new:
            if t.event_id not in merged:
                merged[t.event_id] = t
                as_json.append(t_json)
        summary = inc.fold(incident_id, list(merged.values()), self.working_time)
        for key, n in inc.delta(inc.contribution_from_json(old_contribution),
                                summary.contribution).items():
            deltas[key] += n
        return {
            "incident_id": incident_id,
            "transitions": as_json,
            "contribution": inc.contribution_to_json(summary.contribution),
            "state": summary.state, "unit": summary.unit, "category": summary.category,
            "commune": summary.commune,
            # Aware datetimes: orjson writes them as RFC 3339.
            "received_at": summary.received_at, "assigned_at": summary.assigned_at,
            "ack_due_at": summary.ack_due_at, "resolve_due_at": summary.resolve_due_at,
            "acknowledged": summary.acknowledged,
        }

    async def _indicators(self, conn: asyncpg.Connection,
                          records: dict[tuple[str, str], tuple[Event, ind.IndicatorContribution]]
                          ) -> None:
        stored = await self.repo.load_indicator_records(conn, sorted(records))
        deltas: dict[ind.IndicatorKey, tuple[int, float]] = {}
        saves = []
        for key, (e, contribution) in records.items():
            old = stored.get(key)
            if old is not None and (old[0], old[1]) >= (e.occurred_at, e.event_id):
                continue  # an older version arriving late changes nothing
            previous = ind.from_json(old[2]) if old is not None else {}
            for k, (n, t) in ind.indicator_delta(previous, contribution).items():
                n0, t0 = deltas.get(k, (0, 0.0))
                deltas[k] = (n0 + n, t0 + t)
            saves.append((key[0], key[1], e.occurred_at, e.event_id, ind.to_json(contribution)))
        await self.repo.save_indicator_records(conn, saves)
        await self.repo.add_indicator_deltas(conn, deltas)
