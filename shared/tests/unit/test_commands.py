"""Signed commands: the verified sender and the screening of the document (ioc_shared.commands)."""

from __future__ import annotations

import json
import uuid

import pytest
from ioc_shared.commands import (
    NOT_AN_OBJECT,
    Refusal,
    bounded_text,
    command_id_of,
    invalid_field,
    screen_document,
    verified_sender,
)
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry, sign
from pydantic import BaseModel, ValidationError

REGISTRY = load_registry(REPO_ROOT / "config" / "registry.yaml",
                         REPO_ROOT / "config" / "credentials.dev.yaml")
BODY = b'{"type": "routing.command.verify"}'
GOOD = sign("dev-secret-xa-loc-an-0001", BODY)


def test_the_sender_is_the_principal_whose_secret_signed_the_body() -> None:
    principal = verified_sender(REGISTRY, "xa-loc-an-system", GOOD, BODY)
    assert principal is not None and principal.unit == "xa-loc-an"


@pytest.mark.parametrize(("principal_id", "signature", "body"), [
    (None, GOOD, BODY),                          # no principal header
    ("xa-loc-an-system", None, BODY),            # no signature header
    ("xa-loc-an-system", "", BODY),
    ("xa-loc-an-system", GOOD, BODY + b" "),     # another body
    ("tt-loc-ninh-system", GOOD, BODY),          # someone else's key
    ("nobody", GOOD, BODY),
    ("xa-loc-an-system", "é" * len(GOOD), BODY),  # not ASCII: refused, not a TypeError
])
def test_no_sender_without_a_valid_signature(principal_id: str | None, signature: str | None,
                                             body: bytes) -> None:
    assert verified_sender(REGISTRY, principal_id, signature, body) is None


@pytest.mark.parametrize(("raw", "refusal", "returned"), [
    (b'{"a": 1, "a": 2}', Refusal("duplicate_key", "$.a"), False),
    (b"\xff\xfe not json", None, False),
    (b"[1, 2]", Refusal(NOT_AN_OBJECT), False),
    (json.dumps({"p": {"c": "x\x00"}}).encode(), Refusal("forbidden_character", "$.p.c", "U+0000"),
     True),
])
def test_documents_that_cannot_be_read_are_refused_with_a_code(
        raw: bytes, refusal: Refusal | None, returned: bool) -> None:
    doc, found = screen_document(raw)
    assert found is not None
    if refusal is None:
        assert found.code == "malformed_json"
    else:
        assert found == refusal
    assert (doc is not None) is returned   # a forbidden character: still says which command


def test_a_clean_document_passes_with_its_bom_stripped() -> None:
    doc = {"type": "t", "payload": {"comment": "Rất hài lòng\nCảm ơn"}}
    assert screen_document(b"\xef\xbb\xbf" + json.dumps(doc).encode()) == (doc, None)


def test_bounded_text_keeps_length_and_replaces_what_cannot_be_stored() -> None:
    assert bounded_text("ab\x00c\ud800\u202e", 100) == "ab\ufffdc\ufffd\ufffd"
    assert bounded_text("x" * 500, 40) == "x" * 40
    assert bounded_text(None, 5) is None and bounded_text(12, 5) == "12"


def test_command_id_is_read_when_it_can_be() -> None:
    known = uuid.uuid4()
    assert command_id_of({"command_id": str(known)}) == known
    assert command_id_of({"command_id": "nope"}) is None
    assert command_id_of({}) is None and command_id_of(["x"]) is None


def test_the_first_invalid_field_is_named_in_vietnamese() -> None:
    class Payload(BaseModel):
        score: int

    with pytest.raises(ValidationError) as caught:
        Payload.model_validate({"score": "many"})
    assert invalid_field(caught.value) == "trường 'score' không hợp lệ (int_parsing)"
