"""Commands units and operators send, parsed from the envelope's type and payload.

Identity and roles never come from here: the payload says *what* to do, the
verified principal says *who* does it.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from ioc_shared.contracts.hygiene import HygieneError, find_forbidden, is_clean, loads_strict
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routing.domain.reasons import Reason, Rejection, reject
from routing.domain.states import Verb

COMMAND_TYPE_PREFIX = "routing.command."

# Hygiene codes (ioc_shared.contracts.hygiene) -> reason of the rejected command.
_HYGIENE_REASONS = {"malformed_json": Reason.MALFORMED_JSON, "duplicate_key": Reason.DUPLICATE_KEY,
                    "forbidden_character": Reason.FORBIDDEN_CHARACTER}


def screen_command(raw: bytes) -> tuple[dict[str, Any] | None, Rejection | None]:
    """(the command document, why it is refused): strict JSON (no duplicate key, which a
    lenient parser would silently resolve), an object, and no forbidden character (NUL,
    controls, bidi overrides, lone surrogates...) in any key or value. A document with a
    forbidden character is still returned, for the answer to say which command it was
    (read only through `bounded_text` and `command_id_of`)."""
    try:
        doc = loads_strict(raw)
    except HygieneError as exc:
        return None, reject(_HYGIENE_REASONS[exc.code], bounded_text(exc.path, 120) or "$")
    if not isinstance(doc, dict):
        return None, reject(Reason.MALFORMED, "không phải một đối tượng JSON")
    problem = find_forbidden(doc)
    if problem is not None:
        return doc, reject(Reason.FORBIDDEN_CHARACTER,
                           f"{problem.detail.split(' ', 1)[0]} tại "
                           f"{bounded_text(problem.path, 120)}")
    return doc, None


def bounded_text(value: object, limit: int) -> str | None:
    """`value` as text fit to store and show whatever it held: at most `limit` characters,
    each forbidden character replaced by U+FFFD. For the record of a refused command."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text[:limit]
    if is_clean(text):
        return text
    return "".join(ch if is_clean(ch) else "\ufffd" for ch in text)


class _Payload(BaseModel):
    # Unknown fields are ignored (a client may send its own bookkeeping), but
    # fields that try to name the actor are never read.
    model_config = ConfigDict(extra="ignore", frozen=True)

    command_id: uuid.UUID
    incident_id: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)
    note: str | None = Field(default=None, max_length=4000)
    resolution_note: str | None = Field(default=None, max_length=4000)
    unit: str | None = Field(default=None, max_length=100)
    primary_id: str | None = Field(default=None, max_length=200)
    status: str | None = Field(default=None, max_length=40)
    score: int | None = None
    comment: str | None = Field(default=None, max_length=2000)

    @field_validator("reason", "note", "resolution_note", "comment")
    @classmethod
    def _clean_text(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = unicodedata.normalize("NFC", value).strip()
        return value or None


@dataclass(frozen=True, slots=True)
class Command:
    verb: Verb
    command_id: uuid.UUID
    incident_id: str
    reason: str | None = None
    note: str | None = None
    unit: str | None = None
    primary_id: str | None = None
    score: int | None = None
    comment: str | None = None


def parse_command(event_type: str, subject: str | None,
                  payload: dict[str, Any]) -> Command | Rejection:
    if not event_type.startswith(COMMAND_TYPE_PREFIX):
        return reject(Reason.UNKNOWN_VERB, event_type)
    verb_text = event_type[len(COMMAND_TYPE_PREFIX):]
    try:
        verb = Verb(verb_text)
    except ValueError:
        return reject(Reason.UNKNOWN_VERB, verb_text)
    try:
        body = _Payload.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        return reject(Reason.MALFORMED, f"trường '{where}' không hợp lệ ({first['type']})")
    incident_id = body.incident_id or subject
    if not incident_id:
        return reject(Reason.MALFORMED, "thiếu mã sự cố (subject hoặc incident_id)")
    return Command(
        verb=verb, command_id=body.command_id, incident_id=incident_id,
        reason=body.reason, note=body.resolution_note or body.note, unit=body.unit,
        primary_id=body.primary_id, score=body.score, comment=body.comment,
    )


def command_id_of(payload: object) -> uuid.UUID | None:
    """The command id if one can be read, to answer even a malformed command."""
    if not isinstance(payload, dict):
        return None
    try:
        return uuid.UUID(str(payload.get("command_id")))
    except (ValueError, TypeError):
        return None
