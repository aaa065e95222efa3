"""Orchestration of a batch of submissions: decide, record in PostgreSQL, publish, count.

Order gives at-least-once with idempotent effects: (1) pure decisions,
(2) one PostgreSQL statement claims the dedupe keys (with the delivery's
origin) and counts outcomes, (3) every output is sent and all confirmations
awaited together. Only then does the caller acknowledge the input. A crash
after (2) redelivers the input; its claims are found with the same origin, so
the same canonical events (same ids) are published again rather than rejected.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ioc_shared.platform.telemetry import extract_trace_context
from ioc_shared.registry import Registry
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context
from prometheus_client import CollectorRegistry, Counter, Histogram

from ingest.decider import Decided, Decider, Deciding, LocalDecider
from ingest.domain import Accepted, Code, Decision, Inbound, Ingestor, Rejected, as_duplicate
from ingest.messages import UNKNOWN, Outgoing, TraceHeaders
from ingest.outgoing import Sink, trace_headers
from ingest.repository import Claim, CounterKey, IngestRepository
from ingest.topics import IngestTopics

Status = Literal["accepted", "redelivered", "rejected"]
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(slots=True)
class Outcome:
    inbound: Inbound
    status: Status
    decision: Decision

    @property
    def accepted(self) -> Accepted | None:
        return self.decision if isinstance(self.decision, Accepted) else None

    @property
    def rejected(self) -> Rejected | None:
        return self.decision if isinstance(self.decision, Rejected) else None


@dataclass(slots=True)
class Submitted:
    """A batch handed to the producer: its outcomes, the broker confirmations to await, and
    the record spans to end once confirmed."""

    outcomes: list[Outcome]
    confirmations: list[Awaitable[Any]]
    spans: list[Span | None]
    started: float


@dataclass(slots=True)
class Prepared:
    """A batch whose decisions were asked for (`IngestPipeline.prepare`), not yet recorded."""

    inbounds: Sequence[Inbound]
    now: datetime
    started: float
    spans: list[Span | None]
    size: int                                   # records per chunk
    chunk_traces: list[list[TraceHeaders]] = field(default_factory=list)
    requested: list[asyncio.Future[list[Decided]]] = field(default_factory=list)

    def discard(self) -> None:
        """Not to be submitted (failed, or dropped at shutdown): end its spans, drop its
        decisions (a failure of theirs is the batch's, reported where it is awaited)."""
        for span in self.spans:
            if span is not None:
                span.end()
        for future in self.requested:
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter("ingest_records", "Submissions by outcome",
                               ["unit", "dataset", "outcome", "code"], registry=registry)
        self.batch_seconds = Histogram(
            "ingest_batch_seconds", "Time to decide, record and publish one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry)
        self.batch_size = Histogram("ingest_batch_records", "Submissions per batch",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500),
                                    registry=registry)


class IngestPipeline:
    def __init__(self, ingestor: Ingestor, repository: IngestRepository, sink: Sink,
                 topics: IngestTopics, *, metrics: IngestMetrics | None = None,
                 tracer: Tracer | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 chunk_records: int = 250, decider: Decider | None = None) -> None:
        self.ingestor = ingestor
        self.registry: Registry = ingestor.registry
        self.repository = repository
        self.sink = sink
        self.topics = topics
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("ingest")
        self.clock = clock
        self.chunk_records = chunk_records
        self.local: tzinfo = ZoneInfo(self.registry.centre.timezone)
        self.deciding = Deciding(ingestor, canonical=topics.canonical, special=topics.special,
                                 rejected=topics.rejected, quarantine=topics.quarantine,
                                 restricted=topics.restricted,
                                 unauthenticated=topics.unauthenticated,
                                 unit_feeds=topics.unit_rejections)
        # Deciding and building: here, or in decision worker processes (`ingest.decider`).
        self.decider: Decider = decider or LocalDecider(self.deciding)

    async def process(self, inbounds: Sequence[Inbound]) -> list[Outcome]:
        """Decide, record and publish a batch; returns once every output is confirmed."""
        return await self.complete(await self.submit(inbounds))

    async def complete(self, submitted: Submitted) -> list[Outcome]:
        """Wait until the broker confirmed every output of a submitted batch (acks=all).

        Raises if any output failed: then nothing of the batch may be acknowledged.
        """
        try:
            if submitted.confirmations:
                await asyncio.gather(*submitted.confirmations)
        finally:
            for span in submitted.spans:
                if span is not None:
                    span.end()
        self._count(submitted.outcomes, time.perf_counter() - submitted.started)
        return submitted.outcomes

    async def prepare(self, inbounds: Sequence[Inbound]) -> Prepared:
        """Start deciding a batch: its time, record spans, and the decisions of its chunks
        asked for (a decision worker starts on them at once; see `submit`)."""
        prepared = Prepared(inbounds, self.clock(), time.perf_counter(),
                            [self._span_for(i) for i in inbounds], max(1, self.chunk_records))
        batch_trace = trace_headers(None)   # the batch consumer span, for untraced records
        traces = [batch_trace if span is None else trace_headers(set_span_in_context(span))
                  for span in prepared.spans]
        prepared.chunk_traces = [traces[i:i + prepared.size]
                                 for i in range(0, len(inbounds), prepared.size)]
        try:
            await self._request_up_to(prepared, self.decider.ahead)
        except BaseException:
            prepared.discard()
            raise
        return prepared

    async def _request_up_to(self, prepared: Prepared, count: int) -> None:
        requested, size = prepared.requested, prepared.size
        while len(requested) < min(count, len(prepared.chunk_traces)):
            k = len(requested)
            chunk = prepared.inbounds[k * size:(k + 1) * size]
            requested.append(await self.decider.request(chunk, prepared.now,
                                                        prepared.chunk_traces[k]))

    async def submit(self, batch: Sequence[Inbound] | Prepared) -> Submitted:
        """Decide and record a batch and hand all its outputs to the producer, in order.

        Returns without waiting for the broker's confirmations (`complete` waits), so a
        caller can start on the next batch meanwhile; its outputs are handed to the
        producer after these, and its claims are made after these.

        The batch is worked in chunks so that waiting is overlapped with work: while
        PostgreSQL claims chunk k, the next chunks are decided and built (by the decider:
        here, or meanwhile in a worker process); chunk k's outputs are handed to the
        producer without waiting for the broker. Claims run one chunk after the other, so
        a key repeated across chunks is still seen.
        """
        prepared = batch if isinstance(batch, Prepared) else await self.prepare(batch)
        now, size, requested = prepared.now, prepared.size, prepared.requested
        outcomes: list[Outcome] = []
        confirmations: list[Awaitable[Any]] = []
        try:
            for k, chunk_traces in enumerate(prepared.chunk_traces):
                chunk = prepared.inbounds[k * size:(k + 1) * size]
                decided = await requested[k]
                claims = self._record(chunk, [d for d, _ in decided], now)
                recording: asyncio.Future[dict[int, str]] = asyncio.ensure_future(claims)
                try:
                    # Let the claim statement go out now, then decide what comes next meanwhile.
                    await asyncio.sleep(0)
                    await self._request_up_to(prepared, k + 1 + self.decider.ahead)
                finally:
                    statuses = await recording
                messages: list[Outgoing] = []
                for n, (inbound, (decision, built)) in enumerate(zip(chunk, decided, strict=True)):
                    status = statuses.get(n, "rejected")
                    if isinstance(decision, Accepted) and status == "duplicate":
                        # Built as if new: a duplicate gets its rejection instead.
                        duplicate = as_duplicate(decision)
                        outcome = Outcome(inbound, "rejected", duplicate)
                        built = self.deciding.rejection(inbound, duplicate, now, chunk_traces[n])
                    else:
                        outcome = Outcome(inbound, _public_status(status, decision), decision)
                    outcomes.append(outcome)
                    messages += built
                confirmations += await self.sink.enqueue(messages)
                # One pass of the event loop: this chunk's produce requests go out now and are
                # worked by the broker meanwhile.
                await asyncio.sleep(0)
        except BaseException:
            prepared.discard()
            raise
        return Submitted(outcomes, confirmations, prepared.spans, prepared.started)

    async def reject_whole(self, inbound: Inbound, rejected: Rejected) -> None:
        """A rejection decided at a door before the pipeline (HTTP: token, media type, size,
        body): the same messages (rejection, quarantine copy) and counters as any other;
        returns once the broker confirmed them."""
        now = self.clock()
        messages = self.deciding.rejection(inbound, rejected, now, trace_headers(None))
        counter = CounterKey(*_labels(rejected), "rejected", rejected.code.value)
        await self.repository.record_batch([], [counter], now, now.astimezone(self.local).date())
        confirmations = await self.sink.enqueue(messages)
        if confirmations:
            await asyncio.gather(*confirmations)
        self._count([Outcome(inbound, "rejected", rejected)], 0.0)

    def _span_for(self, inbound: Inbound) -> Span | None:
        """A span per record that carries the sender's trace context, as the parent of its outputs.

        Records without trace context share the batch consumer span (the current one).
        """
        carrier = {k: v for k, v in inbound.headers if k in _TRACE_HEADERS}
        if not carrier:
            return None
        span = self.tracer.start_span("ingest record", context=extract_trace_context(carrier),
                                      kind=SpanKind.CONSUMER)
        span.set_attribute("ioc.origin", inbound.origin)
        return span

    async def _record(self, inbounds: Sequence[Inbound], decisions: Sequence[Decision],
                      now: datetime) -> dict[int, str]:
        """Claim accepted records (dedupe) and count rejections in one database round trip."""
        claims: list[Claim] = []
        counters: list[CounterKey] = []
        statuses: dict[int, str] = {}
        seen_keys: set[tuple[str, str, str, str]] = set()
        seen_events: set[tuple[str, str]] = set()
        for n, (inbound, decision) in enumerate(zip(inbounds, decisions, strict=True)):
            if isinstance(decision, Rejected):
                counters.append(CounterKey(*_labels(decision), "rejected", decision.code.value))
                continue
            key = (decision.unit, decision.dataset, decision.record_id, decision.content_hash)
            event = (decision.unit, decision.client_event_id or "")
            if key in seen_keys or (decision.client_event_id and event in seen_events):
                # The same record twice in one batch: the first one is claimed below.
                statuses[n] = "duplicate"
                counters.append(CounterKey(decision.unit, decision.dataset, "rejected",
                                           Code.DUPLICATE.value))
                continue
            seen_keys.add(key)
            seen_events.add(event)
            claims.append(Claim(n, decision, inbound.origin))
        day = now.astimezone(self.local).date()
        statuses.update(await self.repository.record_batch(claims, counters, now, day))
        return statuses

    def _count(self, outcomes: Sequence[Outcome], seconds: float) -> None:
        if self.metrics is None:
            return
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.batch_size.observe(len(outcomes))
        tally: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        for o in outcomes:
            d = o.decision
            if isinstance(d, Rejected):
                tally[(*_labels(d), o.status, d.code.value)] += 1
            else:
                tally[(d.unit, d.dataset, o.status, "")] += 1
        for labels, count in tally.items():
            self.metrics.records.labels(*labels).inc(count)


def _labels(rejected: Rejected) -> tuple[str, str]:
    """Unit and dataset of a rejection as counted (metric labels, quality counters): the
    verified unit and a registry dataset id, else `unknown` (never a raw string)."""
    unit = rejected.unit if rejected.principal is not None and rejected.unit else UNKNOWN
    return unit, rejected.dataset or UNKNOWN


def _public_status(status: str, decision: Decision) -> Status:
    if isinstance(decision, Rejected):
        return "rejected"
    return "redelivered" if status == "redelivery" else "accepted"
