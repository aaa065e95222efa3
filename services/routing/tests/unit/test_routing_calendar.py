"""Routing's calendar configuration (`calendar:` in routing.yaml) builds the shared
working calendar; the arithmetic itself is tested in shared/tests/unit/test_calendar_vn.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from routing.domain.policy import CalendarConfig

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=VN)


def as_local(value: datetime) -> datetime:
    assert value.tzinfo is UTC, "results are UTC"
    return value.astimezone(VN).replace(tzinfo=VN)


def test_configured_days_off_and_compensatory_working_days() -> None:
    cal = CalendarConfig(extra_days_off=(date(2026, 6, 5),),
                         compensatory_working_days=(date(2026, 6, 6),)).build()
    assert not cal.is_working_day(date(2026, 6, 5)) and cal.is_working_day(date(2026, 6, 6))
    assert as_local(cal.add_working_hours(local(2026, 6, 4, 16), 2)) == local(2026, 6, 6, 8, 30)


def test_custom_office_hours() -> None:
    cal = CalendarConfig.model_validate(
        {"office_hours": {"days": ["mon", "tue", "wed", "thu", "fri", "sat"],
                          "periods": ["08:00-12:00"]}}).build()
    assert cal.seconds_per_day == 4 * 3600
    assert as_local(cal.add_working_hours(local(2026, 6, 5, 11), 2)) == local(2026, 6, 6, 9)
