"""Signed commands on the bus: who sent one, and whether its document can be read at all.

A command carries `ioc-principal` and `ioc-signature` (HMAC-SHA256 of the record's
value) in its headers; the sender is the principal whose secret signed it, never a
payload field. The document is strict JSON (no duplicate key, which a lenient parser
would resolve silently), an object, and free of forbidden characters. Each service
keeps its verbs, its authorisation and its Vietnamese reasons; this module gives them
the verified principal or a machine code (pure, no I/O).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ioc_shared.contracts.hygiene import HygieneError, find_forbidden, is_clean, loads_strict
from ioc_shared.registry import Principal, Registry

NOT_AN_OBJECT = "not_an_object"


def verified_sender(registry: Registry, principal_id: str | None, signature: str | None,
                    body: bytes) -> Principal | None:
    """The principal that signed `body`, or None (no header, a signature that is not
    ASCII hex, an unknown principal or a wrong signature)."""
    if not principal_id or not signature or not signature.isascii():
        return None
    return registry.verify_signature(principal_id, body, signature)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command document cannot be read: `code` is a hygiene code
    (malformed_json, number_out_of_range, duplicate_key, forbidden_character) or
    `not_an_object`; `path` where (bounded, printable); `character` the forbidden one's name."""

    code: str
    path: str = "$"
    character: str = ""


def screen_document(raw: bytes) -> tuple[dict[str, Any] | None, Refusal | None]:
    """(the command document, why it is refused). A document with a forbidden character
    is still returned, for the answer to say which command it was (read it only through
    `bounded_text` and `command_id_of`)."""
    try:
        doc = loads_strict(raw)
    except HygieneError as exc:
        return None, Refusal(exc.code, bounded_text(exc.path, 120) or "$")
    if not isinstance(doc, dict):
        return None, Refusal(NOT_AN_OBJECT)
    problem = find_forbidden(doc)
    if problem is not None:
        return doc, Refusal(problem.code, bounded_text(problem.path, 120) or "$",
                            problem.detail.split(" ", 1)[0])
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


def command_id_of(payload: object) -> uuid.UUID | None:
    """The command id if one can be read, to answer even a malformed command."""
    if not isinstance(payload, dict):
        return None
    try:
        return uuid.UUID(str(payload.get("command_id")))
    except (ValueError, TypeError):
        return None


def invalid_field(exc: ValidationError) -> str:
    """The first invalid field of a command's payload, in Vietnamese, for the answer."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"trường '{where}' không hợp lệ ({first['type']})"
