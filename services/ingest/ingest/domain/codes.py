"""Rejection codes: machine-readable, each with the Vietnamese sentence a unit officer reads.

Codes are part of the published contract (README, JSON Schema): add new ones,
never rename or reuse one.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    # Whole-submission problems.
    UNDECODABLE = "undecodable"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_SUBMISSION = "malformed_submission"
    TOO_LARGE = "too_large"
    UNAUTHENTICATED = "unauthenticated"
    UNKNOWN_UNIT = "unknown_unit"
    NOT_PERMITTED = "not_permitted"
    UNKNOWN_DATASET = "unknown_dataset"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    FUTURE_TIMESTAMP = "future_timestamp"
    ABSURD_TIMESTAMP = "absurd_timestamp"
    DUPLICATE = "duplicate"
    DUPLICATE_KEY = "duplicate_key"
    FORBIDDEN_CHARACTER = "forbidden_character"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INTERNAL_ERROR = "internal_error"
    # Per-field problems inside a schema violation.
    MISSING = "missing"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    NOT_IN_ENUM = "not_in_enum"
    INVALID_PHONE = "invalid_phone"
    INVALID_EMAIL = "invalid_email"
    UNKNOWN_COMMUNE = "unknown_commune"
    OUTSIDE_DISTRICT = "outside_district"
    UNKNOWN_FIELD = "unknown_field"


MESSAGES_VI: dict[Code, str] = {
    Code.UNDECODABLE: "Dữ liệu không phải văn bản UTF-8 hợp lệ.",
    Code.MALFORMED_JSON: "Dữ liệu không phải JSON hợp lệ.",
    Code.MALFORMED_SUBMISSION: "Gói dữ liệu không đúng cấu trúc quy định (dataset, schema_version, record).",
    Code.TOO_LARGE: "Bản ghi vượt quá kích thước cho phép.",
    Code.UNAUTHENTICATED: "Không xác thực được đơn vị gửi (thiếu hoặc sai chữ ký/mã truy cập).",
    Code.UNKNOWN_UNIT: "Đơn vị không có trong danh mục của Trung tâm IOC.",
    Code.NOT_PERMITTED: "Đơn vị chưa được cấp quyền cung cấp bộ dữ liệu này.",
    Code.UNKNOWN_DATASET: "Bộ dữ liệu không có trong danh mục.",
    Code.UNKNOWN_SCHEMA_VERSION: "Phiên bản cấu trúc dữ liệu không được hỗ trợ.",
    Code.SCHEMA_VIOLATION: "Bản ghi không đúng cấu trúc dữ liệu đã thống nhất.",
    Code.FUTURE_TIMESTAMP: "Thời gian nằm ở tương lai.",
    Code.ABSURD_TIMESTAMP: "Thời gian không hợp lý.",
    Code.DUPLICATE: "Bản ghi đã được tiếp nhận trước đó (trùng lặp).",
    Code.DUPLICATE_KEY: "Một khóa xuất hiện hai lần trong cùng đối tượng JSON.",
    Code.FORBIDDEN_CHARACTER: "Văn bản chứa ký tự không được phép (ký tự điều khiển, NUL, "
                              "ký tự định hướng hoặc ký tự vô hình).",
    Code.UNSUPPORTED_MEDIA_TYPE: "Định dạng nội dung không được hỗ trợ (chỉ JSON hoặc CSV).",
    Code.INTERNAL_ERROR: "Lỗi nội bộ của Trung tâm IOC; dữ liệu đã được lưu để xử lý lại.",
    Code.MISSING: "Thiếu trường bắt buộc.",
    Code.WRONG_TYPE: "Giá trị không đúng kiểu dữ liệu.",
    Code.OUT_OF_RANGE: "Giá trị nằm ngoài khoảng cho phép.",
    Code.TOO_LONG: "Giá trị dài hơn độ dài tối đa.",
    Code.NOT_IN_ENUM: "Giá trị không thuộc danh sách cho phép.",
    Code.INVALID_PHONE: "Số điện thoại không hợp lệ.",
    Code.INVALID_EMAIL: "Địa chỉ thư điện tử không hợp lệ.",
    Code.UNKNOWN_COMMUNE: "Không xác định được xã, thị trấn.",
    Code.OUTSIDE_DISTRICT: "Tọa độ nằm ngoài địa bàn huyện.",
    Code.UNKNOWN_FIELD: "Trường không có trong cấu trúc dữ liệu.",
}

# Problems that make the whole record a schema violation when found on a field.
FIELD_CODES = frozenset({
    Code.MISSING, Code.WRONG_TYPE, Code.OUT_OF_RANGE, Code.TOO_LONG, Code.NOT_IN_ENUM,
    Code.INVALID_PHONE, Code.INVALID_EMAIL, Code.UNKNOWN_COMMUNE, Code.UNKNOWN_UNIT,
    Code.OUTSIDE_DISTRICT, Code.UNKNOWN_FIELD,
})


def message_vi(code: Code, field: str | None = None) -> str:
    text = MESSAGES_VI[code]
    return f"Trường '{field}': {text[0].lower()}{text[1:]}" if field else text
