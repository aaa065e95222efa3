"""`WorkingCalendar.working_seconds_between` with each day's office periods kept.

The fold computes a working duration per acknowledgement and resolution, again each
time an incident is folded anew; the calendar builds the day's periods as datetimes for
every day of every call. Here a day is its periods in seconds from local midnight (once
per day), and the full working days between two days are summed once per pair of days.
Same result: the calendar also measures wall-clock time of the calendar's zone.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from ioc_shared.calendar_vn import WorkingCalendar

_DAY_S = 86400.0


def _seconds_of(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


class WorkingTime:
    def __init__(self, calendar: WorkingCalendar) -> None:
        self.calendar = calendar
        self._tz = calendar.tz
        self._periods = tuple((_seconds_of(p), _seconds_of(q)) for p, q in sorted(calendar.periods))
        self._days: dict[date, tuple[tuple[int, int], ...]] = {}
        self._between: dict[tuple[date, date], float] = {}

    def working_seconds_between(self, start: datetime, end: datetime) -> float:
        """As `WorkingCalendar.working_seconds_between` (0 when end <= start)."""
        a, b = start.astimezone(self._tz), end.astimezone(self._tz)
        if b <= a:
            return 0.0
        day_a, day_b = a.date(), b.date()
        from_a = a.hour * 3600 + a.minute * 60 + a.second + a.microsecond / 1e6
        to_b = b.hour * 3600 + b.minute * 60 + b.second + b.microsecond / 1e6
        if day_a == day_b:
            return self._within(day_a, from_a, to_b)
        return (self._within(day_a, from_a, _DAY_S) + self._full_days(day_a, day_b)
                + self._within(day_b, 0.0, to_b))

    def _periods_of(self, day: date) -> tuple[tuple[int, int], ...]:
        found = self._days.get(day)
        if found is None:
            found = self._days[day] = (self._periods if self.calendar.is_working_day(day)
                                       else ())
        return found

    def _within(self, day: date, lo: float, hi: float) -> float:
        total = 0.0
        for begin, finish in self._periods_of(day):
            low, high = max(begin, lo), min(finish, hi)
            if high > low:
                total += high - low
        return total

    def _full_days(self, first: date, last: date) -> float:
        """Working seconds of the days strictly between `first` and `last`."""
        key = (first, last)
        found = self._between.get(key)
        if found is None:
            found, day = 0.0, first + timedelta(days=1)
            while day < last:
                found += sum(q - p for p, q in self._periods_of(day))
                day += timedelta(days=1)
            self._between[key] = found
        return found
