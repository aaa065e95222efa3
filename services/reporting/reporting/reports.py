"""Generating, storing and publishing reports (reads rollups only).

`ReportService.generate` gathers the period's rollups, builds the figures and the
document, renders PDF, DOCX, XLSX and JSON under `output_dir`, and in one transaction
stores the version's metadata and puts `report.published` in the outbox.

Files are written under temporary names and moved into place only once that transaction
committed (`ReportService.transaction`); a rolled-back version leaves no file behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from ioc_shared.calendar_vn import WorkingCalendar, working_days_between
from ioc_shared.contracts.envelope import deterministic_event_id
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import enqueue_many
from ioc_shared.registry import Action, Registry
from ioc_shared.serialized import SerializedEnvelope, envelope_headers, serialize_envelope
from prometheus_client import CollectorRegistry, Histogram

from reporting.config import ReportingConfig
from reporting.domain import periods as pd
from reporting.domain.allowances import allowances
from reporting.domain.document import Document, build_document
from reporting.domain.figures import Names, OverdueItem, ReportInputs, Scope, build_figures
from reporting.domain.incidents import LOCAL
from reporting.domain.lifecycle import Status, document_number
from reporting.domain.province_sync import province_sync_figures
from reporting.render.office import render_docx, render_xlsx
from reporting.render.pdf import render_pdf
from reporting.repository import (
    ReportingRepository,
    ScopedTrendRepository,
    SyncStatusRepository,
)

log = get_logger(__name__)

PUBLISHED = "report.published"
DUE_SOON = "report.due-soon"
OVERDUE = "report.overdue"


def outgoing(topic: str, event_type: str, subject: str, payload: dict[str, Any],
             event_id: uuid.UUID, source_unit: str, at: datetime
             ) -> tuple[str, SerializedEnvelope, None, dict[str, str]]:
    """An outbox message: the envelope serialized once, with its id, type and trace headers."""
    env = serialize_envelope(event_id=event_id, type=event_type, source_unit=source_unit,
                             subject=subject, payload=payload, cause=None, at=at)
    return topic, env, None, envelope_headers(env)


@dataclass(frozen=True, slots=True)
class Topics:
    commands: str
    results: str
    published: str
    notifications: str
    unauthenticated: str = ""


def end_of_day_utc(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), LOCAL).astimezone(UTC)


def names_of(registry: Registry) -> Names:
    return Names({u.id: u.name for u in registry.units.values()},
                 {d.id: (d.name, d.domain) for d in registry.datasets.values()})


def expected_publishers(registry: Registry) -> list[tuple[str, str]]:
    pairs = {(d.owner, d.id) for d in registry.datasets.values()}
    pairs |= {(g.unit, g.dataset) for g in registry.grants if Action.PUBLISH in g.actions}
    return sorted(pairs)


class ReportService:
    def __init__(self, pool: asyncpg.Pool, repo: ReportingRepository, registry: Registry,
                 config: ReportingConfig, calendar: WorkingCalendar, topics: Topics,
                 output_dir: Path, *, render_files: bool = True,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 metrics: CollectorRegistry | None = None) -> None:
        self.pool = pool
        # The service's /metrics registry (a private one if not given).
        self.metrics = metrics if metrics is not None else CollectorRegistry()
        self.generation_seconds = Histogram(
            "reporting_report_generation_seconds",
            "Time to build one report version: figures, document, files, outbox",
            ["kind"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.metrics)
        self.repo = repo
        self.registry = registry
        self.config = config
        self.calendar = calendar
        self.topics = topics
        self.output_dir = output_dir
        self.render_files = render_files
        self.clock = clock
        self.names = names_of(registry)
        self.sync_repo = SyncStatusRepository(repo.s)
        self.trend_repo = ScopedTrendRepository(repo.s)
        self.shared_with_province = sorted(
            d.id for d in registry.datasets.values() if d.shared_with_province)
        # Files written in a transaction not yet committed: id(connection) -> (temporary, final).
        self._staged: dict[int, list[tuple[Path, Path]]] = {}

    @contextlib.asynccontextmanager
    async def transaction(self, conn: asyncpg.Connection) -> AsyncIterator[None]:
        """`conn.transaction()` whose report files appear only after the commit: on a
        rollback (or a failed commit) the temporary files are removed."""
        staged: list[tuple[Path, Path]] = []
        self._staged[id(conn)] = staged
        try:
            async with conn.transaction():
                yield
        except BaseException:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            for folder in {final.parent for _, final in staged}:
                with contextlib.suppress(OSError):
                    folder.rmdir()       # only when empty: a version of its own, rolled back
            raise
        finally:
            self._staged.pop(id(conn), None)
        for temporary, final in staged:
            os.replace(temporary, final)

    @property
    def ioc_unit(self) -> str:
        return self.registry.centre.unit

    # --- figures ---------------------------------------------------------------------
    async def inputs(self, conn: asyncpg.Connection, period: pd.Period, scope: Scope) -> ReportInputs:
        repo, rules = self.repo, self.config.rules
        prev = pd.previous(period, rules)
        last_year = pd.same_period_last_year(period, rules)
        now = self.clock()
        cut = min(now, end_of_day_utc(period.end))
        overdue_rows = await repo.overdue_incidents(conn, cut)
        overdue = []
        for r in overdue_rows:
            due_day = r["resolve_due_at"].astimezone(LOCAL).date()
            overdue.append(OverdueItem(
                r["incident_id"], r["unit"] or "", r["category"], r["commune"], due_day,
                working_days_between(self.calendar, due_day, cut.astimezone(LOCAL).date())))
        trend_start = date(period.end.year - 1, period.end.month, 1) + timedelta(days=31)
        trend_start = trend_start.replace(day=1)
        return ReportInputs(
            period=period, scope=scope,
            incident_rows=[tuple(r) for r in await repo.incident_rows(
                conn, period.start, period.end, unit=scope.unit, commune=scope.commune,
                category=scope.category)],
            previous=prev, previous_totals=await repo.incident_totals(conn, prev.start, prev.end),
            last_year=last_year,
            last_year_totals=await repo.incident_totals(conn, last_year.start, last_year.end),
            trend=await self.trend(conn, trend_start, period.end, scope),
            overdue=overdue, overdue_count=await repo.count_overdue(conn, cut),
            quality=[(r["unit"], r["dataset"], r["accepted"])
                     for r in await repo.quality_rows(conn, period.start, period.end)],
            reasons=[(r["unit"], r["dataset"], r["code"], r["n"])
                     for r in await repo.quality_reasons(conn, period.start, period.end)],
            freshness=[(r["unit"], r["dataset"], r["late"], r["recovered"])
                       for r in await repo.freshness_rows(conn, period.start, period.end)],
            rejections=[(r["unit"], r["dataset"], r["code"], r["n"])
                        for r in await repo.rejection_rows(conn, period.start, period.end)],
            expected_pairs=expected_publishers(self.registry),
            connected_pairs={(r["unit"], r["dataset"]) for r in await repo.quality_ever(conn, period.end)},
            province_sync=await self.province_sync(conn, period),
            indicators=[(r["dataset"], r["commune"], r["unit"], r["indicator"], r["n"], r["total"],
                         r["latest_day"], r["latest_total"], r["latest_n"])
                        for r in await repo.indicator_rows(conn, period.start, period.end)],
            allowances=allowances(self.config.staff, self.config.rates, period.start, period.end),
            allowance_basis=self.config.allowance_basis)

    async def trend(self, conn: asyncpg.Connection, start: date, end: date,
                    scope: Scope) -> list[tuple[date, str, int]]:
        """Received and resolved per month: the district's, or a thematic scope's own."""
        measures = ("received", "resolved")
        if scope.unit is None and scope.commune is None and scope.category is None:
            rows = await self.repo.incident_totals_by_month(conn, start, end, measures)
        else:
            rows = await self.trend_repo.incident_totals_by_month(
                conn, start, end, measures, unit=scope.unit, commune=scope.commune,
                category=scope.category)
        return [(r["month"], r["measure"], r["n"]) for r in rows]

    async def province_sync(self, conn: asyncpg.Connection,
                            period: pd.Period) -> list[dict[str, Any]] | None:
        rows = await self.sync_repo.period_rows(conn, period.start, period.end)
        failures = await self.sync_repo.period_failures(conn, period.start, period.end)
        return province_sync_figures(
            [(r["stream"], r["target"], r["sent"], r["parked"], r["last_synced_at"]) for r in rows],
            [(r["target"], r["reason"], r["n"]) for r in failures], self.shared_with_province,
            self.stream_name)

    def stream_name(self, stream: str) -> str:
        """A dataset's name; an event topic (e.g. the published reports) by its name."""
        if stream in self.names.datasets:
            return self.names.dataset(stream)
        return f"Luồng sự kiện {stream}"

    async def figures(self, period: pd.Period, scope: Scope | None = None) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                 readonly=True):
            return build_figures(await self.inputs(conn, period, scope or Scope()), self.names)

    def document(self, figures: dict[str, Any], *, number: str | None = None,
                 issued_on: date | None = None) -> Document:
        body = self.config.issuing_body
        s = self.config.signer
        return build_document(
            figures, parent_body=body.parent, issuing_body=body.name, place=body.place,
            number_suffix=body.number_suffix, subject=body.subject,
            recipients=list(self.config.recipients), signer=(s.authority, s.title, s.name),
            number_text=number, issued_on=issued_on, today=self.clock().astimezone(LOCAL).date())

    def write_files(self, conn: asyncpg.Connection, report_id: uuid.UUID, period_key: str,
                    version: int, figures: dict[str, Any], doc: Document,
                    tag: str) -> dict[str, str]:
        """Writes the files under temporary names, moved into place when `conn`'s
        transaction (`self.transaction`) commits; returns their final paths."""
        staged = self._staged.get(id(conn))
        if staged is None:
            raise RuntimeError("report files are written inside ReportService.transaction")
        folder = self.output_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", period_key) / f"v{version}"
        folder.mkdir(parents=True, exist_ok=True)
        base = f"bao-cao-{tag}"
        contents: dict[str, Callable[[], bytes]] = {
            "json": lambda: orjson.dumps(figures, option=orjson.OPT_INDENT_2)}
        if self.render_files:
            contents |= {"pdf": lambda: render_pdf(doc), "docx": lambda: render_docx(doc),
                         "xlsx": lambda: render_xlsx(doc)}
        files = {}
        for ext, content in contents.items():
            final = folder / f"{base}.{ext}"
            temporary = folder / f".{base}.{ext}.{report_id}.tmp"
            staged.append((temporary, final))
            temporary.write_bytes(content())
            files[ext] = str(final)
        return files

    def published(self, report: dict[str, Any], *,
                  at: datetime) -> tuple[str, SerializedEnvelope, None, dict[str, str]]:
        payload = {
            "report_id": str(report["report_id"]), "kind": report["kind"],
            "period": report["figures"]["period"], "version": report["version"],
            "status": report["status"], "number": report.get("number"),
            "issued_on": report["issued_on"].isoformat() if report.get("issued_on") else None,
            "files": {k: Path(v).name for k, v in report["files"].items()},
            "figures": report["figures"],
        }
        event_id = deterministic_event_id(PUBLISHED, report["report_id"], report["status"])
        return outgoing(self.topics.published, PUBLISHED, report["period_key"], payload, event_id,
                        self.ioc_unit, at)

    # --- versions --------------------------------------------------------------------
    async def generate(self, conn: asyncpg.Connection, period: pd.Period, scope: Scope,
                       *, actor: str, figures: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new draft version of `period`'s report, in the caller's transaction."""
        with self.generation_seconds.labels(period.kind.value).time():
            return await self._generate(conn, period, scope, actor=actor, figures=figures)

    async def _generate(self, conn: asyncpg.Connection, period: pd.Period, scope: Scope,
                        *, actor: str, figures: dict[str, Any] | None) -> dict[str, Any]:
        if figures is None:
            figures = build_figures(await self.inputs(conn, period, scope), self.names)
        key = period.key + (":" + ",".join(f"{k}={v}" for k, v in sorted(scope.to_json().items()))
                            if scope.to_json() else "")
        version = await self.repo.next_version(conn, key)
        report_id = uuid.uuid4()
        figures = {**figures, "report_id": str(report_id), "version": version,
                   "status": Status.DRAFT.value, "number": None}
        now = self.clock()
        doc = self.document(figures)
        files = self.write_files(conn, report_id, key, version, figures, doc, "du-thao")
        report = {"report_id": report_id, "kind": period.kind.value, "period_key": key,
                  "period_start": period.start, "period_end": period.end, "scope": scope.to_json(),
                  "version": version, "status": Status.DRAFT.value, "figures": figures,
                  "files": files, "number": None, "issued_on": None,
                  "history": [{"status": "draft", "by": actor, "at": now.isoformat()}]}
        await self.repo.insert_report(conn, report)
        await enqueue_many(conn, self.repo.s, [self.published(report, at=now)])
        log.info("report generated", period=key, version=version, by=actor)
        return report

    async def issue(self, conn: asyncpg.Connection, report: dict[str, Any], *, actor: str
                    ) -> dict[str, Any]:
        """Number and date the approved version, render its final files, publish it."""
        now = self.clock()
        today = now.astimezone(LOCAL).date()
        seq = await self.repo.allocate_number(conn, today.year, self.config.issuing_body.number_suffix)
        number = document_number(seq, self.config.issuing_body.number_suffix)
        figures = {**report["figures"], "status": Status.ISSUED.value, "number": number,
                   "issued_on": today.isoformat()}
        doc = self.document(figures, number=number, issued_on=today)
        files = self.write_files(conn, report["report_id"], report["period_key"],
                                 report["version"], figures, doc, "ban-hanh")
        await self.repo.update_report(conn, report["report_id"], status=Status.ISSUED.value,
                                      history_entry={"status": "issued", "by": actor,
                                                     "at": now.isoformat(), "number": number},
                                      number=number, number_seq=seq, issued_on=today, files=files,
                                      figures=figures)
        issued = {**report, "status": Status.ISSUED.value, "number": number, "issued_on": today,
                  "files": files, "figures": figures}
        await enqueue_many(conn, self.repo.s, [self.published(issued, at=now)])
        return issued
