"""Vietnamese numbers, money, dates and the names shown in reports (babel, pure)."""

from __future__ import annotations

import unicodedata
from datetime import date

from babel.numbers import format_decimal

LOCALE = "vi"


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def number(value: float | int | None) -> str:
    """1.234.567; a fraction keeps one decimal: 12,5."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return str(format_decimal(value, format="#,##0.0", locale=LOCALE))
    return str(format_decimal(int(value), locale=LOCALE))


def percent(value: float | None) -> str:
    """12,5% (value is a percentage, not a fraction)."""
    if value is None:
        return "-"
    return str(format_decimal(value, format="#,##0.0", locale=LOCALE)) + "%"


def money(amount: int) -> str:
    return f"{number(amount)} đồng"


def hours(value: float | None) -> str:
    return "-" if value is None else f"{format_decimal(value, format='#,##0.0', locale=LOCALE)} giờ"


def day_text(day: date) -> str:
    """Date line of Decree 30: day below 10 and months 1-2 with a leading zero."""
    month = f"{day.month:02d}" if day.month < 3 else str(day.month)
    return f"ngày {day.day:02d} tháng {month} năm {day.year}"


def short_date(day: date) -> str:
    return f"{day:%d/%m/%Y}"


def change(current: float, before: float | None) -> str | None:
    """'tăng 12,5%' / 'giảm 3,0%' / 'bằng' against an earlier figure (None without one)."""
    if before is None or before == 0:
        return None
    diff = (current - before) * 100.0 / before
    if abs(diff) < 0.05:
        return "không thay đổi"
    return f"{'tăng' if diff > 0 else 'giảm'} {percent(abs(diff))}"


CATEGORY_NAMES = {
    "moi-truong": "Môi trường", "giao-thong": "Giao thông", "an-ninh-trat-tu": "An ninh trật tự",
    "dat-dai-xay-dung": "Đất đai - xây dựng", "dien-nuoc": "Điện, nước", "y-te": "Y tế",
    "giao-duc": "Giáo dục", "dich-vu-cong": "Dịch vụ công", "khac": "Khác", "": "Chưa phân loại",
}

STATE_NAMES = {
    "received": "Đã tiếp nhận", "verified": "Đã xác minh", "rejected_not_genuine": "Không xác thực",
    "approved": "Đã phê duyệt", "assigned": "Đã chuyển xử lý", "acknowledged": "Đơn vị đã nhận",
    "in_progress": "Đang xử lý", "resolved": "Đã xử lý xong", "closed": "Đã đóng",
    "returned": "Bị trả lại", "merged": "Đã gộp trùng",
}

DOMAIN_NAMES = {"health": "Y tế", "education": "Giáo dục", "socio-economic": "Kinh tế - xã hội",
                "public-service": "Dịch vụ công", "field-report": "Phản ánh hiện trường",
                "general": "Chung"}

# Data domains whose incidents have a category of their own.
DOMAIN_CATEGORY = {"health": "y-te", "education": "giao-duc", "public-service": "dich-vu-cong"}

INDICATOR_NAMES = {
    "ca-sot-xuat-huyet": "Ca sốt xuất huyết", "ca-tay-chan-mieng": "Ca tay chân miệng",
    "tiem-chung-day-du": "Trẻ tiêm chủng đầy đủ", "kham-chua-benh": "Lượt khám chữa bệnh",
    "students": "Số học sinh", "absent_rate": "Tỷ lệ vắng học (%)",
    "status:dang-xu-ly": "Hồ sơ đang xử lý", "status:da-giai-quyet": "Hồ sơ đã giải quyết",
    "status:tre-han": "Hồ sơ trễ hạn", "status:tra-lai": "Hồ sơ trả lại",
}

REASON_NAMES = {
    "undecodable": "Không giải mã được", "malformed_json": "JSON sai cú pháp",
    "malformed_submission": "Gói gửi sai cấu trúc", "too_large": "Vượt kích thước",
    "unauthenticated": "Không xác thực được", "unknown_unit": "Đơn vị không có trong danh mục",
    "not_permitted": "Không được cấp quyền", "unknown_dataset": "Bộ dữ liệu không tồn tại",
    "unknown_schema_version": "Phiên bản lược đồ không hỗ trợ",
    "schema_violation": "Sai lược đồ dữ liệu", "future_timestamp": "Thời điểm ở tương lai",
    "absurd_timestamp": "Thời điểm bất hợp lý", "duplicate": "Trùng lặp",
    "missing": "Thiếu trường bắt buộc", "missing_field": "Thiếu trường bắt buộc",
    "wrong_type": "Sai kiểu dữ liệu", "out_of_range": "Ngoài khoảng cho phép",
    "too_long": "Quá dài", "not_in_enum": "Giá trị không thuộc danh mục",
    "invalid_phone": "Số điện thoại không hợp lệ", "invalid_email": "Thư điện tử không hợp lệ",
    "unknown_commune": "Xã không có trong danh mục", "outside_district": "Ngoài địa bàn huyện",
    "unknown_field": "Trường không khai báo",
}

ALLOWANCE_KINDS = {"at-ioc": "Trực tiếp làm việc tại Trung tâm IOC",
                   "ioc-tasks-elsewhere": "Thực hiện nhiệm vụ IOC, không làm việc tại Trung tâm"}
