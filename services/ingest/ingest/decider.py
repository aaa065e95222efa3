"""Deciding submissions and building their messages: in the service process or with worker processes.

Deciding (identity, size, schema, normalization) is pure CPU work and, under load,
the largest part of the service's CPU. With `INGEST_DECISION_WORKERS=N` (default:
one per core but one), N child processes (`python -m ingest.decider`) decide while
the service process does the I/O (consuming, PostgreSQL claims, producing) and joins
the outgoing messages, so a batch uses two cores instead of one. With 0, the service
process decides itself (`LocalDecider`).

Protocol: the service writes length-prefixed frames to a worker's stdin and reads
its answers, in the same order, from its stdout. The first frame is the pickled
`DecisionConfig`; the worker answers "ready". Each later frame is one chunk of raw
submissions (`marshal`), with the batch's `now`. The answer (`Deciding.answer`)
gives, per accepted record, its ids and the serialized parts of its messages, from
which the service derives its content hash and event ids and joins its messages
(`Deciding.assemble`: cheaper than sending them whole, and it moves that work to the
service process, which has time to spare while it waits for the worker and for
claims); per rejection, the decision (pickled), whose messages the service builds
too. Only the service and its own children exchange these frames (pickle is not for
untrusted input; the submissions travel inside as bytes). A worker ignores
SIGINT/SIGTERM: the service finishes its batches first, then closes the worker's
stdin and the worker exits. If a worker dies, every chunk it had not answered fails,
the batch is worked again (the inbound worker's redelivery) and the next request
starts a new worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import gc
import marshal
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, NamedTuple, Protocol

import orjson
from ioc_shared.registry import Grant, Registry, load_registry

from ingest.domain import (
    Accepted,
    Decision,
    Inbound,
    Ingestor,
    Limits,
    Rejected,
    SchemaCatalog,
    accepted_ids,
    active_grants,
    project,
    projection,
    shared_event_id,
    special_receivers,
)
from ingest.messages import (
    Outgoing,
    Outputs,
    RejectionTopics,
    TraceHeaders,
    occurred_json,
    rejection_messages,
)

Decided = tuple[Decision, list[Outgoing]]
_FRAME_HEADER = 4
_READY = b"ready"


class Deciding:
    """Pure: decides a chunk of submissions and builds each one's messages (as if new)."""

    def __init__(self, ingestor: Ingestor, *, canonical: dict[str, str], special: dict[str, str],
                 rejected: str, quarantine: str, restricted: dict[str, str] | None = None,
                 unauthenticated: str = "", unit_feeds: dict[str, str] | None = None) -> None:
        self.ingestor = ingestor
        registry = ingestor.registry
        self.canonical = canonical
        self.special = special
        self.restricted = restricted or {}
        self.rejection_topics = RejectionTopics(rejected, quarantine, unauthenticated,
                                                unit_feeds or {})
        self.centre_unit = registry.centre.unit
        self._receivers: dict[str, tuple[Grant, ...]] = {
            ds: special_receivers(registry, ds) for ds in registry.datasets}
        self._grants = {g.id: g for grants in self._receivers.values() for g in grants}

    def _active_receivers(self, now: datetime) -> dict[str, tuple[Grant, ...]]:
        # Special-request expiry is judged once per batch, at the batch's `now`.
        return {ds: active_grants(grants, now) for ds, grants in self._receivers.items()}

    def chunk(self, inbounds: Sequence[Inbound], now: datetime,
              traces: Sequence[TraceHeaders]) -> list[Decided]:
        receivers = self._active_receivers(now)
        outputs = Outputs(now, self.canonical, self.special, self.restricted)
        decide = self.ingestor.decide
        out: list[Decided] = []
        for inbound, trace in zip(inbounds, traces, strict=True):
            decision = decide(inbound, now)
            if isinstance(decision, Accepted):
                grants = receivers.get(decision.dataset)
                views = project(decision, grants) if grants else ()
                out.append((decision, outputs.accepted(decision, inbound, trace, views)))
            else:
                out.append((decision, self.rejection(inbound, decision, now, trace)))
        return out

    def answer(self, inbounds: Sequence[Inbound], now: datetime) -> list[Any]:
        """A worker's answer for a chunk, in plain values (marshal): per accepted record,
        its ids and the serialized parts of its messages (see `assemble`); per rejection,
        the decision pickled (the service builds its messages). Decided by an ingestor that leaves content
        hashes and event ids to the service (`derive_ids=False`)."""
        receivers = self._active_receivers(now)
        decide = self.ingestor.decide
        out: list[Any] = []
        for inbound in inbounds:
            d = decide(inbound, now)
            if isinstance(d, Accepted):
                record = d.record
                shared = [(g.id, orjson.dumps(projection(record, g)))
                          for g in receivers.get(d.dataset, ())]
                out.append(((d.unit, d.principal, d.dataset, d.source_version,
                             d.canonical_version, d.record_id, d.client_event_id),
                            occurred_json(d, now), d.record_json, shared, d.personal_json))
            else:
                out.append(pickle.dumps(d, protocol=5))
        return out

    def assemble(self, answer: list[Any], inbounds: Sequence[Inbound], now: datetime,
                 traces: Sequence[TraceHeaders]) -> list[Decided]:
        """The decisions and messages of a worker's `answer`, exactly as `chunk` makes them.

        An `Accepted` from a worker carries its ids, keys, versions and `record_json`; its
        `record` is empty and it has no `occurred_at` (the messages have them)."""
        outputs = Outputs(now, self.canonical, self.special, self.restricted)
        grants = self._grants
        out: list[Decided] = []
        for sent, inbound, trace in zip(answer, inbounds, traces, strict=True):
            if sent.__class__ is bytes:   # a rejection
                rejected: Rejected = pickle.loads(sent)
                out.append((rejected, self.rejection(inbound, rejected, now, trace)))
                continue
            ids, occurred, record_json, shared, personal_json = sent
            unit, principal, dataset, source, canonical, record_id, client = ids
            digest, event_id = accepted_ids(unit, dataset, record_id, record_json)
            acc = Accepted(unit, principal, dataset, source, canonical, record_id, {}, digest,
                           event_id, client, None, record_json, personal_json)
            views = [(grants[g], shared_event_id(event_id, g), r) for g, r in shared]
            out.append((acc, outputs.assemble(acc, inbound.channel, inbound.origin, trace,
                                              occurred, views)))
        return out

    def rejection(self, inbound: Inbound, rejected: Rejected, now: datetime,
                  trace: TraceHeaders) -> list[Outgoing]:
        """The rejection addressed to the unit and the quarantine copy."""
        return rejection_messages(self.rejection_topics, rejected, inbound, now,
                                  self.centre_unit, trace)


class Decider(Protocol):
    # How many chunks to ask for ahead of the one being recorded.
    ahead: int

    async def request(self, inbounds: Sequence[Inbound], now: datetime,
                      traces: Sequence[TraceHeaders]) -> asyncio.Future[list[Decided]]:
        """Start deciding a chunk; the future completes with a `Decided` per submission."""
        ...

    async def close(self) -> None: ...


class LocalDecider:
    """Decides in the service process, when asked (one chunk ahead: while the previous
    chunk's claims are in PostgreSQL)."""

    ahead = 1

    def __init__(self, deciding: Deciding) -> None:
        self.deciding = deciding

    async def request(self, inbounds: Sequence[Inbound], now: datetime,
                      traces: Sequence[TraceHeaders]) -> asyncio.Future[list[Decided]]:
        future: asyncio.Future[list[Decided]] = asyncio.get_running_loop().create_future()
        future.set_result(self.deciding.chunk(inbounds, now, traces))
        return future

    async def close(self) -> None:
        return None


def build_catalog(registry: Registry, future_tolerance_s: float,
                  geo_margin_deg: float) -> SchemaCatalog:
    """The registry's compiled schemas, with the plausibility limits from settings."""
    limits = Limits(future_tolerance=timedelta(seconds=future_tolerance_s),
                    geo_margin_deg=geo_margin_deg)
    return SchemaCatalog(registry, limits)


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    """What a worker needs to decide exactly as the service would."""

    registry_file: str
    credentials_file: str | None
    future_tolerance_s: float
    geo_margin_deg: float
    max_message_bytes: int
    canonical: dict[str, str]
    special: dict[str, str]
    rejected: str
    quarantine: str
    restricted: dict[str, str] | None = None
    unauthenticated: str = ""
    unit_feeds: dict[str, str] | None = None

    def ingestor(self, registry: Registry, *, derive_ids: bool = True) -> Ingestor:
        catalog = build_catalog(registry, self.future_tolerance_s, self.geo_margin_deg)
        return Ingestor(catalog, max_message_bytes=self.max_message_bytes, derive_ids=derive_ids)

    def deciding(self, ingestor: Ingestor | None = None) -> Deciding:
        """Deciding with these topics; by `ingestor`, or one of the registry files."""
        if ingestor is None:
            ingestor = self.ingestor(load_registry(self.registry_file, self.credentials_file))
        return Deciding(ingestor, canonical=self.canonical, special=self.special,
                        rejected=self.rejected, quarantine=self.quarantine,
                        restricted=self.restricted, unauthenticated=self.unauthenticated,
                        unit_feeds=self.unit_feeds)


class DecisionWorkerLost(RuntimeError):
    """A decision worker exited or broke the protocol; its unanswered chunks are worked again."""


class _Asked(NamedTuple):
    future: asyncio.Future[list[Decided]]
    inbounds: Sequence[Inbound]
    now: datetime
    traces: Sequence[TraceHeaders]


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        # Chunks sent and not answered yet, in the order they were sent, with what the
        # service needs to assemble their messages.
        self.pending: collections.deque[_Asked] = collections.deque()
        self.reader: asyncio.Task[None] | None = None
        self.alive = True


class WorkerDecider:
    """Decides in `workers` child processes: chunks go round-robin, each worker answers its
    chunks in order. A chunk is sent as soon as it is asked for, so a worker goes on with
    the next chunks (and batches, see `InboundWorker.lookahead`) while the service records
    and publishes the ones already decided.
    """

    ahead = 1 << 30

    def __init__(self, config: DecisionConfig, deciding: Deciding, *, workers: int = 1,
                 in_process_below: int = 0, start_timeout_s: float = 60.0) -> None:
        self.config = config
        # Decides chunks smaller than `in_process_below` here (a trickle: the hop to a
        # worker would cost more CPU than deciding them, and add to their latency), and
        # assembles the messages of the accepted records from the workers' answers.
        self.deciding = deciding
        self.in_process_below = in_process_below
        self.start_timeout_s = start_timeout_s
        self._slots: list[_Worker | None] = [None] * max(1, workers)
        self._next = 0
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        for n in range(len(self._slots)):
            await self._worker(n)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._slots if w is not None and w.alive]

    async def _worker(self, n: int) -> _Worker:
        """Worker `n`, started (again) if it is not running."""
        worker = self._slots[n]
        if worker is not None and worker.alive:
            return worker
        async with self._starting:
            worker = self._slots[n]
            if worker is None or not worker.alive:
                worker = self._slots[n] = await self._spawn()
            return worker

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingest.decider", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024)
        assert process.stdin is not None and process.stdout is not None
        worker = _Worker(process)
        try:
            _write_frame(process.stdin, pickle.dumps(self.config, protocol=5))
            async with asyncio.timeout(self.start_timeout_s):
                await process.stdin.drain()
                if await _read_frame(process.stdout) != _READY:
                    raise DecisionWorkerLost("decision worker did not start")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        worker.reader = asyncio.create_task(self._read(worker), name="ingest-decider-reader")
        return worker

    async def request(self, inbounds: Sequence[Inbound], now: datetime,
                      traces: Sequence[TraceHeaders]) -> asyncio.Future[list[Decided]]:
        if len(inbounds) < self.in_process_below:
            decided: asyncio.Future[list[Decided]] = asyncio.get_running_loop().create_future()
            decided.set_result(self.deciding.chunk(inbounds, now, traces))
            return decided
        n = self._next
        self._next = (n + 1) % len(self._slots)
        worker = await self._worker(n)
        stdin = worker.process.stdin
        assert stdin is not None
        future: asyncio.Future[list[Decided]] = asyncio.get_running_loop().create_future()
        worker.pending.append(_Asked(future, inbounds, now, traces))
        # marshal (several times cheaper than pickle): plain values only, no `Inbound`s.
        rows = [(i.value, i.headers, i.origin, i.key, i.channel, i.replay, i.index)
                for i in inbounds]
        try:
            # No `drain()`: it would wait until the worker reads this chunk, i.e. until it
            # decided the ones before; what is buffered is bounded by the batches in flight.
            _write_frame(stdin, marshal.dumps((now.isoformat(), rows)))
        except (ConnectionError, RuntimeError) as exc:
            self._lost(worker, exc)
        return future

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        try:
            while True:
                answer = marshal.loads(await _read_frame(stdout))
                asked = worker.pending.popleft()
                if not asked.future.done():
                    asked.future.set_result(self.deciding.assemble(
                        answer, asked.inbounds, asked.now, asked.traces))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(worker, exc)

    def _lost(self, worker: _Worker, exc: BaseException) -> None:
        """Fail the chunks the worker had (their batches are worked again); the next
        request starts a new worker."""
        if not worker.alive:
            return
        worker.alive = False
        # Imported here: the worker process imports this module too, and needs no logging.
        from ioc_shared.platform.logging import get_logger

        get_logger(__name__).error("decision worker lost; its chunks will be worked again",
                  pid=worker.process.pid, error=repr(exc), chunks=len(worker.pending))
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        lost = DecisionWorkerLost(f"decision worker {worker.process.pid} lost: {exc!r}")
        while worker.pending:
            future = worker.pending.popleft().future
            if not future.done():
                future.set_exception(lost)
                future.exception()   # retrieved here: the batch fails through its own await

    async def close(self, timeout: float = 10.0) -> None:
        """Close the workers' input (they exit once they answered) and wait for them."""
        for n, worker in enumerate(self._slots):
            if worker is None:
                continue
            self._slots[n] = None
            worker.alive = False
            process = worker.process
            if process.stdin is not None:
                process.stdin.close()
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if worker.reader is not None:
                worker.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reader
            for asked in worker.pending:
                asked.future.cancel()


def _write_frame(stream: asyncio.StreamWriter, payload: bytes) -> None:
    stream.writelines((len(payload).to_bytes(_FRAME_HEADER, "big"), payload))


async def _read_frame(stream: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await stream.readexactly(_FRAME_HEADER), "big")
    return await stream.readexactly(size)


# --- the worker process -------------------------------------------------------------


def _read_exactly(source: BinaryIO, size: int) -> bytes | None:
    data = source.read(size)
    return data if data is not None and len(data) == size else None


def _send(sink: BinaryIO, payload: bytes) -> None:
    sink.write(len(payload).to_bytes(_FRAME_HEADER, "big"))
    sink.write(payload)
    sink.flush()


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answer chunks until the service closes our input.

    Answers are written by a thread of their own: a write blocks while the service is
    busy and has not read the pipe, and deciding the next chunk must not wait for that.
    """
    header = _read_exactly(source, _FRAME_HEADER)
    if header is None:
        return
    config = pickle.loads(_read_exactly(source, int.from_bytes(header, "big")) or b"")
    # The service derives the accepted records' hashes and event ids (`Deciding.assemble`).
    deciding = config.deciding(config.ingestor(
        load_registry(config.registry_file, config.credentials_file), derive_ids=False))
    # As the service process does (`tune_gc`): start-up objects frozen, fewer young collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    writer = threading.Thread(target=_write_answers, args=(answers, sink), daemon=True)
    writer.start()
    answers.put(_READY)
    try:
        while (header := _read_exactly(source, _FRAME_HEADER)) is not None:
            frame = _read_exactly(source, int.from_bytes(header, "big"))
            if frame is None:
                return
            now, rows = marshal.loads(frame)
            answers.put(marshal.dumps(deciding.answer(
                [Inbound(*row) for row in rows], datetime.fromisoformat(now))))
    finally:
        answers.put(None)
        writer.join()


def _write_answers(answers: queue.SimpleQueue[bytes | None], sink: BinaryIO) -> None:
    with contextlib.suppress(BrokenPipeError):   # the service is gone: nobody to answer
        while (answer := answers.get()) is not None:
            _send(sink, answer)


def main() -> None:
    # The service stops us (by closing our input) once its batches are done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)   # anything printed goes to stderr, never into the frames
    with contextlib.suppress(OSError, AttributeError):   # Linux: room for a whole answer or two
        fcntl.fcntl(sink.fileno(), fcntl.F_SETPIPE_SZ, 4 * 1024 * 1024)
    serve(sys.stdin.buffer, sink)


if __name__ == "__main__":
    main()
