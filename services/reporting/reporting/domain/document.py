"""The document model of a report (Decree 30/2020/NĐ-CP layout), from its figures (pure).

Renderers (PDF via Typst, DOCX, XLSX) lay out this model and compute nothing: a table
cell holds the number itself (for the spreadsheet) and the text shown (for the page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from reporting.domain.formatting import (
    CATEGORY_NAMES,
    STATE_NAMES,
    day_text,
    hours,
    money,
    nfc,
    number,
    percent,
)
from reporting.domain.incidents import LOCAL

Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    total: tuple[Cell, ...] | None = None
    # Per column: "text", "int", "rate" (percent), "money", "hours", "score".
    kinds: tuple[str, ...] = ()

    def shown(self, row: tuple[Cell, ...]) -> list[str]:
        return [show(v, self.kinds[i] if i < len(self.kinds) else "text") for i, v in enumerate(row)]


@dataclass(frozen=True)
class Chart:
    title: str
    labels: list[str]
    values: list[float]
    unit: str = ""           # "%" for rates
    secondary: list[float] | None = None
    legend: tuple[str, str] = ("", "")


@dataclass
class Section:
    number: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    sheet: str = ""


@dataclass
class Document:
    parent_body: str
    issuing_body: str
    number_line: str
    place_date: str
    type_name: str
    subject: str
    sections: list[Section]
    recipients: list[str]
    signer_authority: str
    signer_title: str
    signer_name: str
    draft: bool = True


def moment_text(iso: str) -> str:
    """'14:05 ngày 13/11/2026' in local time, from an ISO 8601 instant."""
    at = datetime.fromisoformat(iso).astimezone(LOCAL)
    return f"{at:%H:%M} ngày {at:%d/%m/%Y}"


def show(value: Cell, kind: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if kind == "int":
        return number(value)
    if kind == "rate":
        return percent(float(value))
    if kind == "money":
        return money(int(value))
    if kind == "hours":
        return hours(float(value))
    if kind == "score":
        return number(float(value))
    return str(value)


def _incident_section(f: dict[str, Any]) -> Section:
    inc = f["incidents"]
    t = inc["totals"]
    s = Section("I", "Tình hình tiếp nhận và xử lý phản ánh, sự cố", sheet="I. Phản ánh")
    d = inc["durations"]
    s.paragraphs.append(nfc(
        f"Tiếp nhận {number(t['received'])} phản ánh; xác minh {number(t['verified'])}; từ chối do "
        f"không xác thực {number(t['rejected'])}; chuyển xử lý {number(t['assigned'])} lượt; đã xử lý "
        f"xong {number(t['resolved'])}; đã đóng {number(t['closed'])}; quá hạn {number(t['overdue'])} "
        f"(trong đó {number(t['overdue_open'])} chưa xử lý xong). Tỷ lệ tiếp nhận đúng hạn "
        f"{percent(inc['on_time']['acknowledge_rate'])}, xử lý đúng hạn "
        f"{percent(inc['on_time']['resolve_rate'])}. Thời gian tiếp nhận trung vị "
        f"{hours(d['acknowledge']['median_h'])} (90% trong {hours(d['acknowledge']['p90_h'])}); "
        f"thời gian xử lý trung vị {hours(d['resolve']['median_h'])} (90% trong "
        f"{hours(d['resolve']['p90_h'])}), tính theo giờ làm việc."))
    s.tables.append(Table(
        "1. Tổng hợp", ("Chỉ tiêu", "Số lượng"),
        [("Tiếp nhận", t["received"]), ("Đã xác minh", t["verified"]),
         ("Từ chối do không xác thực", t["rejected"]), ("Lượt chuyển xử lý", t["assigned"]),
         ("Đã xử lý xong", t["resolved"]), ("Đã đóng", t["closed"]),
         ("Quá hạn (xử lý trễ hoặc chưa xong)", t["overdue"]),
         ("Lượt trả lại", t["returned"]), ("Lượt chuyển đơn vị", t["transferred"]),
         ("Lượt nhắc cấp trên (leo thang)", t["escalated"])],
        kinds=("text", "int")))
    units = inc["by_unit"]
    s.tables.append(Table(
        "2. Theo đơn vị xử lý",
        ("Đơn vị", "Được giao", "Đã xử lý", "Đúng hạn", "Trễ hạn", "Tỷ lệ đúng hạn", "Trả lại",
         "Chuyển đi", "Leo thang"),
        [(u["name"], u["assigned"], u["resolved"], u["resolve_on_time"], u["resolve_late"],
          u["on_time_rate"], u["returned"], u["transferred"], u["escalated"]) for u in units],
        total=("Tổng cộng", sum(u["assigned"] for u in units), sum(u["resolved"] for u in units),
               sum(u["resolve_on_time"] for u in units), sum(u["resolve_late"] for u in units),
               inc["on_time"]["resolve_rate"], sum(u["returned"] for u in units),
               sum(u["transferred"] for u in units), sum(u["escalated"] for u in units)),
        kinds=("text", "int", "int", "int", "int", "rate", "int", "int", "int")))
    communes = inc["by_commune"]
    s.tables.append(Table(
        "3. Theo xã, thị trấn", ("Xã, thị trấn", "Tiếp nhận", "Đã xử lý"),
        [(c["name"], c["received"], c["resolved"]) for c in communes],
        total=("Tổng cộng", sum(c["received"] for c in communes),
               sum(c["resolved"] for c in communes)), kinds=("text", "int", "int")))
    cats = inc["by_category"]
    s.tables.append(Table(
        "4. Theo lĩnh vực", ("Lĩnh vực", "Tiếp nhận", "Đã xử lý", "Không xác thực"),
        [(c["name"], c["received"], c["resolved"], c["rejected"]) for c in cats],
        total=("Tổng cộng", sum(c["received"] for c in cats), sum(c["resolved"] for c in cats),
               sum(c["rejected"] for c in cats)), kinds=("text", "int", "int", "int")))
    sources = inc["by_source"]
    s.tables.append(Table(
        "5. Theo nguồn tiếp nhận", ("Nguồn", "Tiếp nhận"),
        [(x["name"], x["received"]) for x in sources],
        total=("Tổng cộng", sum(x["received"] for x in sources)), kinds=("text", "int")))
    states = inc["states"]
    s.tables.append(Table(
        "6. Tình trạng hiện tại của các phản ánh tiếp nhận trong kỳ", ("Tình trạng", "Số lượng"),
        [(STATE_NAMES.get(k, k), n) for k, n in states.items()],
        total=("Tổng cộng", sum(states.values())), kinds=("text", "int")))
    overdue = inc["overdue"]
    s.tables.append(Table(
        "7. Danh sách phản ánh quá hạn chưa xử lý xong",
        ("Mã phản ánh", "Đơn vị", "Lĩnh vực", "Hạn xử lý", "Số ngày làm việc trễ"),
        [(o["incident_id"], o["unit_name"], o["category_name"], o["due_on"],
          o["working_days_late"]) for o in overdue],
        kinds=("text", "text", "text", "text", "int")))
    sat = inc["satisfaction"]
    s.paragraphs.append(nfc(
        f"Khảo sát mức độ hài lòng: {number(sat['responses'])} lượt trả lời"
        + (f", điểm trung bình {number(sat['mean_score'])}/5." if sat["mean_score"] is not None
           else ", chưa có số liệu điểm.")))
    s.tables.append(Table(
        "8. Mức độ hài lòng theo đơn vị", ("Đơn vị", "Lượt trả lời", "Điểm trung bình"),
        [(u["name"], u["survey_responses"], u["survey_mean"]) for u in units if u["survey_responses"]],
        kinds=("text", "int", "score")))
    trend = inc["trend"]
    if trend:
        s.charts.append(Chart("Biểu đồ 1. Số phản ánh theo tháng",
                              [m["month"][5:] + "/" + m["month"][:4] for m in trend],
                              [float(m["received"]) for m in trend],
                              secondary=[float(m["resolved"]) for m in trend],
                              legend=("Tiếp nhận", "Đã xử lý")))
    rated = [u for u in units if u["on_time_rate"] is not None]
    if rated:
        s.charts.append(Chart("Biểu đồ 2. Tỷ lệ xử lý đúng hạn theo đơn vị (%)",
                              [u["name"] for u in rated], [float(u["on_time_rate"]) for u in rated],
                              unit="%"))
    return s


def _comparison_section(f: dict[str, Any]) -> Section:
    s = Section("II", "So sánh với kỳ trước và cùng kỳ năm trước", sheet="II. So sánh")
    t = f["incidents"]["totals"]
    rows: list[tuple[Cell, ...]] = []
    for key, label in (("previous", "Kỳ trước"), ("last_year", "Cùng kỳ năm trước")):
        other = f["comparison"][key]
        if other is None:
            s.paragraphs.append(f"{label}: chưa có số liệu.")
            continue
        rows.append((f"{label} ({other['label']})", other["received"], other["resolved"],
                     other["rejected"]))
    if rows:
        rows.insert(0, ("Kỳ này", t["received"], t["resolved"], t["rejected"]))
        s.tables.append(Table("Số phản ánh", ("Kỳ", "Tiếp nhận", "Đã xử lý", "Không xác thực"),
                              rows, kinds=("text", "int", "int", "int")))
    return s


def _sharing_section(f: dict[str, Any]) -> Section:
    d = f["data_sharing"]
    s = Section("III", "Tình hình kết nối, chia sẻ dữ liệu", sheet="III. Dữ liệu")
    s.paragraphs.append(nfc(
        f"Các đơn vị gửi {number(d['totals']['accepted'])} bản ghi hợp lệ, "
        f"{number(d['totals']['rejected'])} bản ghi bị từ chối; {number(d['totals']['late_periods'])} "
        f"lượt chậm cập nhật so với tần suất đã thống nhất; tỷ lệ cặp đơn vị - bộ dữ liệu cập "
        f"nhật đúng tần suất {percent(d['freshness_compliance_rate'])}."))
    notices = d["rejection_notices"]
    if notices["total"]:
        s.paragraphs.append(nfc(
            f"Hệ thống đã gửi {number(notices['total'])} thông báo từ chối kèm lý do cho bên gửi"
            f" (trong đó {number(notices['unidentified'])} thông báo cho nguồn chưa xác định "
            "được đơn vị)."))
    pairs = d["pairs"]
    s.tables.append(Table(
        "1. Theo đơn vị và bộ dữ liệu",
        ("Đơn vị", "Bộ dữ liệu", "Hợp lệ", "Bị từ chối", "Tỷ lệ từ chối", "Lượt chậm cập nhật"),
        [(p["unit_name"], p["dataset_name"], p["accepted"], p["rejected"], p["rejected_rate"],
          p["late_periods"]) for p in pairs],
        total=("Tổng cộng", "", d["totals"]["accepted"], d["totals"]["rejected"], None,
               d["totals"]["late_periods"]),
        kinds=("text", "text", "int", "int", "rate", "int")))
    s.tables.append(Table("2. Lý do từ chối", ("Lý do", "Số bản ghi"),
                          [(r["name"], r["n"]) for r in d["reasons"]],
                          total=("Tổng cộng", sum(r["n"] for r in d["reasons"])),
                          kinds=("text", "int")))
    missing = d["not_connected"]
    s.paragraphs.append(
        "Đơn vị, bộ dữ liệu chưa kết nối: " + ("; ".join(
            f"{m['unit_name']} ({m['dataset_name']})" for m in missing) + "." if missing
            else "không có."))
    _province_sync(s, d["province_sync"])
    return s


_FAILURE_NAMES = {"network": "mất kết nối", "throttled": "bị giới hạn tần suất"}
# sync-province's two targets, as a leader reads them.
_CHANNEL_NAMES = {"kafka": "Kafka của tỉnh", "http": "Cổng HTTPS của tỉnh"}


def channel_name(target: str | None) -> str:
    return "-" if not target else _CHANNEL_NAMES.get(target, target)


def failure_name(reason: str) -> str:
    if reason in _FAILURE_NAMES:
        return _FAILURE_NAMES[reason]
    if reason.startswith("http-"):
        return f"lỗi máy chủ tỉnh (HTTP {reason[5:]})"
    if reason.startswith("refused-"):
        return f"bị từ chối (HTTP {reason[8:]})"
    return reason


def _province_sync(s: Section, rows: list[dict[str, Any]] | None) -> None:
    """III.3: records sent to the province, from sync-province's status (never invented)."""
    if rows is None:
        s.paragraphs.append("Dữ liệu đồng bộ lên Trung tâm IOC tỉnh: chưa có số liệu.")
        return
    known = [r for r in rows if r["sent"] is not None]
    failures: dict[str, dict[str, int]] = {r["target"]: r["failures"] for r in known}
    failed = "; ".join(
        f"{channel_name(target)}: "
        + ", ".join(f"{failure_name(k)} {number(n)} lượt" for k, n in f.items())
        for target, f in sorted(failures.items()) if f)
    s.paragraphs.append(nfc(
        f"Dữ liệu đồng bộ lên Trung tâm IOC tỉnh: đã gửi {number(sum(r['sent'] for r in known))} "
        f"bản ghi trong kỳ; {number(sum(r['parked'] for r in known))} lô bị tỉnh từ chối; lỗi "
        f"kết nối: {failed or 'không có'}."))
    s.tables.append(Table(
        "3. Đồng bộ dữ liệu lên Trung tâm IOC tỉnh",
        ("Bộ dữ liệu", "Kênh", "Bản ghi đã gửi", "Lô bị từ chối", "Đồng bộ lần cuối",
         "Lỗi kết nối (lượt)"),
        [(r["dataset_name"], channel_name(r["target"]),
          r["sent"] if r["sent"] is not None else "chưa có số liệu", r["parked"],
          moment_text(r["last_synced_at"]) if r["last_synced_at"] else "chưa có số liệu",
          sum(r["failures"].values()) if r["sent"] is not None else None) for r in rows],
        total=("Tổng cộng", "", sum(r["sent"] for r in known), sum(r["parked"] for r in known),
               "", None),
        kinds=("text", "text", "int", "int", "text", "int")))


def _indicator_section(f: dict[str, Any]) -> Section:
    s = Section("IV", "Chỉ số theo lĩnh vực", sheet="IV. Chỉ số")
    items = f["indicators"]
    if not items:
        s.paragraphs.append("Chưa có số liệu chỉ số trong kỳ.")
        return s
    for domain in sorted({i["domain_name"] for i in items}):
        rows = [i for i in items if i["domain_name"] == domain]
        s.tables.append(Table(
            f"Lĩnh vực {domain}",
            ("Chỉ số", "Xã, thị trấn / đơn vị", "Số bản ghi", "Tổng trong kỳ", "Bình quân",
             "Giá trị gần nhất", "Ngày"),
            [(i["indicator_name"], i["unit_name"] or i["commune_name"], i["records"], i["total"],
              i["mean"], i["latest_value"], i["latest_day"]) for i in rows],
            kinds=("text", "text", "int", "score", "score", "score", "text")))
    return s


def _allowance_section(f: dict[str, Any]) -> Section:
    a = f["allowances"]
    s = Section("V", "Chế độ hỗ trợ cán bộ, công chức, viên chức (Điều 9)", sheet="V. Hỗ trợ")
    s.paragraphs.append(nfc(f"Căn cứ {a['basis']}: tổng kinh phí hỗ trợ trong kỳ "
                            f"{money(a['total'])} ({number(a['person_months'])} người-tháng)."))
    s.tables.append(Table(
        "Kinh phí hỗ trợ theo đơn vị", ("Đơn vị", "Đối tượng", "Người-tháng", "Số tiền (đồng)"),
        [(x["unit_name"], x["kind_name"], x["person_months"], x["amount"]) for x in a["lines"]],
        total=("Tổng cộng", "", a["person_months"], a["total"]),
        kinds=("text", "text", "int", "money")))
    return s


_REVIEW = {"six-monthly": "Sơ kết", "annual": "Tổng kết, đánh giá"}


def build_document(figures: dict[str, Any], *, parent_body: str, issuing_body: str,
                   place: str, number_suffix: str, subject: str, recipients: list[str],
                   signer: tuple[str, str, str], number_text: str | None,
                   issued_on: date | None, today: date) -> Document:
    kind = figures["kind"]
    label = figures["period"]["label"]
    scope = figures["scope"]
    if kind in ("thematic", "ad-hoc"):
        focus = ", ".join(CATEGORY_NAMES.get(v, v) for v in scope.values())
        subject_line = (f"{'Chuyên đề' if kind == 'thematic' else 'Báo cáo đột xuất'}"
                        f"{': ' + focus if focus else ''} {label}")
    elif kind in _REVIEW:
        # The six-monthly review and the annual evaluation (Đ14.2) say so in their subject.
        subject_line = f"{_REVIEW[kind]} {subject[:1].lower()}{subject[1:]} {label}"
    else:
        subject_line = f"{subject} {label}"
    sections = [_incident_section(figures), _comparison_section(figures),
                _sharing_section(figures), _indicator_section(figures),
                _allowance_section(figures)]
    opening = Section("", "", paragraphs=[figures["summary"]], sheet="Tóm tắt")
    return Document(
        parent_body=parent_body, issuing_body=issuing_body,
        number_line=f"Số: {number_text}" if number_text else f"Số:      /{number_suffix}",
        place_date=f"{place}, {day_text(issued_on or today)}",
        type_name="BÁO CÁO", subject=nfc(subject_line), sections=[opening, *sections],
        recipients=[*(f"- {r};" for r in recipients), "- Lưu: VT."],
        signer_authority=signer[0], signer_title=signer[1], signer_name=signer[2],
        draft=number_text is None)
