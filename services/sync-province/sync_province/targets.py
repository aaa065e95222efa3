"""The interface both target kinds offer the pipeline, and how a link's health is kept."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from ioc_shared.platform.telemetry import Hop, recording, start_hop
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from sync_province.domain import Batch, Figures, Outgoing, Stream

# Called by a target once it knows the batches will be (Kafka: are about to be) confirmed.
Confirm = Callable[[list[Batch]], Awaitable[None]]


class Unreachable(Exception):
    """The province could not take the batch now: try again later."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Refusal:
    """The province refused a batch for good (a 4xx other than 429): park it."""

    batch: Batch
    status_code: int
    answer: str


@dataclass(slots=True)
class LinkHealth:
    failing_since: float | None = None
    last_ok: float | None = None
    last_error: str | None = None
    failures: dict[str, int] | None = None

    def ok(self) -> None:
        self.failing_since, self.last_ok, self.last_error = None, time.time(), None

    def failed(self, reason: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
        self.last_error = reason
        self.failures = self.failures or {}
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def unreachable_for(self, now: float | None = None) -> float:
        return 0.0 if self.failing_since is None else (now or time.time()) - self.failing_since


class Target(Protocol):
    name: str
    # True: the target stores our source positions itself (in the same transaction as the
    # records); False: they live in PostgreSQL and move after the target confirmed.
    holds_positions: bool
    # True: every batch of a poll goes in one atomic delivery; False: one batch at a time.
    transactional: bool
    health: LinkHealth

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def positions(self) -> dict[tuple[str, int], int]: ...
    async def deliver(self, batches: list[Batch], confirm: Confirm, *,
                      record_positions: bool = True) -> list[Refusal]: ...
    async def day_event_ids(self, stream: Stream, day: date) -> set[str]: ...
    async def send_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...


async def day_figures(target: Target, stream: Stream, day: date) -> tuple[Figures, set[str]]:
    ids = await target.day_event_ids(stream, day)
    return Figures.of(ids), ids


def all_outgoing(batches: Sequence[Batch]) -> int:
    return sum(len(b.outgoing) for b in batches)


# --- trace context ---------------------------------------------------------------------
_tracer = trace.get_tracer("sync-province")
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(slots=True)
class Forwarding:
    """The spans of one delivery attempt: one per record sent, each a child of the record's
    own trace (its `traceparent` at the district), whose context the province receives."""

    hops: list[Hop] = field(default_factory=list)

    def headers(self, o: Outgoing, destination: str) -> list[tuple[str, bytes]]:
        """`o`'s headers as they leave: the trace context continued by a span of its own.
        Without an exporter they leave as they came (a span no one keeps names nothing)."""
        if not recording():
            return list(o.headers)
        given = {k: v.decode("utf-8", "replace") for k, v in o.headers if k in _TRACE_HEADERS}
        hop = start_hop(_tracer, f"{destination} publish", given, kind=SpanKind.PRODUCER,
                        attributes={"messaging.destination.name": destination,
                                    "ioc.event_id": o.event_id})
        self.hops.append(hop)
        return ([(k, v) for k, v in o.headers if k not in _TRACE_HEADERS]
                + [(k, v.encode()) for k, v in hop.headers.items()])

    def end(self, error: BaseException | None = None) -> None:
        for hop in self.hops:
            if hop.span is not None and error is not None:
                hop.span.set_status(StatusCode.ERROR, type(error).__name__)
            hop.end()
        self.hops.clear()
