"""Pure rules of the province link: what leaves and how, reconciliation figures, the share
log's hash chain. No I/O here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE, H_PRODUCER
from ioc_shared.grants import Projection

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

H_ORIGIN_IOC = "ioc-origin-ioc"
H_ORIGIN_TOPIC = "ioc-origin-topic"
H_ORIGIN_PARTITION = "ioc-origin-partition"
H_ORIGIN_OFFSET = "ioc-origin-offset"
H_GRANTS = "ioc-grant-ids"
# Headers that travel as they are: identity of the event and W3C trace context.
KEPT_HEADERS = (H_EVENT_ID, H_EVENT_TYPE, "ioc-dataset", "traceparent", "tracestate")


class SourceRecord(Protocol):
    """What a Kafka consumer record offers (aiokafka's ConsumerRecord)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Stream:
    """One thing that leaves: a dataset's canonical topic or a forwarded event topic."""

    name: str              # dataset id, or the event topic's contract name
    source_topic: str      # as named on the district cluster (namespace applied)
    contract_topic: str    # without namespace: what the province's topic name is built from
    dataset: str | None    # None for event topics


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record as it leaves for the province."""

    stream: str
    event_id: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    source_topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str   # not-granted, not-ingest, mirrored, not-forwarded, undecodable


@dataclass(slots=True)
class Batch:
    """Consecutive records of one source partition, with what leaves of them."""

    stream: Stream
    partition: int
    first_offset: int
    next_offset: int
    outgoing: list[Outgoing] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    grant_ids: tuple[str, ...] = ()
    source: Sequence[SourceRecord] = ()     # kept to judge them again if the grants change

    @property
    def event_ids(self) -> list[str]:
        return [o.event_id for o in self.outgoing]

    def digest(self) -> str:
        """Hash of exactly what leaves (and of the source range), the batch's idempotency key."""
        h = hashlib.sha256(f"{self.stream.source_topic}|{self.partition}|{self.first_offset}|"
                           f"{self.next_offset}".encode())
        for o in self.outgoing:
            h.update(o.key or b"")
            h.update(b"\x00")
            h.update(o.value)
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Rule:
    """How records of one stream are judged now (grants change while records flow)."""

    projection: Projection | None          # datasets: None = nothing granted
    require_producer: str | None = None    # datasets: `ioc-producer` value required
    forwarded_types: frozenset[str] = frozenset()   # event topics: envelope types


def _headers(record: SourceRecord) -> dict[str, bytes]:
    # aiokafka gives header values as bytes (or None): no copy needed.
    return {k: v or b"" for k, v in record.headers or ()}


def shape(record: SourceRecord, stream: Stream, rule: Rule, district: str) -> Outgoing | Skipped:
    """The record as it leaves, or why it does not."""
    headers = _headers(record)
    if H_ORIGIN_IOC in headers:          # mirrored from elsewhere: never sent back (no loops)
        return Skipped("mirrored")
    if stream.dataset is not None:
        if rule.projection is None:
            return Skipped("not-granted")
        if rule.require_producer is not None and \
                headers.get(H_PRODUCER, b"").decode("utf-8", "replace") != rule.require_producer:
            return Skipped("not-ingest")
    try:
        envelope = orjson.loads(record.value or b"")
        event_id = str(envelope["event_id"])
        payload = envelope.get("payload")
        if not isinstance(payload, dict):
            return Skipped("undecodable")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Skipped("undecodable")
    if stream.dataset is None:
        if envelope.get("type") not in rule.forwarded_types:
            return Skipped("not-forwarded")
        value = record.value or b""
        grants: tuple[str, ...] = ()
    else:
        assert rule.projection is not None
        inner = payload.get("record")
        projected = rule.projection.apply(inner if isinstance(inner, dict) else {})
        # Only the record's identity and its granted fields; provenance and client ids stay home.
        envelope["payload"] = {k: payload[k] for k in ("dataset", "schema_version", "record_id")
                               if k in payload} | {"record": projected}
        value = orjson.dumps(envelope)
        grants = rule.projection.grant_ids
    out = [(k, headers[k]) for k in KEPT_HEADERS if k in headers]
    out += [(H_ORIGIN_IOC, district.encode()), (H_ORIGIN_TOPIC, stream.contract_topic.encode()),
            (H_ORIGIN_PARTITION, str(record.partition).encode()),
            (H_ORIGIN_OFFSET, str(record.offset).encode())]
    if grants:
        out.append((H_GRANTS, ",".join(grants).encode()))
    if H_EVENT_ID not in headers:
        out.append((H_EVENT_ID, event_id.encode()))
    return Outgoing(stream.name, event_id, record.key, value, tuple(out), record.timestamp,
                    stream.source_topic, record.partition, record.offset)


def make_batch(records: Sequence[SourceRecord], stream: Stream, rule: Rule, district: str) -> Batch:
    batch = Batch(stream, records[0].partition, records[0].offset, records[-1].offset + 1,
                  source=records)
    if rule.projection is not None:
        batch.fields = tuple(sorted(rule.projection.fields))
        batch.grant_ids = rule.projection.grant_ids
    for record in records:
        shaped = shape(record, stream, rule, district)
        if isinstance(shaped, Skipped):
            batch.skipped[shaped.reason] = batch.skipped.get(shaped.reason, 0) + 1
        else:
            batch.outgoing.append(shaped)
    return batch


# --- reconciliation ----------------------------------------------------------------

MASK64 = (1 << 64) - 1


def event_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Figures:
    """Count and order-independent checksum (sum mod 2^64 of hashes) of a set of event ids."""

    count: int
    checksum: str

    @classmethod
    def of(cls, event_ids: Iterable[str]) -> Figures:
        ids = set(event_ids)
        total = sum(event_hash(e) for e in ids) & MASK64
        return cls(len(ids), f"{total:016x}")


def local_day(timestamp_ms: int) -> date:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).astimezone(LOCAL_TZ).date()


def day_bounds_ms(day: date) -> tuple[int, int]:
    """[start, end) of a local day in UTC milliseconds."""
    start = datetime.combine(day, time(0), LOCAL_TZ)
    end = start + timedelta(days=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


# --- share log (Đ4.1, Đ11.2) -------------------------------------------------------

GENESIS = "0" * 64


def entry_body(entry: dict[str, Any]) -> bytes:
    """The canonical bytes an entry's hash covers (everything but its own hash)."""
    return orjson.dumps({k: v for k, v in entry.items() if k != "entry_hash"},
                        option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + entry_body(entry)).hexdigest()


def checkpoint_message(district: str, seq: int, head_hash: str, signed_at: str) -> bytes:
    return f"ioc-share-log-checkpoint|{district}|{seq}|{head_hash}|{signed_at}".encode()


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    problem: str


def verify_chain(entries: Sequence[dict[str, Any]]) -> list[ChainProblem]:
    """Problems of a chain given in order: gaps in sequence, broken links, altered entries."""
    problems: list[ChainProblem] = []
    prev, expected_seq = GENESIS, 1
    for entry in entries:
        seq = int(entry["seq"])
        if seq != expected_seq:
            problems.append(ChainProblem(seq, f"sequence jumps from {expected_seq - 1} to {seq}"))
        if entry["prev_hash"] != prev:
            problems.append(ChainProblem(seq, "does not link to the previous entry"))
        if chain_hash(entry["prev_hash"], entry) != entry["entry_hash"]:
            problems.append(ChainProblem(seq, "content does not match its hash (edited)"))
        prev, expected_seq = entry["entry_hash"], seq + 1
    return problems


# --- operations --------------------------------------------------------------------

def retention_at_risk(oldest_unsynced_ms: int | None, retention_ms: int | None, margin_ms: int,
                      now_ms: int) -> bool:
    """Whether the oldest record not yet at the province may be deleted by retention soon."""
    if oldest_unsynced_ms is None or retention_ms is None or retention_ms < 0:
        return False
    return now_ms - oldest_unsynced_ms >= retention_ms - margin_ms
