"""Report lifecycle and commands: draft -> submitted -> approved -> issued -> sent (pure).

Who acts comes only from the verified principal; the payload says what to do. Only the
IOC leader approves. An issued version is never changed; regenerating makes a new one.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ioc_shared.commands import invalid_field
from pydantic import BaseModel, ConfigDict, Field, ValidationError

COMMAND_PREFIX = "reporting.command."


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    ISSUED = "issued"
    SENT = "sent"


class Verb(StrEnum):
    GENERATE = "generate"        # a new version of a periodic report (draft)
    SUBMIT = "submit"
    APPROVE = "approve"
    ISSUE = "issue"
    SEND = "send"
    REQUEST = "request"          # thematic or ad-hoc report, generated and published


# verb -> (statuses it starts from, status it leads to, roles allowed)
TRANSITIONS: dict[Verb, tuple[frozenset[Status], Status, frozenset[str]]] = {
    Verb.SUBMIT: (frozenset({Status.DRAFT}), Status.SUBMITTED, frozenset({"ioc-operator"})),
    Verb.APPROVE: (frozenset({Status.SUBMITTED}), Status.APPROVED, frozenset({"ioc-leader"})),
    Verb.ISSUE: (frozenset({Status.APPROVED}), Status.ISSUED,
                 frozenset({"ioc-operator", "ioc-leader"})),
    Verb.SEND: (frozenset({Status.ISSUED}), Status.SENT, frozenset({"ioc-operator", "ioc-leader"})),
}
CREATE_ROLES = frozenset({"ioc-operator", "ioc-leader"})


class Reason(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    MALFORMED = "malformed_command"
    UNKNOWN_VERB = "unknown_command"
    ROLE_REQUIRED = "role_required"
    UNKNOWN_REPORT = "unknown_report"
    ILLEGAL_TRANSITION = "illegal_transition"
    SUPERSEDED = "superseded_version"
    UNKNOWN_UNIT = "unknown_unit"
    UNKNOWN_COMMUNE = "unknown_commune"
    UNKNOWN_CATEGORY = "unknown_category"
    UNKNOWN_DOMAIN = "unknown_domain"
    BAD_PERIOD = "bad_period"
    FUTURE_PERIOD = "future_period"
    EMPTY_PERIOD = "empty_period"
    DUPLICATE_COMMAND = "duplicate_command"
    INTERNAL_ERROR = "internal_error"


STATUS_NAMES = {Status.DRAFT: "dự thảo", Status.SUBMITTED: "đã trình", Status.APPROVED: "đã duyệt",
                Status.ISSUED: "đã ban hành", Status.SENT: "đã gửi"}
VERB_NAMES = {Verb.GENERATE: "lập báo cáo", Verb.SUBMIT: "trình báo cáo",
              Verb.APPROVE: "phê duyệt báo cáo", Verb.ISSUE: "ban hành báo cáo",
              Verb.SEND: "gửi báo cáo", Verb.REQUEST: "lập báo cáo chuyên đề, đột xuất"}
ROLE_NAMES = {"ioc-leader": "lãnh đạo Trung tâm IOC", "ioc-operator": "cán bộ vận hành IOC"}

_MESSAGES = {
    Reason.UNAUTHENTICATED: "Lệnh không được xác thực: thiếu hoặc sai chữ ký của bên gửi.",
    Reason.MALFORMED: "Lệnh không đúng định dạng: {detail}.",
    Reason.UNKNOWN_VERB: "Lệnh '{detail}' không được hỗ trợ.",
    Reason.ROLE_REQUIRED: "Chỉ {detail} mới được thực hiện thao tác này.",
    Reason.UNKNOWN_REPORT: "Không tìm thấy báo cáo {detail}.",
    Reason.ILLEGAL_TRANSITION: "Không thể {detail}.",
    Reason.SUPERSEDED: "Báo cáo này đã có phiên bản mới hơn ({detail}); hãy thao tác trên phiên bản mới.",
    Reason.UNKNOWN_UNIT: "Đơn vị '{detail}' không có trong danh mục.",
    Reason.UNKNOWN_COMMUNE: "Xã, thị trấn '{detail}' không có trong danh mục.",
    Reason.UNKNOWN_CATEGORY: "Lĩnh vực '{detail}' không có trong danh mục.",
    Reason.UNKNOWN_DOMAIN: "Lĩnh vực dữ liệu '{detail}' không có trong danh mục.",
    Reason.BAD_PERIOD: "Kỳ báo cáo không hợp lệ: {detail}.",
    Reason.FUTURE_PERIOD: "Kỳ báo cáo {detail} chưa kết thúc hoặc ở tương lai.",
    Reason.EMPTY_PERIOD: "Kỳ báo cáo {detail} không có số liệu nào để báo cáo.",
    Reason.DUPLICATE_COMMAND: "Lệnh này đã được xử lý trước đó.",
    Reason.INTERNAL_ERROR: ("Hệ thống gặp lỗi nội bộ khi xử lý lệnh này; lệnh đã được lưu lại "
                            "để xử lý lại sau khi khắc phục."),
}


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str


def reject(reason: Reason, detail: str = "") -> Rejection:
    return Rejection(reason, unicodedata.normalize("NFC", _MESSAGES[reason].format(detail=detail)))


def accepted_message(verb: Verb, status: Status | None = None, number: str | None = None) -> str:
    text = f"Đã thực hiện: {VERB_NAMES[verb]}"
    if status is not None:
        text += f" (báo cáo {STATUS_NAMES[status]}"
        text += f", {number})" if number else ")"
    return unicodedata.normalize("NFC", text + ".")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    command_id: uuid.UUID
    report_id: uuid.UUID | None = None
    period: str | None = Field(default=None, max_length=40)
    kind: str | None = Field(default=None, max_length=20)
    domain: str | None = Field(default=None, max_length=60)
    commune: str | None = Field(default=None, max_length=100)
    unit: str | None = Field(default=None, max_length=100)
    category: str | None = Field(default=None, max_length=100)


@dataclass(frozen=True, slots=True)
class Command:
    verb: Verb
    command_id: uuid.UUID
    report_id: uuid.UUID | None = None
    period: str | None = None
    kind: str | None = None
    domain: str | None = None
    commune: str | None = None
    unit: str | None = None
    category: str | None = None


def parse_command(event_type: str, payload: dict[str, Any]) -> Command | Rejection:
    if not event_type.startswith(COMMAND_PREFIX):
        return reject(Reason.UNKNOWN_VERB, event_type)
    try:
        verb = Verb(event_type[len(COMMAND_PREFIX):])
    except ValueError:
        return reject(Reason.UNKNOWN_VERB, event_type[len(COMMAND_PREFIX):])
    try:
        body = _Payload.model_validate(payload)
    except ValidationError as exc:
        return reject(Reason.MALFORMED, invalid_field(exc))
    if verb in TRANSITIONS and body.report_id is None:
        return reject(Reason.MALFORMED, "thiếu mã báo cáo (report_id)")
    if verb in (Verb.GENERATE, Verb.REQUEST) and not body.period:
        return reject(Reason.MALFORMED, "thiếu kỳ báo cáo (period)")
    if verb is Verb.REQUEST and body.kind not in (None, "thematic", "ad-hoc"):
        return reject(Reason.MALFORMED, "kind phải là 'thematic' hoặc 'ad-hoc'")
    return Command(verb, body.command_id, body.report_id, body.period, body.kind, body.domain,
                   body.commune, body.unit, body.category)


def authorise(verb: Verb, roles: frozenset[str]) -> Rejection | None:
    allowed = TRANSITIONS[verb][2] if verb in TRANSITIONS else CREATE_ROLES
    if roles & allowed:
        return None
    names = " hoặc ".join(ROLE_NAMES[r] for r in sorted(allowed))
    return reject(Reason.ROLE_REQUIRED, names)


def transition(verb: Verb, status: Status) -> Status | Rejection:
    starts, target, _ = TRANSITIONS[verb]
    if status not in starts:
        return reject(Reason.ILLEGAL_TRANSITION, f"{VERB_NAMES[verb]} khi báo cáo {STATUS_NAMES[status]}")
    return target


def document_number(seq: int, suffix: str) -> str:
    """Số: 07/BC-IOC (two digits at least, as usual in the register)."""
    return f"{seq:02d}/{suffix}"
