"""Reporting periods, their cut-off days and due dates (pure).

Cut-off (`decree-09`, the default): Decree 09/2019/NĐ-CP, Article 12 — monthly data
from the 15th of the previous month to the 14th of the reporting month; quarterly from
the 15th of the month before the quarter to the 14th of its last month; six-monthly
from 15 December of the previous year to 14 June; annual from 15 December of the
previous year to 14 December. `calendar`: calendar months, quarters, halves, years.

Due dates (Đ6.6, Đ11.6 of the regulation): the monthly report before the 25th of the
reporting month, the quarterly report before the 25th of the quarter's last month,
six-monthly and annual reports before the configured day. Rule for "before the 25th":
the report is due on the last working day strictly before that day, so a 25th on a
Monday makes it due on Friday the 22nd, and a 25th after Tết's days off makes it due on
the last working day before them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from ioc_shared.calendar_vn import WorkingCalendar, last_working_day_before


class Kind(StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SIX_MONTHLY = "six-monthly"
    ANNUAL = "annual"
    THEMATIC = "thematic"
    AD_HOC = "ad-hoc"


PERIODIC = (Kind.MONTHLY, Kind.QUARTERLY, Kind.SIX_MONTHLY, Kind.ANNUAL)
ROMAN = ("I", "II", "III", "IV")


class PeriodError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PeriodRules:
    cut_off: str = "decree-09"                 # or "calendar"
    due_day: int = 25
    six_monthly_due: tuple[int, int] = (6, 25)
    annual_due: tuple[int, int] = (12, 25)


@dataclass(frozen=True, slots=True)
class Period:
    kind: Kind
    year: int
    index: int            # month 1-12, quarter 1-4, half 1, 0 for a year or a custom span
    start: date
    end: date             # inclusive

    @property
    def key(self) -> str:
        if self.kind is Kind.MONTHLY:
            return f"monthly:{self.year}-{self.index:02d}"
        if self.kind is Kind.QUARTERLY:
            return f"quarterly:{self.year}-Q{self.index}"
        if self.kind is Kind.SIX_MONTHLY:
            return f"six-monthly:{self.year}-H{self.index}"
        if self.kind is Kind.ANNUAL:
            return f"annual:{self.year}"
        return f"{self.kind.value}:{self.start.isoformat()}..{self.end.isoformat()}"

    @property
    def label(self) -> str:
        """Vietnamese name of the period, as in a report's subject."""
        if self.kind is Kind.MONTHLY:
            return f"tháng {self.index} năm {self.year}"
        if self.kind is Kind.QUARTERLY:
            return f"quý {ROMAN[self.index - 1]} năm {self.year}"
        if self.kind is Kind.SIX_MONTHLY:
            return f"6 tháng đầu năm {self.year}"
        if self.kind is Kind.ANNUAL:
            return f"năm {self.year}"
        return f"từ ngày {self.start:%d/%m/%Y} đến ngày {self.end:%d/%m/%Y}"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def periodic(self) -> bool:
        return self.kind in PERIODIC


def _month_shift(year: int, month: int, by: int) -> tuple[int, int]:
    i = year * 12 + (month - 1) + by
    return i // 12, i % 12 + 1


def _last_day(year: int, month: int) -> date:
    y, m = _month_shift(year, month, 1)
    return date(y, m, 1) - timedelta(days=1)


def period(kind: Kind, year: int, index: int, rules: PeriodRules) -> Period:
    """The periodic report of `kind` for `year` and `index` (month, quarter, half)."""
    decree = rules.cut_off == "decree-09"
    if kind is Kind.MONTHLY:
        if not 1 <= index <= 12:
            raise PeriodError(f"month {index}")
        if decree:
            py, pm = _month_shift(year, index, -1)
            return Period(kind, year, index, date(py, pm, 15), date(year, index, 14))
        return Period(kind, year, index, date(year, index, 1), _last_day(year, index))
    if kind is Kind.QUARTERLY:
        if not 1 <= index <= 4:
            raise PeriodError(f"quarter {index}")
        first, last = 3 * index - 2, 3 * index
        if decree:
            py, pm = _month_shift(year, first, -1)
            return Period(kind, year, index, date(py, pm, 15), date(year, last, 14))
        return Period(kind, year, index, date(year, first, 1), _last_day(year, last))
    if kind is Kind.SIX_MONTHLY:
        if index != 1:
            raise PeriodError("six-monthly reports cover the first half (H1)")
        if decree:
            return Period(kind, year, 1, date(year - 1, 12, 15), date(year, 6, 14))
        return Period(kind, year, 1, date(year, 1, 1), date(year, 6, 30))
    if kind is Kind.ANNUAL:
        if decree:
            return Period(kind, year, 0, date(year - 1, 12, 15), date(year, 12, 14))
        return Period(kind, year, 0, date(year, 1, 1), date(year, 12, 31))
    raise PeriodError(f"{kind} is not periodic")


def span(kind: Kind, start: date, end: date) -> Period:
    """A thematic or ad-hoc report over any span of days."""
    if end < start:
        raise PeriodError("the period ends before it starts")
    return Period(kind, start.year, 0, start, end)


def containing(kind: Kind, day: date, rules: PeriodRules) -> Period:
    """The periodic report of `kind` whose data period contains `day`."""
    decree = rules.cut_off == "decree-09"
    year, month = day.year, day.month
    if decree and day.day >= 15:
        year, month = _month_shift(year, month, 1)
    if kind is Kind.MONTHLY:
        return period(kind, year, month, rules)
    if kind is Kind.QUARTERLY:
        return period(kind, year, (month - 1) // 3 + 1, rules)
    if kind is Kind.SIX_MONTHLY:
        # Only the first half has a six-monthly report: after it, the next year's.
        return period(kind, year + (month > 6), 1, rules)
    return period(Kind.ANNUAL, year, 0, rules)


def previous(p: Period, rules: PeriodRules) -> Period:
    """The period just before (same length for a custom span)."""
    if p.kind is Kind.MONTHLY:
        y, m = _month_shift(p.year, p.index, -1)
        return period(p.kind, y, m, rules)
    if p.kind is Kind.QUARTERLY:
        return period(p.kind, p.year - (p.index == 1), (p.index - 2) % 4 + 1, rules)
    if p.kind in (Kind.SIX_MONTHLY, Kind.ANNUAL):
        return period(p.kind, p.year - 1, p.index, rules)
    return span(p.kind, p.start - timedelta(days=p.days), p.start - timedelta(days=1))


def same_period_last_year(p: Period, rules: PeriodRules) -> Period:
    if p.periodic:
        return period(p.kind, p.year - 1, p.index, rules)

    def back(d: date) -> date:
        return d.replace(year=d.year - 1, day=min(d.day, _last_day(d.year - 1, d.month).day))

    return span(p.kind, back(p.start), back(p.end))


def due_date(p: Period, rules: PeriodRules, calendar: WorkingCalendar) -> date | None:
    """The last working day before the reporting day (None for thematic and ad-hoc)."""
    if p.kind is Kind.MONTHLY:
        limit = date(p.year, p.index, rules.due_day)
    elif p.kind is Kind.QUARTERLY:
        limit = date(p.year, 3 * p.index, rules.due_day)
    elif p.kind is Kind.SIX_MONTHLY:
        limit = date(p.year, *rules.six_monthly_due)
    elif p.kind is Kind.ANNUAL:
        limit = date(p.year, *rules.annual_due)
    else:
        return None
    return last_working_day_before(calendar, limit)


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_HALF = re.compile(r"^(\d{4})-H1$")
_YEAR = re.compile(r"^(\d{4})$")
_SPAN = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


def parse(text: str, rules: PeriodRules, kind: Kind | None = None) -> Period:
    """'2026-11' (month), '2026-Q4', '2026-H1', '2026', or '2026-11-01..2026-11-20'."""
    text = text.strip()
    try:
        if m := _MONTH.match(text):
            p = period(Kind.MONTHLY, int(m[1]), int(m[2]), rules)
        elif m := _QUARTER.match(text):
            p = period(Kind.QUARTERLY, int(m[1]), int(m[2]), rules)
        elif m := _HALF.match(text):
            p = period(Kind.SIX_MONTHLY, int(m[1]), 1, rules)
        elif m := _YEAR.match(text):
            p = period(Kind.ANNUAL, int(m[1]), 0, rules)
        elif m := _SPAN.match(text):
            return span(kind or Kind.AD_HOC, date.fromisoformat(m[1]), date.fromisoformat(m[2]))
        else:
            raise PeriodError(f"'{text}' is not a period")
    except ValueError as exc:
        raise PeriodError(str(exc)) from exc
    if kind is not None and kind not in PERIODIC:
        return span(kind, p.start, p.end)
    return p
