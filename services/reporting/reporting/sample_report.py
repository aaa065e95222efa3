"""A sample monthly report from synthetic events, without a database (README picture)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry

from reporting.config import load_config
from reporting.domain import incidents as inc
from reporting.domain import indicators as ind
from reporting.domain.allowances import allowances
from reporting.domain.document import build_document
from reporting.domain.figures import ReportInputs, Scope, build_figures, group_rows
from reporting.domain.periods import Kind, period, previous
from reporting.render.office import render_docx, render_xlsx
from reporting.render.pdf import render_pdf
from reporting.reports import expected_publishers, names_of
from reporting.sample import incident_events, indicator_events, quality_events


def write_sample(out: Path, incidents: int = 400) -> list[Path]:
    registry = load_registry(REPO_ROOT / "config" / "registry.yaml", None)
    config = load_config(REPO_ROOT / "config" / "reporting.yaml", registry)
    calendar, rules = config.calendar(), config.rules
    p = period(Kind.MONTHLY, 2026, 11, rules)
    before = previous(p, rules)
    events = list(incident_events(incidents, datetime(2026, 9, 15, tzinfo=UTC),
                                  datetime(2026, 11, 14, 16, tzinfo=UTC)))
    by_incident: dict[str, list[inc.Transition]] = defaultdict(list)
    for _, raw in events:
        data = orjson.loads(raw)
        by_incident[data["payload"]["incident_id"]].append(
            inc.transition_from_event(data["event_id"], data["type"], data["payload"]))
    rows: Counter[inc.RollupKey] = Counter()
    for incident_id, ts in by_incident.items():
        rows.update(inc.fold(incident_id, ts, calendar).contribution)

    def totals(start: date, end: date) -> dict[str, int]:
        out: Counter[str] = Counter()
        for k, n in rows.items():
            if start <= k[0] <= end:
                out[k[1]] += n
        return dict(out)

    trend: Counter[tuple[date, str]] = Counter()
    for k, n in rows.items():
        if k[1] in ("received", "resolved"):
            trend[(k[0].replace(day=1), k[1])] += n
    quality = [orjson.loads(q)["payload"] for q in quality_events(p.start, p.days)]
    q_accepted: Counter[tuple[str, str]] = Counter()
    q_reasons: Counter[tuple[str, str, str]] = Counter()
    for q in quality:
        q_accepted[(q["unit"], q["dataset"])] += q["accepted"]
        for code, n in q["rejected"].items():
            q_reasons[(q["unit"], q["dataset"], code)] += n
    indicator: dict[tuple[str, str, str, str], list[tuple[date, float]]] = defaultdict(list)
    for raw in indicator_events(p.start, p.days):
        payload = orjson.loads(raw)["payload"]
        for key, (_, total) in ind.contribution_of(payload["dataset"], payload["record"]).items():
            indicator[key[1:]].append((key[0], total))
    inputs = ReportInputs(
        period=p, scope=Scope(),
        incident_rows=group_rows([(*k, n) for k, n in rows.items() if p.start <= k[0] <= p.end]),
        previous=before, previous_totals=totals(before.start, before.end),
        trend=[(m, measure, n) for (m, measure), n in sorted(trend.items())],
        quality=[(u, d, n) for (u, d), n in q_accepted.items()],
        reasons=[(u, d, c, n) for (u, d, c), n in q_reasons.items()],
        freshness=[("phong-gd-dt", "thong-ke-truong-hoc", 1, 1)],
        expected_pairs=expected_publishers(registry), connected_pairs=set(q_accepted),
        indicators=[(k[0], k[1], k[2], k[3], len(v), sum(x for _, x in v), max(v)[0],
                     max(v)[1], 1) for k, v in indicator.items()],
        allowances=allowances(config.staff, config.rates, p.start, p.end),
        allowance_basis=config.allowance_basis)
    figures = build_figures(inputs, names_of(registry))
    body, s = config.issuing_body, config.signer
    doc = build_document(figures, parent_body=body.parent, issuing_body=body.name, place=body.place,
                         number_suffix=body.number_suffix, subject=body.subject,
                         recipients=list(config.recipients), signer=(s.authority, s.title, s.name),
                         number_text="07/" + body.number_suffix, issued_on=date(2026, 11, 20),
                         today=date(2026, 11, 20))
    out.mkdir(parents=True, exist_ok=True)
    files = {"bao-cao-mau.pdf": render_pdf(doc), "bao-cao-mau-trang-1.png": render_pdf(doc, image=True),
             "bao-cao-mau.docx": render_docx(doc), "bao-cao-mau.xlsx": render_xlsx(doc),
             "bao-cao-mau.json": orjson.dumps(figures, option=orjson.OPT_INDENT_2)}
    paths = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths
