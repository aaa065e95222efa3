"""What ingest decides about one submission: accepted (canonical record) or rejected (reasons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingest.domain.codes import Code, message_vi


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a submission; `field` is None for whole-submission problems."""

    code: Code
    field: str | None = None
    expected: str | None = None
    detail: str | None = None

    @property
    def message_vi(self) -> str:
        text = message_vi(self.code, self.field)
        return f"{text} {self.detail}" if self.detail else text

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code.value, "field": self.field, "expected": self.expected,
                "message_vi": self.message_vi}


@dataclass(slots=True)
class Inbound:
    """One submission exactly as it arrived (raw bytes and headers), and where from.

    Treated as immutable (not `frozen`: a frozen dataclass costs a `object.__setattr__`
    per field to build, and one is built per record on the hot path).

    `origin` identifies the delivery, not the content: a Kafka redelivery has
    the same origin (topic:partition:offset), a unit re-sending the same record
    has a new one. That is how a redelivery is told apart from a duplicate.
    """

    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    origin: str
    key: bytes | None = None
    channel: str = "kafka"
    replay: bool = False
    index: int = 0           # position in an HTTP batch; 0 for Kafka (one record per message)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return _text(v)
        return None

    def header_pair(self, first: str, second: str) -> tuple[str | None, str | None]:
        """`(header(first), header(second))` in one pass over the headers."""
        a = b = None
        found_a = found_b = False
        for k, v in self.headers:
            if k == first:
                if not found_a:
                    a, found_a = _text(v), True
            elif k == second and not found_b:
                b, found_b = _text(v), True
        return a, b


def _text(value: Any) -> str | None:
    try:
        return value.decode() if isinstance(value, bytes | bytearray) else str(value)
    except UnicodeDecodeError:
        return None


@dataclass(slots=True)
class Accepted:
    """The canonical form of an accepted submission; treated as immutable (see `Inbound`).

    `record_json`: the record serialized with sorted keys, the bytes `content_hash` hashes
    and the canonical envelope embeds: without the citizens' personal fields, with their
    pseudonym `reporter_ref`. `personal_json`: those fields as a JSON object (for the
    restricted topic; empty when the record has none). `record` is the whole normalized
    record, personal fields included (special-request grants may name them).
    `event_id`: the deterministic uuid5, as a string.
    """

    unit: str
    principal: str
    dataset: str
    source_version: int
    canonical_version: int
    record_id: str
    record: dict[str, Any]
    content_hash: str
    event_id: str
    client_event_id: str | None = None
    occurred_at: datetime | None = None
    record_json: bytes = b""
    personal_json: bytes = b""


@dataclass(frozen=True, slots=True)
class Rejected:
    code: Code
    problems: tuple[Problem, ...]
    unit: str | None = None        # None when the sender could not be identified
    principal: str | None = None
    dataset: str | None = None
    schema_version: int | None = None
    record_id: str | None = None
    client_event_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def message_vi(self) -> str:
        if self.code is Code.SCHEMA_VIOLATION or len(self.problems) != 1:
            return message_vi(self.code)
        return self.problems[0].message_vi


Decision = Accepted | Rejected


def rejected(code: Code, *, expected: str | None = None, detail: str | None = None,
             **context: Any) -> Rejected:
    return Rejected(code=code, problems=(Problem(code, None, expected, detail),), **context)


def as_duplicate(accepted: Accepted) -> Rejected:
    """The rejection a record gets when the same record or client event id was accepted before."""
    return Rejected(
        code=Code.DUPLICATE,
        problems=(Problem(Code.DUPLICATE, None, "mã bản ghi hoặc event_id chưa từng gửi"),),
        unit=accepted.unit, principal=accepted.principal, dataset=accepted.dataset,
        schema_version=accepted.source_version, record_id=accepted.record_id,
        client_event_id=accepted.client_event_id)
