"""The fold's working durations with the days kept equal the calendar's own."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

from ioc_shared.calendar_vn import WorkingCalendar
from reporting.domain.working_time import WorkingTime


def _pairs(seed: int, n: int) -> list[tuple[datetime, datetime]]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)   # Tết 2026, 30/4-1/5, 2/9, 24/11 within
    out = []
    for _ in range(n):
        a = start + timedelta(seconds=rng.uniform(0, 365 * 86400))
        span = rng.choice([rng.uniform(0, 4 * 3600), rng.uniform(0, 3 * 86400),
                           rng.uniform(0, 40 * 86400), -rng.uniform(0, 3600)])
        out.append((a, a + timedelta(seconds=span)))
    return out


def test_same_seconds_as_the_calendar_over_a_year_of_random_pairs() -> None:
    calendar = WorkingCalendar(extra_days_off=frozenset({date(2026, 6, 15)}),
                               extra_working_days=frozenset({date(2026, 6, 20)}))
    kept = WorkingTime(calendar)
    for a, b in _pairs(7, 3000) + _pairs(7, 500):   # the second half from the kept days
        assert abs(kept.working_seconds_between(a, b)
                   - calendar.working_seconds_between(a, b)) < 1e-6, (a, b)


def test_edges_of_office_periods_and_other_periods() -> None:
    calendar = WorkingCalendar(periods=((time(8, 0), time(12, 0, 30)), (time(13, 0), time(17, 0))))
    kept = WorkingTime(calendar)
    local = calendar.tz
    monday = datetime(2026, 12, 7, tzinfo=local)
    cases = [(monday.replace(hour=8), monday.replace(hour=12, second=30)),      # 4 h 30 s
             (monday.replace(hour=12, minute=10), monday.replace(hour=13)),    # lunch: 0
             (monday.replace(hour=16), monday + timedelta(days=1, hours=9)),   # over a night
             (monday - timedelta(hours=30), monday + timedelta(hours=10))]     # from Saturday
    expected = [4 * 3600 + 30, 0, 7200, 7200]
    assert [kept.working_seconds_between(a, b) for a, b in cases] == expected
    assert [calendar.working_seconds_between(a, b) for a, b in cases] == expected
