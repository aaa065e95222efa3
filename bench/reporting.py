"""BENCH reporting: a monthly report over a year of a scaled-up district, and rollup intake.

Report generation: a year of rollups for 1,000,000 incidents (six or two transitions
each) and 5,000,000 data records are seeded with SQL (`generate_series`): the raw
events first, in a table of their own, then the rollup rows aggregated from them, so
both hold the same facts. The monthly report's figures (`ReportService.figures`, which
reads rollups only) are timed against a straightforward SQL aggregation of the same
figures over the raw tables, in the same run: `scan_ratio = raw time / rollup time`.
Rendering (PDF, DOCX, XLSX) is timed on its own.

Rollup intake: routing-shaped incident events preloaded on the incident-events topic,
consumed by `python -m reporting serve`; rate from the consumer group's commits,
against the raw aiokafka reference loop over the same messages (`ratio=`), the
service's peak RSS and its CPU per event (`cpu_us`: user + system time of the service
process from its first health answer to its last commit, over the events; median of
the runs).

`BENCH_REPORTING_SCALE` (default 1) scales the seeded incidents and records (0.05 = 1/20).
`BENCH_REPORTING_PHASES` (default `report,intake`) runs only the phases named.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from datetime import UTC, datetime
from typing import Any

from ioc_shared.contracts import Envelope
from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.contracts.topics import ROUTING_EVENTS
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.kafka import declare_topics, make_admin
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from ioc_shared.testing import database_url, unique
from reporting.bootstrap import MIGRATIONS
from reporting.config import load_config
from reporting.domain.histogram import EDGES
from reporting.domain.periods import Kind, period
from reporting.render.office import render_docx, render_xlsx
from reporting.render.pdf import render_pdf
from reporting.reports import ReportService, Topics
from reporting.repository import INCIDENT_MEASURES, ReportingRepository
from reporting.sample import CATEGORY_UNIT, COMMUNES, incident_events

from bench.cpu import CpuMeter
from bench.harness import BenchResult, median, preload
from bench.service import BenchService

INCIDENTS = 1_000_000
RECORDS = 5_000_000
TIMINGS = 5
NOW = datetime(2026, 11, 20, 3, tzinfo=UTC)

_CATS = list(CATEGORY_UNIT)
_UNITS = [CATEGORY_UNIT[c] for c in _CATS]
_PAIRS = [("tt-loc-ninh", "phan-anh-hien-truong"), ("xa-loc-an", "phan-anh-hien-truong"),
          ("trung-tam-y-te", "chi-so-y-te"), ("phong-gd-dt", "thong-ke-truong-hoc"),
          ("phong-tc-kh", "chi-tieu-kt-xh"), ("xa-loc-an", "ho-so-dich-vu-cong")]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]"


def _pivot_sql(s: str) -> str:
    """The seeded per-measure rows into `incident_counts` (measures as columns)."""
    columns = [m.replace(":", "_") for m in INCIDENT_MEASURES]
    sums = ", ".join(f"coalesce(sum(n) FILTER (WHERE measure = '{m}'), 0)"
                     for m in INCIDENT_MEASURES)
    return (f"INSERT INTO {s}.incident_counts (day, unit, commune, category, source, "
            f"{', '.join(columns)}) SELECT day, unit, commune, category, source, {sums} "
            f"FROM {s}.seed_daily GROUP BY 1, 2, 3, 4, 5")


def seed_sql(s: str, incidents: int, records: int) -> list[str]:
    edges = "ARRAY[" + ",".join(str(e) for e in EDGES) + "]::float8[]"
    local = "(at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date"
    return [
        f"""CREATE TABLE {s}.raw_events (incident_id bigint, type text, at timestamptz, unit text,
              commune text, category text, source text, ack_h float8, resolve_h float8)""",
        f"""INSERT INTO {s}.raw_events
            WITH inc AS (
              SELECT i, timestamptz '2025-11-20 00:00+07'
                          + (i::float8 / {incidents}) * interval '365 days' AS t0,
                     ({_array(_CATS)})[1 + i % 9] AS category, ({_array(_UNITS)})[1 + i % 9] AS unit,
                     ({_array(COMMUNES)})[1 + (i / 9) % 16] AS commune,
                     (ARRAY['phan-anh-hien-truong', 'phan-anh-hien-truong', 'canh-bao-y-te'])
                       [1 + (i / 144) % 3] AS source,
                     ((i * 7919) % 1000) / 100.0 AS ack_h, ((i * 104729) % 10000) / 100.0 AS resolve_h,
                     i % 17 = 0 AS rejected
              FROM generate_series(0::bigint, {incidents - 1}) AS i)
            SELECT i, e.type, t0 + e.after, CASE WHEN e.with_unit THEN unit ELSE '' END, commune,
                   category, source, ack_h, resolve_h
            FROM inc, LATERAL (VALUES
              ('received', interval '0', false, true, true),
              ('rejected', interval '1 hour', false, true, false),
              ('verified', interval '1 hour', false, false, true),
              ('assigned', interval '2 hours', true, false, true),
              ('acknowledged', interval '2 hours' + ack_h * interval '1 hour', true, false, true),
              ('resolved', interval '2 hours' + resolve_h * interval '1 hour', true, false, true),
              ('closed', interval '3 hours' + resolve_h * interval '1 hour', true, false, true))
              AS e(type, after, with_unit, if_rejected, if_genuine)
            WHERE (rejected AND e.if_rejected) OR (NOT rejected AND e.if_genuine)""",
        f"CREATE INDEX ON {s}.raw_events (at)",
        f"""CREATE TABLE {s}.seed_daily (day date, measure text, unit text, commune text,
              category text, source text, n bigint)""",
        # Rollups from the same facts: flows, on-time, duration buckets, current states.
        f"""INSERT INTO {s}.seed_daily
            SELECT {local}, type, unit, commune, category, source, count(*)
            FROM {s}.raw_events GROUP BY 1, 2, 3, 4, 5, 6""",
        f"""INSERT INTO {s}.seed_daily
            SELECT {local}, CASE WHEN type = 'acknowledged' THEN
                     CASE WHEN ack_h <= 4 THEN 'ack_on_time' ELSE 'ack_late' END
                   ELSE CASE WHEN resolve_h <= 40 THEN 'resolve_on_time' ELSE 'resolve_late' END END,
                   unit, commune, category, source, count(*)
            FROM {s}.raw_events WHERE type IN ('acknowledged', 'resolved') GROUP BY 1, 2, 3, 4, 5, 6""",
        f"""INSERT INTO {s}.seed_daily
            SELECT {local}, CASE WHEN type = 'acknowledged' THEN 'ack_h' || width_bucket(ack_h, {edges})
                   ELSE 'resolve_h' || width_bucket(resolve_h, {edges}) END,
                   unit, '', category, '', count(*)
            FROM {s}.raw_events WHERE type IN ('acknowledged', 'resolved') GROUP BY 1, 2, 3, 4, 5, 6""",
        f"""INSERT INTO {s}.seed_daily
            SELECT {local}, CASE WHEN i % 17 = 0 THEN 'state:rejected_not_genuine' ELSE 'state:closed' END,
                   CASE WHEN i % 17 = 0 THEN '' ELSE ({_array(_UNITS)})[1 + i % 9] END,
                   commune, category, source, count(*)
            FROM (SELECT incident_id AS i, at, commune, category, source FROM {s}.raw_events
                  WHERE type = 'received') r GROUP BY 1, 2, 3, 4, 5, 6""",
        f"""INSERT INTO {s}.incident_monthly
            SELECT date_trunc('month', day)::date, measure, sum(n) FROM {s}.seed_daily
            WHERE measure IN ('received', 'resolved') GROUP BY 1, 2""",
        _pivot_sql(s), f"DROP TABLE {s}.seed_daily",
        f"""CREATE TABLE {s}.raw_records (day date, unit text, dataset text, outcome text, code text)""",
        f"""INSERT INTO {s}.raw_records
            SELECT date '2025-11-20' + (i::bigint * 365 / {records})::int,
                   (ARRAY[{",".join(f"'{u}'" for u, _ in _PAIRS)}])[1 + i % 6],
                   (ARRAY[{",".join(f"'{d}'" for _, d in _PAIRS)}])[1 + i % 6],
                   CASE WHEN i % 50 = 0 THEN 'rejected' ELSE 'accepted' END,
                   CASE WHEN i % 100 = 0 THEN 'missing' WHEN i % 50 = 0 THEN 'wrong_type' END
            FROM generate_series(0::bigint, {records - 1}) AS i""",
        f"CREATE INDEX ON {s}.raw_records (day)",
        f"""INSERT INTO {s}.quality_daily (day, unit, dataset, accepted, rejected, as_of)
            SELECT day, unit, dataset, count(*) FILTER (WHERE outcome = 'accepted'),
                   coalesce(jsonb_object_agg(code, n) FILTER (WHERE code IS NOT NULL), '{{}}'), now()
            FROM (SELECT day, unit, dataset, outcome, code, count(*) OVER (
                    PARTITION BY day, unit, dataset, code) AS n FROM {s}.raw_records) x
            GROUP BY 1, 2, 3""",
        f"ANALYZE {s}.raw_events", f"ANALYZE {s}.raw_records", f"ANALYZE {s}.incident_counts",
    ]


def raw_queries(s: str, start: str, end: str, prev: tuple[str, str], year: tuple[str, str],
                trend_from: str) -> list[str]:
    """The same monthly figures computed straight from the raw tables."""
    local = "(at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date"

    def within(column: str) -> str:
        return (f"{column} >= ('{start}'::date::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh') AND "
                f"{column} < (('{end}'::date + 1)::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh')")

    where = within("at")
    return [
        f"""SELECT type, unit, commune, category, source, count(*),
                   count(*) FILTER (WHERE type = 'acknowledged' AND ack_h <= 4),
                   count(*) FILTER (WHERE type = 'resolved' AND resolve_h <= 40)
            FROM {s}.raw_events WHERE {where} GROUP BY 1, 2, 3, 4, 5""",
        f"""SELECT unit, percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_h),
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY resolve_h)
            FROM {s}.raw_events WHERE {where} AND type = 'resolved' GROUP BY ROLLUP (unit)""",
        f"""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_h),
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_h)
            FROM {s}.raw_events WHERE {where} AND type = 'acknowledged'""",
        f"""SELECT last_type, count(*) FROM (
              SELECT DISTINCT ON (e.incident_id) e.type AS last_type
              FROM {s}.raw_events e JOIN {s}.raw_events r ON r.incident_id = e.incident_id
              WHERE r.type = 'received' AND {within("r.at")}
              ORDER BY e.incident_id, e.at DESC) x GROUP BY 1""",
        *(f"""SELECT type, count(*) FROM {s}.raw_events
              WHERE {local} BETWEEN '{a}' AND '{b}' GROUP BY 1""" for a, b in (prev, year)),
        f"""SELECT date_trunc('month', {local}), type, count(*) FROM {s}.raw_events
            WHERE {local} BETWEEN '{trend_from}' AND '{end}' AND type IN ('received', 'resolved')
            GROUP BY 1, 2""",
        f"""SELECT unit, dataset, outcome, code, count(*) FROM {s}.raw_records
            WHERE day BETWEEN '{start}' AND '{end}' GROUP BY 1, 2, 3, 4""",
    ]


async def report_phase(scale: float) -> dict[str, Any]:
    incidents, records = max(1000, int(INCIDENTS * scale)), max(5000, int(RECORDS * scale))
    schema = unique("bench_reporting_seed")
    pool = await create_pool(database_url(), max_size=3)
    try:
        await migrate(pool, schema, MIGRATIONS)
        started = time.perf_counter()
        async with pool.acquire() as conn:
            for sql in seed_sql(schema, incidents, records):
                await conn.execute(sql)
        seed_s = time.perf_counter() - started
        registry = load_registry(REPO_ROOT / "config" / "registry.yaml", None)
        config = load_config(REPO_ROOT / "config" / "reporting.yaml", registry)
        service = ReportService(pool, ReportingRepository(schema), registry, config,
                                config.calendar(), Topics("", "", "", ""), REPO_ROOT / ".run",
                                render_files=False, clock=lambda: NOW)
        p = period(Kind.MONTHLY, 2026, 11, config.rules)
        figures_s, render_s, raw_s = [], [], []
        figures: dict[str, Any] = {}
        queries = raw_queries(schema, p.start.isoformat(), p.end.isoformat(),
                              ("2025-09-15", "2025-10-14"), ("2025-10-15", "2025-11-14"),
                              "2025-12-01")
        for _ in range(TIMINGS):
            t = time.perf_counter()
            figures = await service.figures(p)
            figures_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            async with pool.acquire() as conn:
                for q in queries:
                    await conn.fetch(q)
            raw_s.append(time.perf_counter() - t)
        doc = service.document(figures)
        for _ in range(3):
            t = time.perf_counter()
            render_pdf(doc)
            render_docx(doc)
            render_xlsx(doc)
            render_s.append(time.perf_counter() - t)
        rollup_rows = await pool.fetchval(f"SELECT count(*) FROM {schema}.incident_counts")
        raw_rows = await pool.fetchval(f"SELECT count(*) FROM {schema}.raw_events")
        raw_received = await pool.fetchval(
            f"""SELECT count(*) FROM {schema}.raw_events WHERE type = 'received'
                AND (at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date BETWEEN $1 AND $2""", p.start, p.end)
        assert figures["incidents"]["totals"]["received"] == raw_received, "figures differ"
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
    return {"scale": scale, "incidents": incidents, "records": records, "seed_s": round(seed_s, 1),
            "raw_event_rows": raw_rows, "rollup_rows": rollup_rows,
            "month_received": raw_received,
            "figures_ms": round(median(figures_s) * 1000, 1),
            "render_ms": round(median(render_s) * 1000), "raw_sql_ms": round(median(raw_s) * 1000, 1),
            "scan_ratio": round(median(raw_s) / median(figures_s), 1)}


def intake_messages(n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    start, end = datetime(2026, 10, 15, tzinfo=UTC), datetime(2026, 11, 14, tzinfo=UTC)
    out = []
    for key, value in incident_events(n, start, end, seed=17, prefix="bench"):
        out.append((key.encode(), value, [(H_PRODUCER, b"routing")]))   # as routing's relay
        if len(out) >= n:
            break
    return out


async def committed_rate(bootstrap: str, group: str, expected: int,
                         timeout: float = 600.0) -> float:
    """Rate of the group's commits from its first commit to the last of `expected`."""

    admin = make_admin(bootstrap, client_id="bench-reporting")
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first: tuple[float, int] | None = None
        while loop.time() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            done = sum(max(o.offset, 0) for o in offsets.values())
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= expected:
                assert first is not None
                return (done - first[1]) / max(now - first[0], 1e-3)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"group {group} committed only {done} of {expected}")
    finally:
        await admin.close()


async def run(*, bootstrap: str, messages: list, repeats: int, reference: Any) -> BenchResult:
    scale = float(os.environ.get("BENCH_REPORTING_SCALE", "1"))
    phases = {p.strip() for p in os.environ.get("BENCH_REPORTING_PHASES", "report,intake").split(",")}
    figures = await report_phase(scale) if "report" in phases else {}
    if "intake" not in phases:
        return BenchResult("reporting", figures)
    events = intake_messages(len(messages))
    rates, ratios, rss, cpu = [], [], [], []
    for _ in range(repeats):
        [ref_rate] = await reference(bootstrap, events, 1, Envelope)
        svc = BenchService("reporting", bootstrap, extra_env={
            "REPORTING_TIMERS_ENABLED": "false", "REPORTING_RENDER_FILES": "false"})
        source = svc.topic(ROUTING_EVENTS.name)
        await declare_topics(bootstrap, [dataclasses.replace(ROUTING_EVENTS, name=source)])
        await preload(bootstrap, source, events)
        async with svc:
            meter = CpuMeter(svc.process.pid)
            before = meter.snapshot()
            rate = await committed_rate(bootstrap, svc.env["REPORTING_CONSUMER_GROUP"] + "-rollups",
                                        len(events))
            cpu.append(meter.per_message_us(before, meter.snapshot(), len(events))["service"])
            rss.append(svc.process.peak_rss_mb())
        rates.append(rate)
        ratios.append(rate / ref_rate)
    return BenchResult("reporting", {
        **figures, "events": len(events), "repeats": repeats,
        "events_per_s": round(median(rates)), "ratio": median(ratios),
        "ratio_min": min(ratios), "ratio_max": max(ratios), "peak_rss_mb": round(max(rss)),
        "cpu_us": f"{median(cpu):.1f}"})
