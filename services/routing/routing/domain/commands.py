"""Commands units and operators send, parsed from the envelope's type and payload.

Identity and roles never come from here: the payload says *what* to do, the
verified principal says *who* does it.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from ioc_shared.commands import NOT_AN_OBJECT, invalid_field, screen_document
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routing.domain.reasons import Reason, Rejection, reject
from routing.domain.states import Verb

COMMAND_TYPE_PREFIX = "routing.command."

# Hygiene codes (ioc_shared.contracts.hygiene) -> reason of the rejected command.
_HYGIENE_REASONS = {"malformed_json": Reason.MALFORMED_JSON, "number_out_of_range": Reason.MALFORMED_JSON,
                    "duplicate_key": Reason.DUPLICATE_KEY,
                    "forbidden_character": Reason.FORBIDDEN_CHARACTER}


def screen_command(raw: bytes) -> tuple[dict[str, Any] | None, Rejection | None]:
    """(the command document, why it is refused), by `ioc_shared.commands.screen_document`:
    strict JSON, an object, no forbidden character in any key or value."""
    doc, refusal = screen_document(raw)
    if refusal is None:
        return doc, None
    if refusal.code == NOT_AN_OBJECT:
        return doc, reject(Reason.MALFORMED, "không phải một đối tượng JSON")
    if refusal.code == "forbidden_character":
        return doc, reject(Reason.FORBIDDEN_CHARACTER, f"{refusal.character} tại {refusal.path}")
    return doc, reject(_HYGIENE_REASONS[refusal.code], refusal.path)


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
        return reject(Reason.MALFORMED, invalid_field(exc))
    incident_id = body.incident_id or subject
    if not incident_id:
        return reject(Reason.MALFORMED, "thiếu mã sự cố (subject hoặc incident_id)")
    return Command(
        verb=verb, command_id=body.command_id, incident_id=incident_id,
        reason=body.reason, note=body.resolution_note or body.note, unit=body.unit,
        primary_id=body.primary_id, score=body.score, comment=body.comment,
    )
