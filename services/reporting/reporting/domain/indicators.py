"""What one canonical record of an indicator dataset contributes to `indicator_daily`.

The day is the period the record is about (its own date field), not when it arrived,
so a late record lands in its period. A newer version of the same record replaces the
older one's contribution (the consumer applies the difference).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")

IndicatorKey = tuple[date, str, str, str, str]      # day, dataset, commune, unit, indicator
IndicatorContribution = dict[IndicatorKey, tuple[int, float]]

# Field that dates the record, per dataset (first one present wins).
DATE_FIELDS = ("period_start", "month", "period", "received_at", "reported_at")


class RecordError(ValueError):
    pass


def _day(record: dict[str, Any]) -> date:
    for name in DATE_FIELDS:
        value = record.get(name)
        if isinstance(value, str) and value:
            try:
                if len(value) == 10:
                    return date.fromisoformat(value)
                moment = datetime.fromisoformat(value)
            except ValueError as exc:
                raise RecordError(f"{name}: {value!r} is not a date") from exc
            return moment.astimezone(LOCAL).date() if moment.tzinfo else moment.date()
    raise RecordError("no date field")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def contribution_of(dataset: str, record: dict[str, Any]) -> IndicatorContribution:
    """The (count, total) of each indicator the record carries; raises RecordError."""
    day = _day(record)
    commune = str(record.get("commune") or "")
    unit = str(record.get("handling_unit") or "")
    out: IndicatorContribution = {}
    if isinstance(record.get("indicator"), str):
        value = _number(record.get("value"))
        if value is None:
            raise RecordError("value is not a number")
        out[(day, dataset, commune, unit, record["indicator"])] = (1, value)
    elif isinstance(record.get("status"), str):
        # Public-service dossiers: counted by status per handling unit.
        out[(day, dataset, commune, unit, f"status:{record['status']}")] = (1, 1.0)
    else:
        for name, value in record.items():
            if name in ("record_id", "commune", *DATE_FIELDS):
                continue
            number = _number(value) if not isinstance(value, str) else None
            if number is not None:
                out[(day, dataset, commune, unit, name)] = (1, number)
    if not out:
        raise RecordError("no indicator value")
    return out


def indicator_delta(old: IndicatorContribution,
                    new: IndicatorContribution) -> IndicatorContribution:
    out: IndicatorContribution = {}
    for key in old.keys() | new.keys():
        n0, t0 = old.get(key, (0, 0.0))
        n1, t1 = new.get(key, (0, 0.0))
        if n1 != n0 or t1 != t0:
            out[key] = (n1 - n0, t1 - t0)
    return out


def to_json(c: IndicatorContribution) -> list[list[Any]]:
    return [[k[0].isoformat(), *k[1:], n, t] for k, (n, t) in sorted(c.items())]


def from_json(raw: list[list[Any]]) -> IndicatorContribution:
    return {(date.fromisoformat(r[0]), r[1], r[2], r[3], r[4]): (int(r[5]), float(r[6]))
            for r in raw}
