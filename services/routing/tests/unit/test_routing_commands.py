"""Command parsing, Vietnamese answers, and what the reporter is told."""

from __future__ import annotations

import json
import unicodedata
import uuid

import pytest
from ioc_shared.commands import bounded_text
from routing.domain.commands import Command, parse_command, screen_command
from routing.domain.model import IncidentEvent
from routing.domain.reasons import _MESSAGES, STATE_NAMES, Reason, Rejection, accepted_message
from routing.domain.reporter import for_duplicate, status_update, survey_request
from routing.domain.states import State, Verb
from routing_examples import NOW, OPERATOR, POLICY, UNIT_A, incident


def test_command_is_read_from_type_subject_and_payload_but_never_the_actor() -> None:
    cid = uuid.uuid4()
    cmd = parse_command("routing.command.transfer", "inc-1", {
        "command_id": str(cid), "unit": "xa-b", "reason": "  Thuộc xã B ",
        "actor": "ioc-leader", "roles": ["ioc-leader"]})
    assert cmd == Command(Verb.TRANSFER, cid, "inc-1", reason="Thuộc xã B", unit="xa-b")


def test_bad_commands_become_rejections() -> None:
    assert isinstance(parse_command("routing.command.fly", "x", {"command_id": str(uuid.uuid4())}),
                      Rejection)
    no_id = parse_command("routing.command.verify", "x", {})
    assert isinstance(no_id, Rejection) and no_id.reason is Reason.MALFORMED
    no_subject = parse_command("routing.command.verify", None, {"command_id": str(uuid.uuid4())})
    assert isinstance(no_subject, Rejection) and no_subject.reason is Reason.MALFORMED


def test_every_message_is_vietnamese_nfc() -> None:
    texts = [*_MESSAGES.values(), *STATE_NAMES.values(), *(accepted_message(v) for v in Verb)]
    assert all(unicodedata.is_normalized("NFC", t) for t in texts)
    assert accepted_message(Verb.APPROVE) == "Đã thực hiện: phê duyệt."


def test_reporter_update_carries_only_the_reporters_own_reference() -> None:
    inc = incident(State.RESOLVED, assigned="xa-a", reporter_ref="ticket-7")
    event = IncidentEvent("routing.incident.resolved", inc.id, State.IN_PROGRESS, State.RESOLVED,
                          UNIT_A, NOW, None, {"note": "Đã thu gom"})
    update = status_update(event, inc)
    assert update is not None
    assert update["reporter"] == {"source_unit": "xa-c", "dataset": "field-reports",
                                  "record_id": "inc-1", "reporter_ref": "ticket-7"}
    assert update["status_text"] == "đã xử lý xong" and update["resolution_note"] == "Đã thu gom"
    internal = IncidentEvent("routing.incident.approved", inc.id, State.VERIFIED, State.APPROVED,
                             OPERATOR, NOW)
    assert status_update(internal, inc) is None
    survey = survey_request(inc, POLICY.survey)
    assert survey["unit"] == "xa-a" and survey["max_score"] == 5
    dup = incident(State.MERGED, id="inc-9", reporter_ref="ticket-9")
    relayed = for_duplicate(update, dup)
    assert relayed["incident_id"] == "inc-9" and relayed["primary_id"] == "inc-1"
    assert relayed["reporter"]["reporter_ref"] == "ticket-9"


def _doc(**payload: object) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "type": "routing.command.answer_survey",
            "source_unit": "x", "subject": "inc-1",
            "payload": {"command_id": str(uuid.uuid4()), "score": 4, **payload}}


@pytest.mark.parametrize(("raw", "reason", "where"), [
    (json.dumps(_doc(comment="tốt\x00")).encode(), Reason.FORBIDDEN_CHARACTER,
     "U+0000 tại $.payload.comment"),
    (json.dumps(_doc(comment="a\u202eb")).encode(), Reason.FORBIDDEN_CHARACTER, "U+202E"),
    (json.dumps(_doc(comment="\ud800")).encode(), Reason.MALFORMED_JSON, ""),
    (b'{"type": "routing.command.verify", "type": "routing.command.approve"}',
     Reason.DUPLICATE_KEY, "$.type"),
    (b"\xff\xfe not json", Reason.MALFORMED_JSON, ""),
    (b"[1, 2]", Reason.MALFORMED, "không phải một đối tượng JSON"),
    # Deep enough for the stdlib's duplicate-key pass to recurse out (orjson accepts it).
    (b'{"a": "x\\":", "b": ' + b"[" * 1000 + b"]" * 1000 + b"}", Reason.MALFORMED_JSON, ""),
])
def test_text_that_cannot_be_stored_is_refused_at_the_door(raw: bytes, reason: Reason,
                                                         where: str) -> None:
    _, result = screen_command(raw)
    assert isinstance(result, Rejection) and result.reason is reason
    assert where in result.message
    assert bounded_text(result.message, 1000) == result.message   # the answer itself is clean


def test_a_clean_command_passes_the_door_with_its_bom_stripped() -> None:
    doc = _doc(comment="Rất hài lòng\nCảm ơn")
    assert screen_command(b"\xef\xbb\xbf" + json.dumps(doc).encode()) == (doc, None)

