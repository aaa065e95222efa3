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
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ioc_shared.platform.telemetry import extract_trace_context
from ioc_shared.registry import Grant, Registry
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context
from prometheus_client import CollectorRegistry, Counter, Histogram

from ingest.domain import (
    Accepted,
    Code,
    Decision,
    Inbound,
    Ingestor,
    Rejected,
    active_grants,
    as_duplicate,
    project,
    special_receivers,
)
from ingest.outgoing import (
    Outgoing,
    Outputs,
    Sink,
    TraceHeaders,
    rejection_messages,
    trace_headers,
)
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
                 chunk_records: int = 250) -> None:
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
        self._receivers: dict[str, tuple[Grant, ...]] = {
            ds: special_receivers(self.registry, ds) for ds in self.registry.datasets}

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

    async def submit(self, inbounds: Sequence[Inbound]) -> Submitted:
        """Decide and record a batch and hand all its outputs to the producer, in order.

        Returns without waiting for the broker's confirmations (`complete` waits), so a
        caller can start on the next batch meanwhile; its outputs are handed to the
        producer after these, and its claims are made after these.

        The batch is worked in chunks so that waiting is overlapped with work: while
        PostgreSQL claims chunk k, chunk k's outputs are built and chunk k+1 is
        decided; chunk k's outputs are handed to the producer without waiting for
        the broker. Claims run one chunk after the other, so a key repeated across
        chunks is still seen.
        """
        now = self.clock()
        started = time.perf_counter()
        spans = [self._span_for(i) for i in inbounds]
        size = max(1, self.chunk_records)
        chunks = [inbounds[i:i + size] for i in range(0, len(inbounds), size)]
        outcomes: list[Outcome] = []
        confirmations: list[Awaitable[Any]] = []
        # Special-request expiry is judged once per batch, at the batch's `now`.
        receivers = {ds: active_grants(grants, now) for ds, grants in self._receivers.items()}
        outputs = Outputs(now, self.topics.canonical, self.topics.special)
        batch_trace = trace_headers(None)   # the batch consumer span, for untraced records
        traces = [batch_trace if span is None else trace_headers(set_span_in_context(span))
                  for span in spans]
        try:
            decided = [self.ingestor.decide(i, now) for i in chunks[0]] if chunks else []
            recording = asyncio.ensure_future(self._record(chunks[0], decided, now)) if chunks else None
            # Deciding and building are CPU work that never yields: let the claim task send its
            # statement now, or it would only start when awaited (no overlap at all).
            await asyncio.sleep(0)
            offset = 0
            for k, chunk in enumerate(chunks):
                assert recording is not None
                chunk_traces = traces[offset:offset + len(chunk)]
                try:
                    # Optimistic: as if every accepted record were new; duplicates are rebuilt.
                    built = [self._messages(i, d, outputs, t, receivers)
                             for i, d, t in zip(chunk, decided, chunk_traces, strict=True)]
                    following = ([self.ingestor.decide(i, now) for i in chunks[k + 1]]
                                 if k + 1 < len(chunks) else [])
                finally:
                    statuses = await recording
                if following:
                    recording = asyncio.ensure_future(self._record(chunks[k + 1], following, now))
                messages: list[Outgoing] = []
                for n, (inbound, decision) in enumerate(zip(chunk, decided, strict=True)):
                    status = statuses.get(n, "rejected")
                    outcome = Outcome(inbound, _public_status(status, decision), decision)
                    if isinstance(decision, Accepted) and status == "duplicate":
                        outcome = Outcome(inbound, "rejected", as_duplicate(decision))
                        built[n] = self._messages(inbound, outcome.decision, outputs,
                                                  chunk_traces[n], receivers)
                    outcomes.append(outcome)
                    messages += built[n]
                confirmations += await self.sink.enqueue(messages)
                # One pass of the event loop: the next claim statement and this chunk's produce
                # requests go out now and are worked by PostgreSQL and the broker meanwhile.
                await asyncio.sleep(0)
                decided, offset = following, offset + len(chunk)
        except BaseException:
            for span in spans:
                if span is not None:
                    span.end()
            raise
        return Submitted(outcomes, confirmations, spans, started)


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
                counters.append(CounterKey(decision.unit or "", decision.dataset or "", "rejected",
                                           decision.code.value))
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

    def _messages(self, inbound: Inbound, decision: Decision, outputs: Outputs, ctx: TraceHeaders,
                  receivers: dict[str, tuple[Grant, ...]]) -> list[Outgoing]:
        """Outputs of a decision, as if an accepted record were new; `receivers`: active grants."""
        if isinstance(decision, Accepted):
            grants = receivers.get(decision.dataset)
            return outputs.accepted(decision, inbound, ctx, project(decision, grants) if grants else ())
        return rejection_messages((self.topics.rejected, self.topics.quarantine), decision,
                                  inbound, outputs.now, self.registry.centre.unit, ctx)

    def _count(self, outcomes: Sequence[Outcome], seconds: float) -> None:
        if self.metrics is None:
            return
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.batch_size.observe(len(outcomes))
        tally: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        for o in outcomes:
            d = o.decision
            if isinstance(d, Rejected):
                tally[(d.unit or "", d.dataset or "", o.status, d.code.value)] += 1
            else:
                tally[(d.unit, d.dataset, o.status, "")] += 1
        for labels, count in tally.items():
            self.metrics.records.labels(*labels).inc(count)


def _public_status(status: str, decision: Decision) -> Status:
    if isinstance(decision, Rejected):
        return "rejected"
    return "redelivered" if status == "redelivery" else "accepted"
