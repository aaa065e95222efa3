"""Every KPI on small hand-checked rollups; numbers in Vietnamese style; allowances."""

from __future__ import annotations

from datetime import date

from reporting.domain.allowances import Rate, StaffMember, allowances, months_of, rate_on
from reporting.domain.figures import Scope, is_empty
from reporting.domain.formatting import change, day_text, money, number, percent
from reporting.domain.periods import Kind, period
from reporting_examples import NOV, RULES, figures


def test_totals_rates_durations_and_states() -> None:
    f = figures()
    inc = f["incidents"]
    t = inc["totals"]
    assert (t["received"], t["rejected"], t["assigned"], t["resolved"]) == (12, 1, 11, 7)
    assert t["overdue"] == 1 + 1 and t["overdue_open"] == 1
    assert inc["on_time"]["acknowledge_rate"] == 75.0          # 6 of 8
    assert inc["on_time"]["resolve_rate"] == 85.7              # 6 of 7
    # 4 in [1, 2) and 3 in [4, 6): median rank 3.5 -> 1 + 3.5/4 = 1.9; p90 rank 6.3 -> 4 + 2*2.3/3
    assert inc["durations"]["resolve"] == {"count": 7, "median_h": 1.9, "p90_h": 5.5}
    assert inc["states"] == {"assigned": 4, "resolved": 7, "rejected_not_genuine": 1}
    assert inc["satisfaction"] == {"responses": 3, "mean_score": 4.33}


def test_per_unit_commune_category_source() -> None:
    inc = figures()["incidents"]
    tnmt = next(u for u in inc["by_unit"] if u["unit"] == "phong-tn-mt")
    assert (tnmt["assigned"], tnmt["resolved"], tnmt["on_time_rate"], tnmt["transferred"],
            tnmt["escalated"], tnmt["survey_mean"]) == (8, 5, 80.0, 1, 2, 4.33)
    kt = next(u for u in inc["by_unit"] if u["unit"] == "phong-kt-ht")
    assert (kt["returned"], kt["on_time_rate"]) == (1, 100.0)
    assert inc["by_commune"] == [{"commune": "xa-loc-an", "name": "Xã Lộc An", "received": 12,
                                  "resolved": 7}]
    cats = {c["category"]: c["received"] for c in inc["by_category"]}
    assert cats == {"giao-thong": 2, "moi-truong": 10}
    assert inc["by_source"] == [{"source": "phan-anh-hien-truong", "name": "Phản ánh hiện trường",
                                 "received": 12}]
    assert inc["overdue"][0]["working_days_late"] == 3
    assert inc["overdue"][0]["unit_name"] == "Phòng Kinh tế và Hạ tầng"


def test_data_sharing_and_indicators() -> None:
    f = figures()
    d = f["data_sharing"]
    assert d["totals"] == {"accepted": 1200, "rejected": 40, "late_periods": 2}
    assert d["pairs"][0]["rejected_rate"] == 3.2              # 40 of 1,240
    assert [r["code"] for r in d["reasons"]] == ["missing", "wrong_type"]
    assert d["not_connected"] == [{"unit": "trung-tam-y-te", "unit_name": "trung-tam-y-te",
                                   "dataset": "chi-so-y-te", "dataset_name": "Chỉ số y tế"}]
    assert d["freshness_compliance_rate"] == 0.0              # the one watched pair was late
    assert d["province_sync"] is None
    assert d["rejection_notices"] == {"total": 5, "unidentified": 2}
    i = f["indicators"][0]
    assert (i["domain"], i["total"], i["mean"], i["latest_value"]) == ("health", 40.0, 10.0, 12.0)


def test_summary_paragraph_compares_with_the_previous_month() -> None:
    text = figures()["summary"]
    assert text.startswith("Trong tháng, Trung tâm tiếp nhận 12 phản ánh, tăng 50,0% so với "
                           "tháng trước; đã xử lý xong 7 phản ánh, đúng hạn 85,7%")
    assert "còn 1 phản ánh quá hạn" in text
    assert "1.200 bản ghi dữ liệu hợp lệ" in text


def test_no_comparison_without_earlier_data_and_thematic_scope() -> None:
    f = figures(previous_totals={}, last_year_totals=None)
    assert f["comparison"] == {"previous": None, "last_year": None}
    assert "so với" not in f["summary"]
    only = figures(scope=Scope(category="giao-thong"))
    assert only["incidents"]["totals"]["received"] == 2
    assert not is_empty(f)
    assert is_empty(figures(incident_rows=[], quality=[], reasons=[], freshness=[],
                            indicators=[], overdue=[], overdue_count=0))


def test_vietnamese_numbers_money_and_dates() -> None:
    assert number(1234567) == "1.234.567"
    assert percent(12.5) == "12,5%"
    assert money(1_000_000) == "1.000.000 đồng"
    assert change(1234, 1097) == "tăng 12,5%"
    assert change(90, 100) == "giảm 10,0%"
    assert change(5, 0) is None
    assert day_text(date(2026, 2, 5)) == "ngày 05 tháng 02 năm 2026"
    assert day_text(date(2026, 11, 20)) == "ngày 20 tháng 11 năm 2026"


RATES = [Rate("at-ioc", 1_000_000, date(2021, 10, 10)), Rate("elsewhere", 500_000, date(2021, 10, 10)),
         Rate("at-ioc", 1_200_000, date(2027, 1, 1))]


def test_allowances_per_unit_with_rates_by_effective_date() -> None:
    staff = [StaffMember("a", "A", "ioc-loc-ninh", "at-ioc", date(2024, 1, 1)),
             StaffMember("b", "B", "ioc-loc-ninh", "at-ioc", date(2026, 11, 20)),
             StaffMember("c", "C", "phong-tn-mt", "elsewhere", date(2024, 1, 1), date(2026, 12, 31))]
    nov = allowances(staff, RATES, NOV.start, NOV.end)           # the 14th of November counts
    assert [(a.unit, a.person_months, a.amount) for a in nov] == [
        ("ioc-loc-ninh", 1, 1_000_000), ("phong-tn-mt", 1, 500_000)]
    q1 = period(Kind.QUARTERLY, 2027, 1, RULES)                    # 15 Dec 2026 - 14 Mar 2027
    lines = allowances(staff, RATES, q1.start, q1.end)
    assert [(a.unit, a.person_months, a.amount) for a in lines] == [
        ("ioc-loc-ninh", 6, 6 * 1_200_000)]                        # c left in December
    assert rate_on(RATES, "at-ioc", date(2026, 12, 31)) == 1_000_000
    assert len(months_of(date(2026, 1, 15), date(2026, 12, 14))) == 11
    assert len(months_of(date(2025, 12, 15), date(2026, 12, 14))) == 12
