"""Periods per Decree 09/2019/NĐ-CP Art. 12, due dates before the 25th, working days."""

from __future__ import annotations

from datetime import date

import pytest
from ioc_shared.calendar_vn import WorkingCalendar
from reporting.domain.periods import (
    Kind,
    PeriodError,
    PeriodRules,
    containing,
    due_date,
    parse,
    period,
    previous,
    same_period_last_year,
)

DECREE = PeriodRules()
CALENDAR = PeriodRules(cut_off="calendar")
CAL = WorkingCalendar()


def test_monthly_cut_off_is_15th_to_14th_across_the_year_end() -> None:
    p = period(Kind.MONTHLY, 2026, 1, DECREE)
    assert (p.start, p.end) == (date(2025, 12, 15), date(2026, 1, 14))
    assert p.key == "monthly:2026-01" and p.label == "tháng 1 năm 2026"


def test_calendar_months_end_on_the_last_day_including_february_of_a_leap_year() -> None:
    assert period(Kind.MONTHLY, 2028, 2, CALENDAR).end == date(2028, 2, 29)
    assert period(Kind.MONTHLY, 2026, 2, CALENDAR).end == date(2026, 2, 28)
    assert period(Kind.MONTHLY, 2026, 12, CALENDAR).end == date(2026, 12, 31)


def test_quarters_six_months_and_year_under_the_decree() -> None:
    q1 = period(Kind.QUARTERLY, 2026, 1, DECREE)
    assert (q1.start, q1.end) == (date(2025, 12, 15), date(2026, 3, 14))
    q4 = period(Kind.QUARTERLY, 2026, 4, DECREE)
    assert (q4.start, q4.end) == (date(2026, 9, 15), date(2026, 12, 14))
    assert q4.label == "quý IV năm 2026"
    h1 = period(Kind.SIX_MONTHLY, 2026, 1, DECREE)
    assert (h1.start, h1.end) == (date(2025, 12, 15), date(2026, 6, 14))
    y = period(Kind.ANNUAL, 2026, 0, DECREE)
    assert (y.start, y.end) == (date(2025, 12, 15), date(2026, 12, 14))
    assert period(Kind.QUARTERLY, 2026, 1, CALENDAR).end == date(2026, 3, 31)


def test_the_period_containing_a_day_follows_the_cut_off() -> None:
    assert containing(Kind.MONTHLY, date(2026, 11, 14), DECREE).index == 11
    assert containing(Kind.MONTHLY, date(2026, 11, 15), DECREE).index == 12
    assert containing(Kind.MONTHLY, date(2026, 12, 20), DECREE).key == "monthly:2027-01"
    assert containing(Kind.QUARTERLY, date(2026, 12, 15), DECREE).key == "quarterly:2027-Q1"
    assert containing(Kind.MONTHLY, date(2026, 11, 20), CALENDAR).index == 11


def test_previous_and_same_period_last_year() -> None:
    assert previous(period(Kind.MONTHLY, 2026, 1, DECREE), DECREE).key == "monthly:2025-12"
    assert previous(period(Kind.QUARTERLY, 2026, 1, DECREE), DECREE).key == "quarterly:2025-Q4"
    assert same_period_last_year(period(Kind.MONTHLY, 2026, 3, DECREE), DECREE).key == \
        "monthly:2025-03"


def test_monthly_due_date_is_the_last_working_day_before_the_25th() -> None:
    # 25 September 2026 is a Friday: due Thursday the 24th.
    assert due_date(period(Kind.MONTHLY, 2026, 9, DECREE), DECREE, CAL) == date(2026, 9, 24)
    # 25 November 2026 is a Wednesday, but the 24th is the Day of Vietnamese Culture
    # (a public holiday from 2026): due Monday the 23rd.
    assert due_date(period(Kind.MONTHLY, 2026, 11, DECREE), DECREE, CAL) == date(2026, 11, 23)


def test_a_25th_on_a_sunday_or_monday_moves_to_friday() -> None:
    # 25 October 2026 is a Sunday: the 24th is a Saturday, due Friday the 23rd.
    assert date(2026, 10, 25).weekday() == 6
    assert due_date(period(Kind.MONTHLY, 2026, 10, DECREE), DECREE, CAL) == date(2026, 10, 23)
    # 25 January 2027 is a Monday: due Friday the 22nd.
    assert due_date(period(Kind.MONTHLY, 2027, 1, DECREE), DECREE, CAL) == date(2027, 1, 22)


def test_a_25th_after_tet_is_due_before_the_tet_days_off() -> None:
    # Tết 2028 (lunar new year on 26 January): from the 24th the days are off, so the
    # January report is due on Friday 21 January.
    assert not CAL.is_working_day(date(2028, 1, 24))
    assert due_date(period(Kind.MONTHLY, 2028, 1, DECREE), DECREE, CAL) == date(2028, 1, 21)


def test_quarterly_and_configured_six_monthly_due_dates() -> None:
    # Q4 2026: before 25 December 2026 (a Friday): due Thursday the 24th.
    assert due_date(period(Kind.QUARTERLY, 2026, 4, DECREE), DECREE, CAL) == date(2026, 12, 24)
    rules = PeriodRules(six_monthly_due=(6, 20))
    # 20 June 2026 is a Saturday: due Friday the 19th.
    assert due_date(period(Kind.SIX_MONTHLY, 2026, 1, rules), rules, CAL) == date(2026, 6, 19)
    assert due_date(parse("2026-11-01..2026-11-10", DECREE), DECREE, CAL) is None


def test_parse_periods_and_reject_malformed_ones() -> None:
    assert parse("2026-11", DECREE).key == "monthly:2026-11"
    assert parse("2026-Q2", DECREE).key == "quarterly:2026-Q2"
    assert parse("2026-H1", DECREE).kind is Kind.SIX_MONTHLY
    assert parse("2026", DECREE).kind is Kind.ANNUAL
    custom = parse("2026-11-01..2026-11-20", DECREE, Kind.THEMATIC)
    assert custom.kind is Kind.THEMATIC and custom.days == 20
    assert "từ ngày 01/11/2026" in custom.label
    for bad in ("2026-13", "November", "2026-11-20..2026-11-01", "2026-Q5"):
        with pytest.raises(PeriodError):
            parse(bad, DECREE)
