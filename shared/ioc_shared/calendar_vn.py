"""Working time in Vietnam: office hours, public holidays, compensatory working days.

Shared by the services that count working time (routing, reporting).

Deadlines of the regulation are counted in working hours and working days of
the district administration, local time Asia/Ho_Chi_Minh. Every value that
enters or leaves this module is an aware datetime; callers store UTC.

Public holidays come from the maintained `holidays` library (it follows the
government's yearly decisions, including the lunar ones: Tết, Hùng Kings'
day, and the Saturdays worked in exchange for a bridge day off). The
operator's configuration can add extra days off and extra working days on
top of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
# Mon-Fri 07:30-11:30 and 13:30-17:00: the usual office hours of district bodies.
DEFAULT_PERIODS: tuple[tuple[time, time], ...] = (
    (time(7, 30), time(11, 30)),
    (time(13, 30), time(17, 0)),
)
DEFAULT_WEEKDAYS: frozenset[int] = frozenset(range(5))  # Monday=0 .. Friday=4

# Searching further than this for working time means the calendar has none.
_MAX_SEARCH_DAYS = 3 * 366


class CalendarError(ValueError):
    """The calendar cannot answer (for instance: no working time at all)."""


@dataclass(frozen=True)
class WorkingCalendar:
    timezone: str = DEFAULT_TIMEZONE
    periods: tuple[tuple[time, time], ...] = DEFAULT_PERIODS
    weekdays: frozenset[int] = DEFAULT_WEEKDAYS
    extra_days_off: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()
    _holiday_years: dict[int, holidays.HolidayBase] = field(
        default_factory=dict, compare=False, repr=False)
    # Answers of is_working_day: a duration of days asks about each of them, every time.
    _working: dict[date, bool] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for start, end in self.periods:
            if not start < end:
                raise CalendarError(f"office period {start:%H:%M}-{end:%H:%M} is empty")
        ordered = sorted(self.periods)
        for (_, end), (start, _) in pairwise(ordered):
            if start < end:
                raise CalendarError("office periods overlap")

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _sorted_periods(self) -> tuple[tuple[time, time], ...]:
        return tuple(sorted(self.periods))

    @cached_property
    def seconds_per_day(self) -> int:
        """Working seconds in one full working day."""
        return sum(_seconds(start, end) for start, end in self.periods)

    # --- days ------------------------------------------------------------
    def _holidays(self, year: int) -> holidays.HolidayBase:
        found = self._holiday_years.get(year)
        if found is None:
            found = holidays.country_holidays("VN", years=year)
            self._holiday_years[year] = found
        return found

    def holiday_name(self, day: date) -> str | None:
        if day in self.extra_days_off:
            return "extra day off (configuration)"
        name = self._holidays(day.year).get(day)
        return str(name) if name is not None else None

    def is_working_day(self, day: date) -> bool:
        known = self._working.get(day)
        if known is None:
            known = self._working[day] = self._is_working_day(day)
        return known

    def _is_working_day(self, day: date) -> bool:
        if day in self.extra_working_days:
            return True
        if day in self.extra_days_off:
            return False
        table = self._holidays(day.year)
        # Saturdays worked in exchange for a bridge day off, per the yearly decision.
        if day in table.weekend_workdays:
            return True
        if day in table:
            return False
        return day.weekday() in self.weekdays

    def days_off_and_worked_days(self, start: date, end: date) -> list[tuple[date, bool, str]]:
        """Holidays and days off in [start, end) (weekends included, as the government's
        decision lists a whole break) and days worked outside the usual working weekdays
        (compensatory Saturdays): (day, worked, why), for comparison with the decision."""
        found: list[tuple[date, bool, str]] = []
        day = start
        while day < end:
            worked, name = self.is_working_day(day), self.holiday_name(day)
            if worked and day.weekday() not in self.weekdays:
                why = ("compensatory working day (configuration)" if day in self.extra_working_days
                       else "worked in exchange for a bridge day off (holidays library)")
                found.append((day, True, why))
            elif not worked and name is not None:
                found.append((day, False, name))
            day += timedelta(days=1)
        return found

    def _intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self.is_working_day(day):
            return []
        return [(datetime.combine(day, start, self.tz), datetime.combine(day, end, self.tz))
                for start, end in self._sorted_periods]

    def _days_from(self, day: date, step: int) -> Iterator[date]:
        for offset in range(_MAX_SEARCH_DAYS):
            yield day + timedelta(days=offset * step)
        raise CalendarError(f"no working time within {_MAX_SEARCH_DAYS} days of {day}")

    # --- arithmetic --------------------------------------------------------
    def add_working_seconds(self, start: datetime, seconds: float) -> datetime:
        """The instant when `seconds` of working time have passed after `start`."""
        if seconds < 0:
            return self.subtract_working_seconds(start, -seconds)
        local = _aware(start).astimezone(self.tz)
        remaining = timedelta(seconds=seconds)
        for day in self._days_from(local.date(), 1):
            for begin, end in self._intervals(day):
                if end <= local:
                    continue
                begin = max(begin, local)
                available = end - begin
                if remaining <= available:
                    # Work that ends exactly at a period's end is due then, not next morning.
                    return (begin + remaining).astimezone(UTC)
                remaining -= available
        raise CalendarError("unreachable")  # pragma: no cover

    def subtract_working_seconds(self, end: datetime, seconds: float) -> datetime:
        """The instant `seconds` of working time before `end` (for reminders)."""
        local = _aware(end).astimezone(self.tz)
        remaining = timedelta(seconds=seconds)
        for day in self._days_from(local.date(), -1):
            for begin, finish in reversed(self._intervals(day)):
                if begin >= local:
                    continue
                finish = min(finish, local)
                available = finish - begin
                if remaining <= available:
                    return (finish - remaining).astimezone(UTC)
                remaining -= available
        raise CalendarError("unreachable")  # pragma: no cover

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        return self.add_working_seconds(start, hours * 3600)

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """End of office hours on the `days`-th working day after the day of `start`.

        The day the matter arrives is not counted (as for administrative time
        limits): received Monday 10:00, 1 working day -> due Tuesday 17:00.
        Zero days means the end of the current working day (or the next one).
        """
        local = _aware(start).astimezone(self.tz)
        counted = 0
        day = local.date()
        if days == 0:
            for candidate in self._days_from(day, 1):
                intervals = self._intervals(candidate)
                if intervals and intervals[-1][1] > local:
                    return intervals[-1][1].astimezone(UTC)
        for candidate in self._days_from(day + timedelta(days=1), 1):
            intervals = self._intervals(candidate)
            if intervals:
                counted += 1
                if counted >= days:
                    return intervals[-1][1].astimezone(UTC)
        raise CalendarError("unreachable")  # pragma: no cover

    def working_seconds_between(self, start: datetime, end: datetime) -> float:
        """Working time between two instants (0 when end <= start)."""
        a, b = _aware(start).astimezone(self.tz), _aware(end).astimezone(self.tz)
        if b <= a:
            return 0.0
        total = 0.0
        day = a.date()
        while day <= b.date():
            for begin, finish in self._intervals(day):
                lo, hi = max(begin, a), min(finish, b)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total


def _seconds(start: time, end: time) -> int:
    return (end.hour * 3600 + end.minute * 60) - (start.hour * 3600 + start.minute * 60)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise CalendarError("naive datetime: working-time arithmetic needs aware datetimes")
    return value


def parse_period(text: str) -> tuple[time, time]:
    """'07:30-11:30' -> (07:30, 11:30)."""
    try:
        start_text, end_text = (part.strip() for part in text.split("-"))
        start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    except ValueError as exc:
        raise CalendarError(f"office period {text!r} must look like '07:30-11:30'") from exc
    if not start < end:
        raise CalendarError(f"office period {text!r} ends before it starts")
    return start, end


WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_weekdays(names: Iterable[str]) -> frozenset[int]:
    found = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in WEEKDAY_NAMES:
            raise CalendarError(f"unknown weekday {name!r} (use mon, tue, ... sun)")
        found.add(WEEKDAY_NAMES.index(key))
    return frozenset(found)


def last_working_day_before(calendar: WorkingCalendar, day: date) -> date:
    """The last working day strictly before `day`."""
    for candidate in calendar._days_from(day - timedelta(days=1), -1):
        if calendar.is_working_day(candidate):
            return candidate
    raise CalendarError("unreachable")  # pragma: no cover


def working_days_before(calendar: WorkingCalendar, day: date, count: int) -> date:
    """The working day `count` working days before `day` (`day` itself not counted)."""
    found = day
    for _ in range(count):
        found = last_working_day_before(calendar, found)
    return found


def working_days_between(calendar: WorkingCalendar, start: date, end: date) -> int:
    """Working days after `start` up to and including `end` (0 when end <= start)."""
    n, day = 0, start
    while day < end:
        day += timedelta(days=1)
        n += calendar.is_working_day(day)
    return n
