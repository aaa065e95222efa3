"""The messages ingest produces, built from decisions: canonical and shared records,
rejections, quarantine copies. Pure (no I/O): `Deciding` decides a batch and builds
each submission's messages, as if it were new (the pipeline turns a claimed duplicate
into its rejection).

Headers carry the event id and type and the W3C trace context of the span the
message belongs to (one span per inbound record, child of the sender's trace).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
from ioc_shared.contracts.envelope import ENVELOPE_SCHEMA_VERSION
from ioc_shared.contracts.headers import H_EVENT_ID, H_EVENT_TYPE, H_PRODUCER
from ioc_shared.registry import Grant

from ingest.domain import (
    ACCEPTED_TYPE,
    Accepted,
    Code,
    Decision,
    Inbound,
    Ingestor,
    Rejected,
    SharedView,
    active_grants,
    project,
    special_receivers,
)
from ingest.domain.ids import event_ids_of
from ingest.domain.normalize import iso_utc
from ingest.domain.sharing import SHARED_TYPE

REJECTED_TYPE = "ingest.record.rejected"
PERSONAL_TYPE_SUFFIX = ".personal"   # envelope type `<dataset>.personal` on the restricted topic
H_DATASET = "ioc-dataset"
# Quarantine copies keep the original headers and add these (replay strips them).
QUARANTINE_PREFIX = "ioc-quarantine-"
H_Q_CODE = "ioc-quarantine-code"
H_Q_ORIGIN = "ioc-quarantine-origin"
H_Q_UNIT = "ioc-quarantine-unit"
H_Q_DATASET = "ioc-quarantine-dataset"
H_Q_EVENT_ID = "ioc-quarantine-event-id"
H_Q_AT = "ioc-quarantine-at"
# On a value cut to what quarantine keeps: how many bytes were received.
H_Q_TRUNCATED = "ioc-quarantine-truncated"
# A quarantine copy keeps at most this much of the value: an input just under the broker's
# 1 MiB limit plus the quarantine headers would not be accepted back, its batch would fail
# again and again and stall the partition. Inputs this large are too large for every
# dataset anyway, so the cut loses nothing a replay could use.
QUARANTINE_MAX_VALUE = 960 * 1024
# Set by `ingest replay` on re-published inputs: a replay rejected again is not re-quarantined.
H_REPLAY_ID = "ioc-replay-id"
H_REPLAY_OF = "ioc-replay-of"
H_REPLAY_NOTE = "ioc-replay-note"
UNKNOWN = "unknown"
_personal_id = event_ids_of("ingest.record.personal")
_rejection_id = event_ids_of(REJECTED_TYPE)


_NO_FEEDS: Mapping[str, str] = MappingProxyType({})


class RejectionTopics(NamedTuple):
    """Where rejections go: `rejected` (IOC-internal, every authenticated rejection), the
    unit's own feed (`unit_feeds`, unit id -> topic), `unauthenticated` (operators: inputs
    whose sender is not verified), `quarantine` (raw bytes)."""

    rejected: str
    quarantine: str
    unauthenticated: str = ""
    unit_feeds: Mapping[str, str] = _NO_FEEDS


def record_key(unit: str, record_id: str) -> str:
    """Key and subject of a unit's record: record ids are unique per unit only."""
    return f"{unit}/{record_id}"


def personal_event_id(canonical_event_id: str) -> str:
    """The event id of a record's personal fields on the restricted topic."""
    return _personal_id(canonical_event_id)


class Outgoing(NamedTuple):
    """A message to produce (a tuple: cheap to build and to unpack)."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


TraceHeaders = list[tuple[str, bytes]]
_PRODUCED_BY = (H_PRODUCER, b"ingest")


def _headers(event_id: str, event_type: str, trace: TraceHeaders,
             extra: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    headers = [(H_EVENT_ID, event_id.encode()), (H_EVENT_TYPE, event_type.encode()), _PRODUCED_BY]
    if extra:
        headers += [(k, v.encode()) for k, v in extra.items()]
    return headers + trace


def envelope_bytes(*, event_id: uuid.UUID | str, type: str, source_unit: str, subject: str | None,
                   occurred_at: datetime, produced_at: datetime, payload: dict[str, Any],
                   causation_id: uuid.UUID | str | None = None) -> bytes:
    """`Envelope(...).to_bytes()` without the per-message validation cost (~15 µs).

    Only for values ingest controls: registry ids, record ids of at most 200
    characters, aware UTC datetimes. `tests/unit/test_outgoing.py` checks the
    bytes parse back into an equal `Envelope`.
    """
    return orjson.dumps({
        "envelope_version": ENVELOPE_SCHEMA_VERSION, "event_id": event_id, "type": type,
        "schema_version": 1, "source_unit": source_unit, "subject": subject,
        "occurred_at": occurred_at, "produced_at": produced_at, "correlation_id": None,
        "causation_id": causation_id, "payload": payload,
    }, option=orjson.OPT_UTC_Z)


_OPT_Z = orjson.OPT_UTC_Z
_ACCEPTED_HEAD = b'{"envelope_version":%d,"event_id":"' % ENVELOPE_SCHEMA_VERSION
_ACCEPTED_TYPE = b'","type":"' + ACCEPTED_TYPE.encode() + b'","schema_version":1,"source_unit":'
_SHARED_TYPE = b'","type":"' + SHARED_TYPE.encode() + b'","schema_version":1,"source_unit":'


class Outputs:
    """Builds the canonical and shared messages of one batch, cheaply.

    The envelope bytes are joined from pre-serialized fragments: constants once per
    process (types, grant fields), the produced-at time once per batch, the record once
    per record (`Accepted.record_json`, the bytes its content hash covers), the few
    other values with orjson. `tests/unit/test_outgoing.py` checks the bytes parse
    into the same `Envelope` as `envelope_bytes` builds.
    """

    def __init__(self, now: datetime, canonical_topics: dict[str, str],
                 special_topics: dict[str, str],
                 restricted_topics: dict[str, str] | None = None) -> None:
        self.now = now
        self._canonical_topics = canonical_topics
        self._special_topics = special_topics
        self._restricted_topics = restricted_topics or {}
        self._produced = (b',"produced_at":' + orjson.dumps(now, option=_OPT_Z)
                          + b',"correlation_id":null,"causation_id":')
        self._json: dict[str, bytes] = {}
        self._tails: dict[tuple[str, str, int], list[tuple[str, bytes]]] = {}
        self._grant_tails: dict[str, bytes] = {}
        self._fragments_by: dict[tuple[str, str, int, int, str, str],
                                 tuple[bytes, bytes, bytes, bytes, bytes]] = {}

    def _j(self, text: str) -> bytes:
        """JSON of a value that repeats (ids from the registry, versions)."""
        out = self._json.get(text)
        if out is None:
            out = self._json[text] = orjson.dumps(text)
        return out

    def _headers(self, event_id: str, event_type: str, dataset: str,
                 trace: TraceHeaders) -> list[tuple[str, bytes]]:
        key = (event_type, dataset, id(trace))
        tail = self._tails.get(key)
        if tail is None:
            tail = self._tails[key] = [(H_EVENT_TYPE, event_type.encode()),
                                       (H_DATASET, dataset.encode()), _PRODUCED_BY, *trace]
        return [(H_EVENT_ID, event_id.encode()), *tail]

    def _fragments(self, acc: Accepted, channel: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """The constant parts of a record's envelopes for its (unit, dataset, versions,
        principal, channel), joined once per batch."""
        key = (acc.unit, acc.dataset, acc.canonical_version, acc.source_version, acc.principal,
               channel)
        fragments = self._fragments_by.get(key)
        if fragments is None:
            j = self._j
            unit, ds = j(acc.unit), j(acc.dataset)
            cv = b"%d" % acc.canonical_version
            fragments = self._fragments_by[key] = (
                _ACCEPTED_TYPE + unit + b',"subject":',
                self._produced + b'null,"payload":{"dataset":' + ds + b',"schema_version":' + cv
                + b',"source_schema_version":%d,"record_id":' % acc.source_version,
                b',"provenance":{"principal":' + j(acc.principal) + b',"channel":' + j(channel)
                + b',"origin":',
                _SHARED_TYPE + unit + b',"subject":',
                b'","payload":{"dataset":' + ds + b',"schema_version":' + cv + b',"record_id":',
            )
        return fragments

    def accepted(self, acc: Accepted, inbound: Inbound, trace: TraceHeaders,
                 views: Sequence[SharedView]) -> list[Outgoing]:
        """The canonical message and one shared message per view (special-request grants)."""
        return self.assemble(acc, inbound.channel, inbound.origin, trace,
                             occurred_json(acc, self.now),
                             [(v.grant, v.event_id, orjson.dumps(v.record)) for v in views])

    def assemble(self, acc: Accepted, channel: str, origin: str, trace: TraceHeaders,
                 occurred: bytes, shared: Sequence[tuple[Grant, str, bytes]]) -> list[Outgoing]:
        """`accepted`, from serialized parts: the record as `acc.record_json`, the event
        time as JSON, each view as its grant, event id and record JSON."""
        head, middle, provenance, shared_head, shared_middle = self._fragments(acc, channel)
        rid = orjson.dumps(acc.record_id)
        scoped = record_key(acc.unit, acc.record_id)
        subject = orjson.dumps(scoped)
        key = scoped.encode()
        event_id = acc.event_id.encode()
        value = b"".join((
            _ACCEPTED_HEAD, event_id, head, subject, b',"occurred_at":', occurred, middle, rid,
            b',"record":', acc.record_json or orjson.dumps(acc.record), b',"client_event_id":',
            b"null" if acc.client_event_id is None else orjson.dumps(acc.client_event_id),
            provenance, orjson.dumps(origin), b',"content_hash":"',
            acc.content_hash.encode(), b'"}}}'))
        out = [Outgoing(self._canonical_topics[acc.dataset], value, key,
                        self._headers(acc.event_id, ACCEPTED_TYPE, acc.dataset, trace))]
        if acc.personal_json:
            personal_type = acc.dataset + PERSONAL_TYPE_SUFFIX
            personal_id = personal_event_id(acc.event_id)
            value = b"".join((
                _ACCEPTED_HEAD, personal_id.encode(), b'","type":', self._j(personal_type),
                b',"schema_version":1,"source_unit":', self._j(acc.unit), b',"subject":', subject,
                b',"occurred_at":', occurred, self._produced, b'"', event_id,
                b'","payload":{"record_id":', rid, b',"canonical_event_id":"', event_id,
                b'","fields":', acc.personal_json, b"}}"))
            out.append(Outgoing(self._restricted_topics[acc.dataset], value, key,
                                self._headers(personal_id, personal_type, acc.dataset, trace)))
        for grant, view_event_id, view_record in shared:
            tail = self._grant_tails.get(grant.id)
            if tail is None:
                tail = self._grant_tails[grant.id] = b"," + orjson.dumps({
                    "grant_id": grant.id, "requester": grant.unit, "purpose": grant.purpose,
                    "expires_at": iso_utc(grant.expires_at) if grant.expires_at else None,
                })[1:] + b"}"
            value = b"".join((
                _ACCEPTED_HEAD, view_event_id.encode(), shared_head, subject, b',"occurred_at":',
                occurred, self._produced, b'"', event_id, shared_middle, rid, b',"record":',
                view_record, tail))
            out.append(Outgoing(self._special_topics[grant.id], value, key,
                                self._headers(view_event_id, SHARED_TYPE, acc.dataset, trace)))
        return out


def occurred_json(acc: Accepted, now: datetime) -> bytes:
    """The record's event time as JSON (the batch's time if it has none)."""
    return orjson.dumps(acc.occurred_at if acc.occurred_at is not None else now, option=_OPT_Z)


def rejection_event_id(inbound: Inbound) -> str:
    """Same inbound delivery -> same rejection event id (consumers dedupe redeliveries)."""
    return _rejection_id(f"{inbound.origin}\x1f{inbound.index}")


def rejection_payload(rej: Rejected, inbound: Inbound, quarantined: bool) -> dict[str, Any]:
    first = rej.problems[0] if rej.problems else None
    return {
        "unit": rej.unit, "code": rej.code.value, "message_vi": rej.message_vi,
        "field": first.field if first else None, "expected": first.expected if first else None,
        "problems": [p.to_json() for p in rej.problems],
        "problems_total": rej.extra.get("problems_total", len(rej.problems)),
        "record_index": inbound.index, "record_id": rej.record_id, "dataset": rej.dataset,
        "schema_version": rej.schema_version, "client_event_id": rej.client_event_id,
        "origin": inbound.origin, "channel": inbound.channel,
        "identity_verified": rej.principal is not None and rej.extra.get("identity_verified", True),
        "quarantined": quarantined, "replay": inbound.replay,
    }


def rejection_messages(topics: RejectionTopics | tuple[str, str], rej: Rejected, inbound: Inbound,
                       now: datetime, centre_unit: str, trace: TraceHeaders, *,
                       keep_copy: bool = True) -> list[Outgoing]:
    """The rejection and, unless it is a replay (or `keep_copy` is False: a parked record,
    whose row keeps the bytes), the quarantine copy.

    A rejection of an authenticated input goes to the IOC-internal rejected topic and to
    the unit's own feed, keyed by the unit. One whose sender is not verified goes to
    the operators' unauthenticated topic, keyed by its origin: never addressed to the
    unit it claims to be (anyone could flood that unit's feed). An internal error of a
    submission not yet attributed (identity not checked) goes to the rejected topic only,
    under `unknown`.
    """
    if not isinstance(topics, RejectionTopics):
        topics = RejectionTopics(*topics)
    event_id = rejection_event_id(inbound)
    verified = rej.principal is not None and rej.unit is not None
    address = rej.unit if verified and rej.unit else UNKNOWN
    quarantine = keep_copy and not inbound.replay
    subject = rej.record_id if verified and rej.record_id else inbound.origin
    value = envelope_bytes(
        event_id=event_id, type=REJECTED_TYPE, source_unit=centre_unit,
        subject=subject[:200], occurred_at=now, produced_at=now,
        payload=rejection_payload(rej, inbound, quarantine))
    extra = {H_DATASET: rej.dataset} if rej.dataset else None
    headers = _headers(event_id, REJECTED_TYPE, trace, extra)
    if verified:
        out = [Outgoing(topics.rejected, value, address.encode(), headers)]
        feed = topics.unit_feeds.get(address)
        if feed:
            out.append(Outgoing(feed, value, address.encode(), headers))
    elif (rej.code is Code.INTERNAL_ERROR and rej.extra.get("identity_verified") is not False) \
            or not topics.unauthenticated:
        out = [Outgoing(topics.rejected, value, address.encode(), headers)]
    else:
        out = [Outgoing(topics.unauthenticated, value, inbound.origin.encode(), headers)]
    if quarantine:
        marks = {H_Q_CODE: rej.code.value, H_Q_ORIGIN: inbound.origin, H_Q_UNIT: address,
                 H_Q_DATASET: rej.dataset or "", H_Q_EVENT_ID: event_id, H_Q_AT: iso_utc(now)}
        value = inbound.value or b""
        cut = inbound.header(H_Q_TRUNCATED) if inbound.channel == "http" else None
        if len(value) > QUARANTINE_MAX_VALUE:
            cut, value = str(len(value)), value[:QUARANTINE_MAX_VALUE]
        if cut:
            marks[H_Q_TRUNCATED] = cut     # set by the HTTP door on a body it stopped reading
        headers = [(k, v) for k, v in inbound.headers if not k.startswith(QUARANTINE_PREFIX)]
        headers += [(k, v.encode()) for k, v in marks.items()]
        # The original key, unless it is absurdly long (it counts against the same limit).
        key = inbound.key if inbound.key is not None and len(inbound.key) <= 1024 else None
        out.append(Outgoing(topics.quarantine, value,
                            key if key is not None else address.encode(), headers))
    return out


Decided = tuple[Decision, list[Outgoing]]


class Deciding:
    """Pure: decides a batch of submissions and builds each one's messages (as if new)."""

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

    def batch(self, inbounds: Sequence[Inbound], now: datetime,
              traces: Sequence[TraceHeaders]) -> list[Decided]:
        # Special-request expiry is judged once per batch, at the batch's `now`.
        receivers = {ds: active_grants(grants, now) for ds, grants in self._receivers.items()}
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

    def rejection(self, inbound: Inbound, rejected: Rejected, now: datetime,
                  trace: TraceHeaders, *, keep_copy: bool = True) -> list[Outgoing]:
        """The rejection addressed to the unit and the quarantine copy."""
        return rejection_messages(self.rejection_topics, rejected, inbound, now,
                                  self.centre_unit, trace, keep_copy=keep_copy)
