"""Orchestration of a batch of submissions: decide, record in PostgreSQL, publish, count.

Order gives at-least-once with idempotent effects: (1) pure decisions
(`messages.Deciding`), (2) one PostgreSQL statement claims the dedupe keys (with
the delivery's origin) and counts outcomes (`repository.record_batch`), (3) every
output is handed to the producer and all confirmations awaited. Only then does the
caller (the kit's consumer) commit the input's offsets. A crash after (2) redelivers
the input; its claims are found with the same origin, so the same canonical events
(same ids) are published again rather than rejected.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.telemetry import extract_trace_context
from ioc_shared.registry import Registry
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context
from prometheus_client import CollectorRegistry, Counter, Histogram

from ingest.domain import Accepted, Code, Decision, Inbound, Ingestor, Rejected, as_duplicate
from ingest.domain.model import rejected as rejection_of
from ingest.messages import UNKNOWN, Decided, Deciding, Outgoing, TraceHeaders
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
class _Claiming:
    """A decided chunk whose claim statement is on its way."""

    inbounds: Sequence[Inbound]
    traces: Sequence[TraceHeaders]
    decided: list[Decided]
    statuses: asyncio.Future[dict[int, str]]


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
        bus = bus_metrics(registry)
        self.produced = bus.produced.labels("ingest")   # ingest sends, not an outbox relay
        self.rejected = bus.rejected


class IngestPipeline:
    def __init__(self, ingestor: Ingestor, repository: IngestRepository, sink: Sink,
                 topics: IngestTopics, *, metrics: IngestMetrics | None = None,
                 tracer: Tracer | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 chunk_records: int = 250) -> None:
        self.ingestor = ingestor
        self.chunk_records = chunk_records
        self.registry: Registry = ingestor.registry
        self.repository = repository
        self.sink = sink
        self.topics = topics
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("ingest")
        self.clock = clock
        self.local: tzinfo = ZoneInfo(self.registry.centre.timezone)
        self.deciding = Deciding(ingestor, canonical=topics.canonical, special=topics.special,
                                 rejected=topics.rejected, quarantine=topics.quarantine,
                                 restricted=topics.restricted,
                                 unauthenticated=topics.unauthenticated,
                                 unit_feeds=topics.unit_rejections)

    async def process(self, inbounds: Sequence[Inbound]) -> list[Outcome]:
        """Decide, record and publish a batch; returns once every output is confirmed
        (acks=all). Raises if any output failed: then nothing of the batch may be committed."""
        confirmed = await self.start(inbounds)
        return await confirmed

    async def start(self, inbounds: Sequence[Inbound], *, keep_outcomes: bool = True,
                    ) -> asyncio.Future[list[Outcome]]:
        """`process` up to the hand-over: returns once the claims are committed and every
        output is handed to the producer (in order), with a future of the outcomes that
        completes once the broker confirmed all of them (or fails if any failed).
        `keep_outcomes=False`: the future's result is empty, so the batch's decisions are
        freed at once instead of living on while the next batch is worked.

        In chunks of `chunk_records`, so that waiting overlaps with work: chunk k's claim
        statement is in PostgreSQL while chunk k+1 is decided, and its outputs are on their
        way to the broker while the chunks after it are worked; only the last chunk's
        waits are not hidden. Claims run one chunk after the other, so a key repeated
        across chunks is still seen."""
        started = time.perf_counter()
        now = self.clock()
        spans = [self._span_for(i) for i in inbounds]
        outcomes: list[Outcome] = []
        confirmations: list[Awaitable[Any]] = []
        claiming: _Claiming | None = None
        handed_over = False
        try:
            batch_trace = trace_headers(None)   # the consumer's span, for untraced records
            traces = [batch_trace if span is None else trace_headers(set_span_in_context(span))
                      for span in spans]
            size = max(1, self.chunk_records)
            for first in range(0, len(inbounds), size):
                chunk, chunk_traces = inbounds[first:first + size], traces[first:first + size]
                decided = self.deciding.batch(chunk, now, chunk_traces)
                if claiming is not None:
                    confirmations += await self._publish(claiming, now, outcomes)
                claiming = _Claiming(chunk, chunk_traces, decided, asyncio.ensure_future(
                    self._record(chunk, [d for d, _ in decided], now)))
                # The claim statement goes out now; the next chunk is decided meanwhile.
                await asyncio.sleep(0)
            if claiming is not None:
                confirmations += await self._publish(claiming, now, outcomes)
                claiming = None
            handed_over = True
        finally:
            if claiming is not None and not claiming.statuses.done():
                claiming.statuses.cancel()
            if not handed_over:
                _end(spans)
        tally, size = self._tally(outcomes), len(outcomes)
        result = outcomes if keep_outcomes else []
        del outcomes

        async def confirmed() -> list[Outcome]:
            try:
                if confirmations:
                    await asyncio.gather(*confirmations)
            finally:
                _end(spans)
            self._observe(tally, size, time.perf_counter() - started)
            return result

        return asyncio.ensure_future(confirmed())

    async def _publish(self, claiming: _Claiming, now: datetime,
                       outcomes: list[Outcome]) -> list[Awaitable[Any]]:
        """A chunk whose claims were sent: its outcomes, its outputs handed to the producer."""
        statuses = await claiming.statuses
        messages: list[Outgoing] = []
        for n, (inbound, (decision, built)) in enumerate(
                zip(claiming.inbounds, claiming.decided, strict=True)):
            status = statuses.get(n, "rejected")
            if isinstance(decision, Accepted) and status == "duplicate":
                # Built as if new: a duplicate gets its rejection instead.
                duplicate = as_duplicate(decision)
                outcomes.append(Outcome(inbound, "rejected", duplicate))
                built = self.deciding.rejection(inbound, duplicate, now, claiming.traces[n])
            else:
                outcomes.append(Outcome(inbound, _public_status(status, decision), decision))
            messages += built
        return await self._enqueue(messages)

    async def _enqueue(self, messages: Sequence[Outgoing]) -> list[Awaitable[Any]]:
        if self.metrics is not None:   # once per batch
            self.metrics.produced.inc(len(messages))
        return await self.sink.enqueue(messages)

    async def reject_whole(self, inbound: Inbound, rejected: Rejected) -> None:
        """A rejection decided at a door before the pipeline (HTTP: token, media type, size,
        body): the same messages (rejection, quarantine copy) and counters as any other;
        returns once the broker confirmed them."""
        now = self.clock()
        messages = self.deciding.rejection(inbound, rejected, now, trace_headers(None))
        counter = CounterKey(*_labels(rejected), "rejected", rejected.code.value)
        await self.repository.record_batch([], [counter], now, now.astimezone(self.local).date())
        confirmations = await self._enqueue(messages)
        if confirmations:
            await asyncio.gather(*confirmations)
        self._count([Outcome(inbound, "rejected", rejected)], 0.0)

    async def answer_parked(self, inbound: Inbound, error: BaseException) -> None:
        """A record the consumer parked (its effects kept failing): tell its verified sender
        `internal_error` (rejected topic and the unit's feed; the operators' unauthenticated
        topic if the signature does not verify). No quarantine copy: the parked row keeps
        the raw bytes (`python -m ingest parked replay`). Same event id as any rejection of
        this delivery, so a consumer dedupes a later answer for it."""
        sender = self.ingestor.verified_sender(inbound)
        extra = {"internal_error": type(error).__name__}
        if sender is None:
            rejected = rejection_of(Code.INTERNAL_ERROR,
                                    extra={**extra, "identity_verified": False})
        else:
            unit, principal = sender
            rejected = rejection_of(Code.INTERNAL_ERROR, unit=unit, principal=principal,
                                    extra=extra)
        messages = self.deciding.rejection(inbound, rejected, self.clock(), trace_headers(None),
                                           keep_copy=False)
        confirmations = await self._enqueue(messages)
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
        self._observe(self._tally(outcomes), len(outcomes), seconds)

    def _tally(self, outcomes: Sequence[Outcome]) -> collections.Counter[tuple[str, str, str, str]]:
        tally: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        if self.metrics is None:
            return tally
        for o in outcomes:
            d = o.decision
            if isinstance(d, Rejected):
                tally[(*_labels(d), o.status, d.code.value)] += 1
            else:
                tally[(d.unit, d.dataset, o.status, "")] += 1
        return tally

    def _observe(self, tally: collections.Counter[tuple[str, str, str, str]], size: int,
                 seconds: float) -> None:
        if self.metrics is None:
            return
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.batch_size.observe(size)
        for labels, count in tally.items():
            self.metrics.records.labels(*labels).inc(count)
            if labels[3]:
                self.metrics.rejected.labels("ingest", labels[3]).inc(count)


def _end(spans: Sequence[Span | None]) -> None:
    for span in spans:
        if span is not None:
            span.end()


def _labels(rejected: Rejected) -> tuple[str, str]:
    """Unit and dataset of a rejection as counted (metric labels, quality counters): the
    verified unit and a registry dataset id, else `unknown` (never a raw string)."""
    unit = rejected.unit if rejected.principal is not None and rejected.unit else UNKNOWN
    return unit, rejected.dataset or UNKNOWN


def _public_status(status: str, decision: Decision) -> Status:
    if isinstance(decision, Rejected):
        return "rejected"
    return "redelivered" if status == "redelivery" else "accepted"
