"""Every figure of a report, computed from rollup rows (pure).

The result is the JSON body of `report.published` (contract `ioc.reporting.report/1`)
and the single source of the PDF, DOCX and XLSX: a renderer never computes a figure.
Its cost grows with the rollup rows of the period (units x communes x categories x
days), not with the number of events behind them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from reporting.domain.allowances import AllowanceLine
from reporting.domain.formatting import (
    ALLOWANCE_KINDS,
    CATEGORY_NAMES,
    DOMAIN_NAMES,
    INDICATOR_NAMES,
    REASON_NAMES,
    change,
    nfc,
    number,
    percent,
)
from reporting.domain.histogram import BUCKETS, percentile
from reporting.domain.periods import Kind, Period

CONTRACT = "ioc.reporting.report/1"

FLOW_MEASURES = ("received", "verified", "rejected", "approved", "assigned", "acknowledged",
                 "resolved", "closed", "returned", "transferred", "escalated", "reopened",
                 "merged", "ack_on_time", "ack_late", "resolve_on_time", "resolve_late",
                 "survey_responses", "survey_score")

# day, measure, unit, commune, category, source, n; None = summed over (see `group_rows`)
IncidentRow = tuple[date, str, str | None, str | None, str | None, str | None, int]


@dataclass(frozen=True, slots=True)
class Scope:
    """A thematic report's focus; empty for the periodic reports."""

    domain: str | None = None
    commune: str | None = None
    unit: str | None = None
    category: str | None = None

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("domain", self.domain), ("commune", self.commune),
                                  ("unit", self.unit), ("category", self.category)) if v}

    def keeps(self, unit: str, commune: str, category: str) -> bool:
        return ((self.commune is None or commune in (self.commune, ""))
                and (self.unit is None or unit in (self.unit, ""))
                and (self.category is None or category in (self.category, "")))


@dataclass(frozen=True, slots=True)
class OverdueItem:
    incident_id: str
    unit: str
    category: str
    commune: str
    due_on: date
    working_days_late: int


@dataclass
class ReportInputs:
    period: Period
    scope: Scope
    incident_rows: list[IncidentRow]
    previous: Period | None = None
    previous_totals: dict[str, int] | None = None
    last_year: Period | None = None
    last_year_totals: dict[str, int] | None = None
    trend: list[tuple[date, str, int]] = field(default_factory=list)   # month, measure, n
    overdue: list[OverdueItem] = field(default_factory=list)
    overdue_count: int = 0
    quality: list[tuple[str, str, int]] = field(default_factory=list)        # unit, dataset, accepted
    reasons: list[tuple[str, str, str, int]] = field(default_factory=list)   # unit, dataset, code, n
    freshness: list[tuple[str, str, int, int]] = field(default_factory=list)  # late, recovered
    # Rejections as sent to the units (ingest.record.rejected): unit, dataset, code, n.
    rejections: list[tuple[str, str, str, int]] = field(default_factory=list)
    expected_pairs: list[tuple[str, str]] = field(default_factory=list)
    connected_pairs: set[tuple[str, str]] = field(default_factory=set)
    province_sync: list[dict[str, Any]] | None = None
    indicators: list[tuple[str, str, str, str, int, float, date, float, int]] = field(
        default_factory=list)   # dataset, commune, unit, indicator, n, total, latest day/total/n
    allowances: list[AllowanceLine] = field(default_factory=list)
    allowance_basis: str = ""


@dataclass(frozen=True)
class Names:
    units: Mapping[str, str]
    datasets: Mapping[str, tuple[str, str]]     # id -> (name, domain)

    def unit(self, unit_id: str) -> str:
        return self.units.get(unit_id, unit_id or "Chưa giao")

    def dataset(self, dataset_id: str) -> str:
        return self.datasets.get(dataset_id, (dataset_id, ""))[0]


def _rate(part: int, whole: int) -> float | None:
    return round(part * 100.0 / whole, 1) if whole else None


def _hist(rows: Iterable[IncidentRow], prefix: str) -> list[int]:
    counts = [0] * BUCKETS
    for r in rows:
        if r[1].startswith(prefix):
            counts[int(r[1][len(prefix):])] += r[6]
    return counts


def _duration(counts: list[int]) -> dict[str, Any]:
    median, p90 = percentile(counts, 0.5), percentile(counts, 0.9)
    return {"count": sum(counts), "median_h": None if median is None else round(median, 1),
            "p90_h": None if p90 is None else round(p90, 1)}


def _totals(rows: Iterable[IncidentRow]) -> dict[str, int]:
    out = dict.fromkeys(FLOW_MEASURES, 0)
    for r in rows:
        if r[1] in out:
            out[r[1]] += r[6]
    return out


def group_rows(rows: Iterable[IncidentRow], scope: Scope | None = None) -> list[IncidentRow]:
    """What the repository's GROUPING SETS query returns, from full-dimension rows: the
    period's sums per measure, and per measure and unit, commune, category or source
    (the other dimensions None). For tests and the sample report."""
    sums: dict[tuple[Any, ...], int] = defaultdict(int)
    day = None
    for r in rows:
        day = r[0]
        if scope is not None and not scope.keeps(r[2] or "", r[3] or "", r[4] or ""):
            continue
        m, unit, commune, category, source, n = r[1:]
        for key in ((m, None, None, None, None), (m, unit, None, None, None),
                    (m, None, commune, None, None), (m, None, None, category, None),
                    (m, None, None, None, source)):
            sums[key] += n
    return [(day, *k, n) for k, n in sums.items() if n]


def incident_figures(inputs: ReportInputs, names: Names) -> dict[str, Any]:
    """From grouped rows (see `group_rows`): None marks a dimension summed over."""
    scope = inputs.scope
    rows = [r for r in inputs.incident_rows
            if r[2] is None and r[3] is None and r[4] is None and r[5] is None]
    totals = _totals(rows)
    totals["overdue_open"] = inputs.overdue_count
    totals["overdue"] = totals["resolve_late"] + inputs.overdue_count
    by_unit: dict[str, list[IncidentRow]] = defaultdict(list)
    by_commune: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_category: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    states: dict[str, int] = defaultdict(int)
    for r in rows:
        if r[1].startswith("state:"):
            states[r[1][6:]] += r[6]
    for r in inputs.incident_rows:
        _, measure, unit, commune, category, source, n = r
        if unit:
            by_unit[unit].append(r)
        elif measure in ("received", "resolved", "rejected"):
            if commune:
                by_commune[commune][measure] += n
            elif category is not None:
                by_category[category][measure] += n
            elif source:
                by_source[source][measure] += n
    units = []
    for unit, unit_rows in sorted(by_unit.items()):
        t = _totals(unit_rows)
        if not any(t.values()):
            continue
        handled = t["resolve_on_time"] + t["resolve_late"]
        units.append({
            "unit": unit, "name": names.unit(unit), "assigned": t["assigned"],
            "acknowledged": t["acknowledged"], "resolved": t["resolved"],
            "resolve_on_time": t["resolve_on_time"], "resolve_late": t["resolve_late"],
            "on_time_rate": _rate(t["resolve_on_time"], handled),
            "ack_on_time_rate": _rate(t["ack_on_time"], t["ack_on_time"] + t["ack_late"]),
            "returned": t["returned"], "transferred": t["transferred"],
            "escalated": t["escalated"], "survey_responses": t["survey_responses"],
            "survey_mean": (round(t["survey_score"] / t["survey_responses"], 2)
                            if t["survey_responses"] else None),
            "resolve_median_h": _duration(_hist(unit_rows, "resolve_h"))["median_h"],
        })
    ack_hist, resolve_hist = _hist(rows, "ack_h"), _hist(rows, "resolve_h")
    overdue = [{"incident_id": o.incident_id, "unit": o.unit, "unit_name": names.unit(o.unit),
                "category": o.category, "category_name": CATEGORY_NAMES.get(o.category, o.category),
                "commune": o.commune, "commune_name": names.unit(o.commune),
                "due_on": o.due_on.isoformat(), "working_days_late": o.working_days_late}
               for o in inputs.overdue if scope.keeps(o.unit, o.commune, o.category)]
    trend: dict[str, dict[str, int]] = defaultdict(lambda: {"received": 0, "resolved": 0})
    for month, measure, n in inputs.trend:
        trend[month.strftime("%Y-%m")][measure] += n
    return {
        "totals": totals,
        "on_time": {
            "acknowledge_rate": _rate(totals["ack_on_time"], totals["ack_on_time"] + totals["ack_late"]),
            "resolve_rate": _rate(totals["resolve_on_time"],
                                  totals["resolve_on_time"] + totals["resolve_late"]),
        },
        "durations": {"acknowledge": _duration(ack_hist), "resolve": _duration(resolve_hist),
                      "unit": "working hours"},
        "by_unit": units,
        "by_commune": [{"commune": c, "name": names.unit(c), "received": v["received"],
                        "resolved": v["resolved"]} for c, v in sorted(by_commune.items())],
        "by_category": [{"category": c, "name": CATEGORY_NAMES.get(c, c), "received": v["received"],
                         "resolved": v["resolved"], "rejected": v["rejected"]}
                        for c, v in sorted(by_category.items())],
        "by_source": [{"source": s, "name": names.dataset(s), "received": v["received"]}
                      for s, v in sorted(by_source.items())],
        "states": {s: n for s, n in sorted(states.items()) if n},
        "overdue": overdue,
        "satisfaction": {
            "responses": totals["survey_responses"],
            "mean_score": (round(totals["survey_score"] / totals["survey_responses"], 2)
                           if totals["survey_responses"] else None)},
        "trend": [{"month": m, **v} for m, v in sorted(trend.items())],
    }


def data_sharing_figures(inputs: ReportInputs, names: Names) -> dict[str, Any]:
    pairs: dict[tuple[str, str], dict[str, Any]] = {}

    def pair(unit: str, dataset: str) -> dict[str, Any]:
        return pairs.setdefault((unit, dataset), {
            "unit": unit, "unit_name": names.unit(unit), "dataset": dataset,
            "dataset_name": names.dataset(dataset), "accepted": 0, "rejected": 0,
            "reasons": {}, "late_periods": 0, "recovered": 0})

    for unit, dataset, accepted in inputs.quality:
        pair(unit, dataset)["accepted"] += accepted
    for unit, dataset, code, n in inputs.reasons:
        p = pair(unit, dataset)
        p["rejected"] += n
        p["reasons"][code] = p["reasons"].get(code, 0) + n
    for unit, dataset, late, recovered in inputs.freshness:
        p = pair(unit, dataset)
        p["late_periods"] += late
        p["recovered"] += recovered
    rows = [pairs[k] for k in sorted(pairs)]
    for p in rows:
        p["reasons"] = dict(sorted(p["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
        p["rejected_rate"] = _rate(p["rejected"], p["accepted"] + p["rejected"])
    expected = sorted(set(inputs.expected_pairs))
    not_connected = [{"unit": u, "unit_name": names.unit(u), "dataset": d,
                      "dataset_name": names.dataset(d)}
                     for u, d in expected if (u, d) not in inputs.connected_pairs]
    late_pairs = {(p["unit"], p["dataset"]) for p in rows if p["late_periods"]}
    watched = [k for k in expected if k in inputs.connected_pairs]
    reasons: dict[str, int] = defaultdict(int)
    for p in rows:
        for code, n in p["reasons"].items():
            reasons[code] += n
    return {
        "totals": {"accepted": sum(p["accepted"] for p in rows),
                   "rejected": sum(p["rejected"] for p in rows),
                   "late_periods": sum(p["late_periods"] for p in rows)},
        "reasons": [{"code": c, "name": REASON_NAMES.get(c, c), "n": n}
                    for c, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
        "freshness_compliance_rate": _rate(len([k for k in watched if k not in late_pairs]),
                                           len(watched)),
        "pairs": rows,
        "not_connected": not_connected,
        "province_sync": inputs.province_sync,
        "rejection_notices": {
            "total": sum(n for *_, n in inputs.rejections),
            "unidentified": sum(n for u, *_, n in inputs.rejections if not u or u == "unknown")},
    }


def indicator_figures(inputs: ReportInputs, names: Names) -> list[dict[str, Any]]:
    out = []
    for dataset, commune, unit, indicator, n, total, latest_day, latest_total, latest_n in \
            sorted(inputs.indicators):
        domain = names.datasets.get(dataset, ("", "general"))[1]
        if inputs.scope.domain and domain != inputs.scope.domain:
            continue
        if inputs.scope.commune and commune not in (inputs.scope.commune, ""):
            continue
        counted = indicator.startswith("status:")
        out.append({
            "domain": domain, "domain_name": DOMAIN_NAMES.get(domain, domain),
            "dataset": dataset, "dataset_name": names.dataset(dataset),
            "commune": commune, "commune_name": names.unit(commune) if commune else "Toàn huyện",
            "unit": unit, "unit_name": names.unit(unit) if unit else "",
            "indicator": indicator, "indicator_name": INDICATOR_NAMES.get(indicator, indicator),
            "records": n, "total": round(total, 2),
            "mean": round(total / n, 2) if n and not counted else None,
            "latest_day": latest_day.isoformat(),
            "latest_value": round(latest_total / latest_n, 2) if latest_n else None,
        })
    return out


def allowance_figures(inputs: ReportInputs, names: Names) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [{"unit": a.unit, "unit_name": names.unit(a.unit), "kind": a.kind,
              "kind_name": ALLOWANCE_KINDS.get(a.kind, a.kind), "person_months": a.person_months,
              "amount": a.amount} for a in inputs.allowances
             if inputs.scope.unit is None or a.unit == inputs.scope.unit]
    by_unit: dict[str, int] = defaultdict(int)
    for line in lines:
        by_unit[line["unit"]] += line["amount"]
    return {"basis": inputs.allowance_basis, "lines": lines,
            "by_unit": [{"unit": u, "unit_name": names.unit(u), "amount": a}
                        for u, a in sorted(by_unit.items())],
            "total": sum(line["amount"] for line in lines),
            "person_months": sum(line["person_months"] for line in lines)}


_IN_PERIOD = {Kind.MONTHLY: ("Trong tháng", "tháng trước", "cùng kỳ năm trước"),
              Kind.QUARTERLY: ("Trong quý", "quý trước", "cùng kỳ năm trước"),
              Kind.SIX_MONTHLY: ("Trong 6 tháng đầu năm", "cùng kỳ năm trước", "cùng kỳ năm trước"),
              Kind.ANNUAL: ("Trong năm", "năm trước", "năm trước")}


def summary(period: Period, incidents: dict[str, Any], comparison: dict[str, Any],
            sharing: dict[str, Any]) -> str:
    """The opening paragraph: what happened, against the earlier periods where data exists."""
    lead, before_name, year_name = _IN_PERIOD.get(period.kind, ("Trong kỳ báo cáo", "kỳ trước",
                                                                "cùng kỳ năm trước"))
    t = incidents["totals"]
    text = f"{lead}, Trung tâm tiếp nhận {number(t['received'])} phản ánh"
    prev = comparison.get("previous")
    moved = change(t["received"], prev["received"] if prev else None)
    if moved:
        text += f", {moved} so với {before_name}"
    year = comparison.get("last_year")
    moved_year = change(t["received"], year["received"] if year else None)
    if moved_year and period.kind not in (Kind.ANNUAL,):
        text += f" ({moved_year} so với {year_name})"
    text += f"; đã xử lý xong {number(t['resolved'])} phản ánh"
    rate = incidents["on_time"]["resolve_rate"]
    if rate is not None:
        text += f", đúng hạn {percent(rate)}"
    text += f"; {number(t['rejected'])} phản ánh không xác thực bị từ chối"
    if t["overdue_open"]:
        text += f"; còn {number(t['overdue_open'])} phản ánh quá hạn chưa xử lý xong"
    text += (f". Các đơn vị đã gửi {number(sharing['totals']['accepted'])} bản ghi dữ liệu hợp lệ, "
             f"{number(sharing['totals']['rejected'])} bản ghi bị từ chối.")
    return nfc(text)


def build_figures(inputs: ReportInputs, names: Names) -> dict[str, Any]:
    p = inputs.period
    incidents = incident_figures(inputs, names)
    comparison: dict[str, Any] = {}
    for key, other, totals in (("previous", inputs.previous, inputs.previous_totals),
                               ("last_year", inputs.last_year, inputs.last_year_totals)):
        # Only where data exists: an empty earlier period is no comparison.
        if other is not None and totals and any(totals.values()):
            comparison[key] = {"period": other.key, "label": other.label,
                               **{m: totals.get(m, 0) for m in ("received", "resolved", "rejected",
                                                                "resolve_on_time", "resolve_late")}}
        else:
            comparison[key] = None
    sharing = data_sharing_figures(inputs, names)
    return {
        "contract": CONTRACT,
        "kind": p.kind.value,
        "period": {"key": p.key, "start": p.start.isoformat(), "end": p.end.isoformat(),
                   "label": p.label},
        "scope": inputs.scope.to_json(),
        "summary": summary(p, incidents, comparison, sharing),
        "incidents": incidents,
        "comparison": comparison,
        "data_sharing": sharing,
        "indicators": indicator_figures(inputs, names),
        "allowances": allowance_figures(inputs, names),
    }


def is_empty(figures: dict[str, Any]) -> bool:
    """Nothing at all to report (an ad-hoc request over such a period is refused)."""
    return (not any(figures["incidents"]["totals"].values())
            and not figures["data_sharing"]["pairs"] and not figures["indicators"])
