"""Small hand-checked rollups shared by the reporting unit tests."""

from __future__ import annotations

from datetime import date

from reporting.domain.figures import (
    Names,
    OverdueItem,
    ReportInputs,
    Scope,
    build_figures,
    group_rows,
)
from reporting.domain.histogram import bucket_of
from reporting.domain.periods import Kind, PeriodRules, period, previous

RULES = PeriodRules()
NOV = period(Kind.MONTHLY, 2026, 11, RULES)
D = date(2026, 11, 2)
NAMES = Names({"phong-tn-mt": "Phòng Tài nguyên và Môi trường", "phong-kt-ht": "Phòng Kinh tế và Hạ tầng",
               "xa-loc-an": "Xã Lộc An", "ioc-loc-ninh": "Trung tâm IOC huyện Lộc Ninh"},
              {"phan-anh-hien-truong": ("Phản ánh hiện trường", "field-report"),
               "chi-so-y-te": ("Chỉ số y tế", "health")})


def row(measure: str, n: int, unit: str = "", commune: str = "xa-loc-an",
        category: str = "moi-truong", source: str = "phan-anh-hien-truong", day: date = D
        ) -> tuple[date, str, str, str, str, str, int]:
    return (day, measure, unit, commune, category, source, n)


ROWS = [
    row("received", 10), row("received", 2, category="giao-thong"), row("rejected", 1),
    row("verified", 11), row("assigned", 8, "phong-tn-mt"), row("assigned", 3, "phong-kt-ht"),
    row("acknowledged", 8, "phong-tn-mt"), row("ack_on_time", 6, "phong-tn-mt"),
    row("ack_late", 2, "phong-tn-mt"),
    row("resolved", 5, "phong-tn-mt"), row("resolve_on_time", 4, "phong-tn-mt"),
    row("resolve_late", 1, "phong-tn-mt"), row("resolved", 2, "phong-kt-ht"),
    row("resolve_on_time", 2, "phong-kt-ht"),
    row("returned", 1, "phong-kt-ht"), row("transferred", 1, "phong-tn-mt"),
    row("escalated", 2, "phong-tn-mt"),
    row("survey_responses", 3, "phong-tn-mt"), row("survey_score", 13, "phong-tn-mt"),
    row(f"resolve_h{bucket_of(1.5)}", 4, "phong-tn-mt", "", source=""),
    row(f"resolve_h{bucket_of(5)}", 3, "phong-tn-mt", "", source=""),
    row("state:resolved", 7, "phong-tn-mt"), row("state:assigned", 4, "phong-kt-ht"),
    row("state:rejected_not_genuine", 1),
]


def figures(**kw: object) -> dict[str, object]:
    scope = kw.get("scope", Scope())
    base = dict(period=NOV, scope=scope, incident_rows=group_rows(ROWS, scope),  # type: ignore[arg-type]
                previous=previous(NOV, RULES),
                previous_totals={"received": 8, "resolved": 5},
                overdue=[OverdueItem("inc-1", "phong-kt-ht", "giao-thong", "xa-loc-an",
                                     date(2026, 11, 10), 3)], overdue_count=1,
                quality=[("xa-loc-an", "phan-anh-hien-truong", 1200)],
                reasons=[("xa-loc-an", "phan-anh-hien-truong", "missing", 30),
                         ("xa-loc-an", "phan-anh-hien-truong", "wrong_type", 10)],
                freshness=[("xa-loc-an", "phan-anh-hien-truong", 2, 1)],
                rejections=[("xa-loc-an", "phan-anh-hien-truong", "missing", 3),
                            ("unknown", "", "unauthenticated", 2)],
                expected_pairs=[("xa-loc-an", "phan-anh-hien-truong"),
                                ("trung-tam-y-te", "chi-so-y-te")],
                connected_pairs={("xa-loc-an", "phan-anh-hien-truong")},
                indicators=[("chi-so-y-te", "xa-loc-an", "", "ca-sot-xuat-huyet", 4, 40.0,
                             date(2026, 11, 9), 12.0, 1)])
    base.update(kw)
    return build_figures(ReportInputs(**base), NAMES)  # type: ignore[arg-type]


