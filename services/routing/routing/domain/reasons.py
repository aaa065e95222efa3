"""Machine-readable reason codes with the Vietnamese message shown to the sender."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from routing.domain.states import TRANSITIONS, State, Verb


class Reason(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    MALFORMED = "malformed_command"
    MALFORMED_JSON = "malformed_json"
    DUPLICATE_KEY = "duplicate_key"
    FORBIDDEN_CHARACTER = "forbidden_character"
    UNKNOWN_VERB = "unknown_command"
    UNKNOWN_INCIDENT = "unknown_incident"
    ROLE_REQUIRED = "role_required"
    NOT_ASSIGNED_TO_UNIT = "not_assigned_to_unit"
    ILLEGAL_TRANSITION = "illegal_transition"
    REASON_REQUIRED = "reason_required"
    RESOLUTION_NOTE_REQUIRED = "resolution_note_required"
    NOTE_REQUIRED = "note_required"
    UNKNOWN_UNIT = "unknown_unit"
    UNIT_DOES_NOT_HANDLE_INCIDENTS = "unit_does_not_handle_incidents"
    SAME_UNIT = "same_unit"
    UNKNOWN_PRIMARY = "unknown_primary"
    MERGE_INTO_SELF = "merge_into_self"
    PRIMARY_NOT_OPEN = "primary_not_open"
    SURVEY_ALREADY_ANSWERED = "survey_already_answered"
    INVALID_SCORE = "invalid_score"
    MERGED = "incident_merged"
    DUPLICATE_COMMAND = "duplicate_command"
    # Data disputes (routing.domain.disputes).
    UNKNOWN_DATASET = "unknown_dataset"
    DATASET_NOT_PERMITTED = "dataset_not_permitted"
    NOT_THE_DATASET_TOPIC = "not_the_dataset_topic"
    RECORD_NOT_FOUND = "record_not_found"
    RECORD_NOT_FROM_INGEST = "record_not_from_ingest"
    EVENT_ID_MISMATCH = "event_id_mismatch"
    RECORD_UNUSABLE = "record_unusable"


STATE_NAMES: dict[State, str] = {
    State.RECEIVED: "đã tiếp nhận",
    State.VERIFIED: "đã xác minh",
    State.REJECTED: "bị từ chối do thông tin không xác thực",
    State.APPROVED: "đã được lãnh đạo IOC phê duyệt",
    State.ASSIGNED: "đã được giao cho đơn vị xử lý",
    State.ACKNOWLEDGED: "đơn vị đã tiếp nhận",
    State.IN_PROGRESS: "đang xử lý",
    State.RESOLVED: "đã xử lý xong",
    State.CLOSED: "đã đóng",
    State.RETURNED: "bị đơn vị trả lại",
    State.MERGED: "đã gộp vào sự cố khác",
}

VERB_NAMES: dict[Verb, str] = {
    Verb.VERIFY: "xác minh",
    Verb.REJECT: "từ chối",
    Verb.APPROVE: "phê duyệt",
    Verb.ASSIGN: "giao xử lý",
    Verb.ACKNOWLEDGE: "xác nhận tiếp nhận",
    Verb.UPDATE_STATUS: "cập nhật tiến độ",
    Verb.RETURN: "trả lại",
    Verb.TRANSFER: "chuyển đơn vị",
    Verb.RESOLVE: "báo cáo kết quả xử lý",
    Verb.CLOSE: "đóng",
    Verb.REOPEN: "mở lại",
    Verb.MERGE: "gộp trùng",
    Verb.ANSWER_SURVEY: "trả lời khảo sát",
}

_MESSAGES: dict[Reason, str] = {
    Reason.UNAUTHENTICATED: "Lệnh không được xác thực: thiếu hoặc sai chữ ký của bên gửi.",
    Reason.MALFORMED: "Lệnh không đúng định dạng: {detail}.",
    Reason.MALFORMED_JSON: "Lệnh không phải JSON hợp lệ.",
    Reason.DUPLICATE_KEY: "Lệnh có khóa JSON bị lặp ({detail}): không rõ giá trị nào là đúng.",
    Reason.FORBIDDEN_CHARACTER: "Lệnh chứa ký tự không được phép ({detail}): ký tự NUL, ký tự "
                                "điều khiển, ký tự đảo chiều hoặc ký tự vô hình.",
    Reason.UNKNOWN_VERB: "Lệnh '{detail}' không được hỗ trợ.",
    Reason.UNKNOWN_INCIDENT: "Không tìm thấy sự cố {detail}.",
    Reason.ROLE_REQUIRED: "Chỉ {detail} mới được thực hiện thao tác này.",
    Reason.NOT_ASSIGNED_TO_UNIT: "Sự cố không được giao cho đơn vị của bạn.",
    Reason.ILLEGAL_TRANSITION: "Không thể {detail}",
    Reason.REASON_REQUIRED: "Phải nêu lý do.",
    Reason.RESOLUTION_NOTE_REQUIRED: "Phải có nội dung kết quả xử lý.",
    Reason.NOTE_REQUIRED: "Phải có nội dung cập nhật tiến độ.",
    Reason.UNKNOWN_UNIT: "Đơn vị '{detail}' không có trong danh mục.",
    Reason.UNIT_DOES_NOT_HANDLE_INCIDENTS: "Đơn vị '{detail}' không tiếp nhận xử lý sự cố; hãy "
                                           "giao cho cơ quan chuyên môn hoặc UBND xã, thị trấn.",
    Reason.SAME_UNIT: "Sự cố đang do chính đơn vị '{detail}' xử lý.",
    Reason.UNKNOWN_PRIMARY: "Không tìm thấy sự cố chính {detail} để gộp vào.",
    Reason.MERGE_INTO_SELF: "Không thể gộp một sự cố vào chính nó.",
    Reason.PRIMARY_NOT_OPEN: "Sự cố chính {detail} không còn mở để gộp vào.",
    Reason.SURVEY_ALREADY_ANSWERED: "Khảo sát mức độ hài lòng của sự cố này đã được trả lời.",
    Reason.INVALID_SCORE: "Điểm hài lòng phải từ {detail}.",
    Reason.MERGED: "Sự cố đã được gộp vào sự cố {detail}; hãy thao tác trên sự cố chính.",
    Reason.DUPLICATE_COMMAND: "Lệnh này đã được xử lý trước đó.",
    Reason.UNKNOWN_DATASET: "Bộ dữ liệu '{detail}' không có trong danh mục.",
    Reason.DATASET_NOT_PERMITTED: "Đơn vị của bạn không được cấp quyền nhận bộ dữ liệu "
                                  "'{detail}' nên không thể khiếu nại dữ liệu này.",
    Reason.NOT_THE_DATASET_TOPIC: "Chủ đề '{detail}' không phải chủ đề dữ liệu chuẩn của bộ "
                                  "dữ liệu đã nêu.",
    Reason.RECORD_NOT_FOUND: "Không tìm thấy bản ghi tại vị trí {detail}.",
    Reason.RECORD_NOT_FROM_INGEST: "Bản ghi tại vị trí {detail} không do hệ thống tiếp nhận "
                                   "dữ liệu (ingest) phát hành.",
    Reason.EVENT_ID_MISMATCH: "Bản ghi tại vị trí đã nêu không có mã sự kiện {detail}.",
    Reason.RECORD_UNUSABLE: "Bản ghi tại vị trí đã nêu không phải bản ghi chuẩn hợp lệ của bộ "
                            "dữ liệu '{detail}'.",
}

ROLE_NAMES = {"ioc-leader": "lãnh đạo Trung tâm IOC", "ioc-operator": "cán bộ vận hành IOC"}


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str


def reject(reason: Reason, detail: str = "") -> Rejection:
    return Rejection(reason, unicodedata.normalize("NFC", _MESSAGES[reason].format(detail=detail)))


def illegal(verb: Verb, state: State) -> Rejection:
    """Why `verb` cannot be done now and, when a step or two would allow it, which first."""
    text = f"{VERB_NAMES[verb]} khi sự cố {STATE_NAMES[state]}."
    steps = steps_before(verb, state)
    if steps:
        text += " Cần " + ", rồi ".join(VERB_NAMES[s] for s in steps) + " sự cố trước."
    return reject(Reason.ILLEGAL_TRANSITION, text)


# Steps that lead an incident forward (corrections such as return or reopen are not advice).
_FORWARD = (Verb.VERIFY, Verb.APPROVE, Verb.ASSIGN, Verb.ACKNOWLEDGE, Verb.RESOLVE, Verb.CLOSE)


def steps_before(verb: Verb, state: State, depth: int = 2) -> tuple[Verb, ...]:
    """The shortest chain (at most `depth`) of forward steps from `state` to a state where
    `verb` is allowed: resolve when assigned -> (acknowledge,). Derived from TRANSITIONS."""
    allowed = TRANSITIONS[verb][0]
    paths: list[tuple[State, tuple[Verb, ...]]] = [(state, ())]
    for _ in range(depth):
        paths = [(target, (*path, step)) for at, path in paths for step in _FORWARD
                 if at in TRANSITIONS[step][0]
                 and (target := TRANSITIONS[step][1]) is not None]
        for at, path in paths:
            if at in allowed:
                return path
    return ()


ACCEPTED_MESSAGE = "Đã thực hiện: {verb}."
DISPUTE_OPENED = "Đã ghi nhận khiếu nại dữ liệu: sự cố {incident} được giao cho đơn vị {unit}."
DISPUTE_EXISTS = "Khiếu nại này đã được ghi nhận trước đó: sự cố {incident} ({state})."


def dispute_message(text: str, **values: str) -> str:
    return unicodedata.normalize("NFC", text.format(**values))


def accepted_message(verb: Verb) -> str:
    return unicodedata.normalize("NFC", ACCEPTED_MESSAGE.format(verb=VERB_NAMES[verb]))
