"""Staff allowances (Đ9; Resolution 14/2021/NQ-HĐND of Bình Phước), pure.

Rates are data with the day they take effect. A month counts for a period when its 14th
lies in the period: a Decree 09 month (15 October to 14 November) counts November, its
reporting month, and a calendar month counts itself; a shorter span counts the month of
its end. A person on the roster on that 14th receives the rate in force that day for
their kind of work.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Rate:
    kind: str
    amount: int           # đồng per person per month
    effective_from: date


@dataclass(frozen=True, slots=True)
class StaffMember:
    id: str
    title: str
    unit: str
    kind: str
    start: date
    end: date | None = None

    def on_roster(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True, slots=True)
class AllowanceLine:
    unit: str
    kind: str
    person_months: int
    amount: int


def rate_on(rates: list[Rate], kind: str, day: date) -> int:
    """The amount in force on `day` for `kind` (0 when none has started yet)."""
    found = [r for r in rates if r.kind == kind and r.effective_from <= day]
    return max(found, key=lambda r: r.effective_from).amount if found else 0


def months_of(start: date, end: date) -> list[date]:
    """The 14th of each month counted for a period: months whose 14th lies in it
    (at least the month of the period's end)."""
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        mid = date(y, m, 14)
        if start <= mid <= end:
            out.append(mid)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out or [date(end.year, end.month, 14)]


def allowances(staff: list[StaffMember], rates: list[Rate], start: date,
               end: date) -> list[AllowanceLine]:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for mid in months_of(start, end):
        for person in staff:
            if person.on_roster(mid):
                line = totals[(person.unit, person.kind)]
                line[0] += 1
                line[1] += rate_on(rates, person.kind, mid)
    return [AllowanceLine(unit, kind, n, amount)
            for (unit, kind), (n, amount) in sorted(totals.items())]
