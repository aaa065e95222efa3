"""Working-time arithmetic in Asia/Ho_Chi_Minh: office hours, weekends, Tết and other holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ioc_shared.calendar_vn import CalendarError, WorkingCalendar, parse_period

VN = ZoneInfo("Asia/Ho_Chi_Minh")
CAL = WorkingCalendar()


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=VN)


def as_local(value: datetime) -> datetime:
    assert value.tzinfo is UTC, "results are UTC"
    return value.astimezone(VN).replace(tzinfo=VN)


@pytest.mark.parametrize(("start", "hours", "due"), [
    (local(2026, 6, 3, 9), 4, local(2026, 6, 3, 15)),          # lunch break skipped
    (local(2026, 6, 3, 7, 30), 4, local(2026, 6, 3, 11, 30)),  # due at the end of the morning
    (local(2026, 6, 5, 16), 2, local(2026, 6, 8, 8, 30)),      # Friday -> Monday (weekend)
    (local(2026, 6, 6, 10), 1, local(2026, 6, 8, 8, 30)),      # starts on a Saturday
    (local(2026, 6, 3, 20), 1, local(2026, 6, 4, 8, 30)),      # starts after hours
    (local(2026, 6, 3, 12), 1, local(2026, 6, 3, 14, 30)),     # starts in the lunch break
    (local(2027, 2, 3, 16), 2, local(2027, 2, 11, 8, 30)),     # Tết 2027: Feb 4-10 off
    (local(2027, 4, 15, 16, 30), 1, local(2027, 4, 19, 8)),    # Giỗ Tổ Hùng Vương, Fri 16/4/2027
    (local(2026, 4, 24, 16), 2, local(2026, 4, 28, 8, 30)),    # Hùng Kings 2026 observed Mon 27/4
    (local(2026, 4, 29, 16), 2, local(2026, 5, 4, 8, 30)),     # 30/4 and 1/5
    (local(2026, 8, 21, 16), 2, local(2026, 8, 22, 8, 30)),    # Sat 22/8/2026 worked (bridge day)
    (local(2026, 8, 28, 16), 2, local(2026, 9, 3, 8, 30)),     # 31/8 bridge, 1-2/9 National Day
])
def test_add_working_hours(start: datetime, hours: float, due: datetime) -> None:
    assert as_local(CAL.add_working_hours(start, hours)) == due


def test_tet_2027_days_are_not_working_days() -> None:
    off = [date(2027, 2, d) for d in range(4, 11)]
    assert not any(CAL.is_working_day(d) for d in off)
    assert CAL.is_working_day(date(2027, 2, 3)) and CAL.is_working_day(date(2027, 2, 11))
    assert CAL.holiday_name(date(2027, 2, 6)) is not None


@pytest.mark.parametrize(("start", "days", "due"), [
    (local(2026, 6, 1, 10), 1, local(2026, 6, 2, 17)),     # the day of arrival is not counted
    (local(2026, 6, 5, 10), 1, local(2026, 6, 8, 17)),     # Friday -> Monday
    (local(2026, 6, 3, 9), 5, local(2026, 6, 10, 17)),
    (local(2027, 2, 3, 9), 1, local(2027, 2, 11, 17)),     # across Tết
    (local(2027, 2, 3, 9), 0, local(2027, 2, 3, 17)),      # 0 days: today's close
    (local(2027, 2, 3, 18), 0, local(2027, 2, 11, 17)),    # ... or the next working day's
])
def test_add_working_days(start: datetime, days: int, due: datetime) -> None:
    assert as_local(CAL.add_working_days(start, days)) == due


def test_subtract_working_time_for_reminders() -> None:
    assert as_local(CAL.subtract_working_seconds(local(2026, 6, 8, 8), 3600)) == local(2026, 6, 5, 16, 30)
    assert as_local(CAL.subtract_working_seconds(local(2026, 6, 3, 14), 3600)) == local(2026, 6, 3, 11)


def test_naive_datetimes_and_bad_periods_are_refused() -> None:
    with pytest.raises(CalendarError):
        CAL.add_working_hours(datetime(2026, 6, 3, 9), 1)
    with pytest.raises(CalendarError):
        parse_period("17:00-08:00")
    with pytest.raises(CalendarError):
        WorkingCalendar(periods=((local(1, 1, 1, 8).time(), local(1, 1, 1, 12).time()),
                                 (local(1, 1, 1, 11).time(), local(1, 1, 1, 13).time())))


starts = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31),
                      timezones=st.just(UTC))


@settings(max_examples=150, deadline=None)
@given(start=starts, minutes=st.integers(min_value=1, max_value=60 * 8 * 15))
def test_adding_then_measuring_working_time_round_trips(start: datetime, minutes: int) -> None:
    seconds = minutes * 60
    due = CAL.add_working_seconds(start, seconds)
    assert due > start
    assert CAL.working_seconds_between(start, due) == pytest.approx(seconds)
    # Going back lands on the start of that working time: never before `start`, and
    # with no working time between them (start may be in a night or a holiday).
    back = CAL.subtract_working_seconds(due, seconds)
    assert start - timedelta(microseconds=1) <= back
    assert CAL.working_seconds_between(start, back) == pytest.approx(0, abs=1e-3)
    assert CAL.working_seconds_between(back, due) == pytest.approx(seconds)
