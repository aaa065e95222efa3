"""Timers of the periodic reports, in PostgreSQL: draft, due-soon, overdue — once each.

For each configured kind, the current period and the one before are planned
(`report_timers`, one row per period and action, inserted if missing). Every instance
polls the due rows with `FOR UPDATE SKIP LOCKED`; firing, marking and the outbox
message share one transaction, so with two instances each timer fires once.

- draft: N working days before the due date, 08:00 local, a draft version is generated
  (unless the period already has a version);
- due-soon: M working days before, 08:00 local, `report.due-soon` to the IOC leader,
  unless the report was already issued (or the due date has passed);
- overdue: at the end of the due date, `report.overdue`, unless issued by then.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ioc_shared.calendar_vn import working_days_before
from ioc_shared.contracts.envelope import deterministic_event_id
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import enqueue_many
from opentelemetry import trace

from reporting.domain import periods as pd
from reporting.domain.figures import Scope
from reporting.domain.formatting import short_date
from reporting.domain.incidents import LOCAL
from reporting.reports import DUE_SOON, OVERDUE, ReportService, end_of_day_utc, outgoing

log = get_logger(__name__)
_tracer = trace.get_tracer("reporting")

DRAFT, SOON, LATE = "draft", "due-soon", "overdue"
_MORNING = time(8, 0)


# A period due longer ago than this is not planned (a first start does not nag about
# last year's reports).
PLAN_BACK = timedelta(days=35)


def plan(service: ReportService, today: date) -> list[tuple[str, str, datetime]]:
    cfg, rules, cal = service.config.periods, service.config.rules, service.calendar
    rows = []
    for kind in cfg.kinds:
        current = pd.containing(kind, today, rules)
        for p in (pd.previous(current, rules), current):
            due = pd.due_date(p, rules, cal)
            if due is None or due < today - PLAN_BACK:
                continue
            draft = working_days_before(cal, due, cfg.draft_working_days_before)
            soon = working_days_before(cal, due, cfg.due_soon_working_days_before)
            rows += [(p.key, DRAFT, datetime.combine(draft, _MORNING, LOCAL).astimezone(UTC)),
                     (p.key, SOON, datetime.combine(soon, _MORNING, LOCAL).astimezone(UTC)),
                     (p.key, LATE, end_of_day_utc(due))]
    return rows


def period_of(key: str, service: ReportService) -> pd.Period:
    kind_text, _, rest = key.partition(":")
    return pd.parse(rest, service.config.rules, pd.Kind(kind_text))


class Scheduler:
    def __init__(self, service: ReportService, *, instance: str, poll_s: float,
                 batch: int = 20) -> None:
        self.service = service
        self.instance = instance
        self.poll_s = poll_s
        self.batch = batch
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("report timers failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)

    async def tick(self) -> int:
        svc = self.service
        now = svc.clock()
        fired = 0
        async with svc.pool.acquire() as conn:
            await svc.repo.plan_timers(conn, plan(svc, now.astimezone(LOCAL).date()))
            async with svc.transaction(conn):
                for row in await svc.repo.due_timers(conn, now, self.batch):
                    # A report counts many incidents: each scheduled step is its own trace.
                    with _tracer.start_as_current_span(
                            f"reporting.scheduled {row['action']}",
                            attributes={"ioc.period": row["period_key"]}):
                        outcome = await self._fire(conn, row["period_key"], row["action"], now)
                    await svc.repo.mark_timer(conn, row["period_key"], row["action"],
                                              self.instance, outcome)
                    fired += 1
        return fired

    async def _fire(self, conn: Any, key: str, action: str, now: datetime) -> str:
        svc = self.service
        period = period_of(key, svc)
        statuses = await svc.repo.period_status(conn, key)
        issued = bool(statuses & {"issued", "sent"})
        due = pd.due_date(period, svc.config.rules, svc.calendar)
        assert due is not None
        if action == DRAFT:
            if statuses:
                return "skipped: a version exists"
            await svc.generate(conn, period, Scope(), actor=f"system:{self.instance}")
            return "generated"
        if issued:
            return "skipped: issued"
        if action == SOON and now >= end_of_day_utc(due):
            return "skipped: past due"
        leader = svc.config.leader
        event_type = DUE_SOON if action == SOON else OVERDUE
        text = (f"Báo cáo {period.label} phải gửi trước hạn {short_date(due)}."
                if action == SOON else
                f"Báo cáo {period.label} đã quá hạn {short_date(due)} mà chưa ban hành.")
        payload = {"period": key, "label": period.label, "due_on": due.isoformat(),
                   "unit": leader.unit, "contact_role": leader.role, "message": text,
                   "statuses": sorted(statuses)}
        await enqueue_many(conn, svc.repo.s, [outgoing(
            svc.topics.notifications, event_type, leader.unit, payload,
            deterministic_event_id(event_type, key), svc.ioc_unit, now)])
        log.info("report timer", action=action, period=key)
        return "sent"
