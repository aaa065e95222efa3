"""Which report timers are planned, and when (the scheduler's pure part)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from reporting.config import load_config
from reporting.scheduler import period_of, plan

CONFIG = load_config(REPO_ROOT / "config" / "reporting.yaml",
                     load_registry(REPO_ROOT / "config" / "registry.yaml", None))
SERVICE: Any = SimpleNamespace(config=CONFIG, calendar=CONFIG.calendar())


def test_the_november_report_is_drafted_reminded_and_watched() -> None:
    rows = {(k, a): t for k, a, t in plan(SERVICE, date(2026, 11, 19))}
    # Due Monday 23 November (24 November is a holiday): draft Wednesday the 18th and
    # due-soon Thursday the 19th at 08:00 local; overdue from Tuesday the 24th, 00:00 local.
    assert rows[("monthly:2026-11", "draft")] == datetime(2026, 11, 18, 1, tzinfo=UTC)
    assert rows[("monthly:2026-11", "due-soon")] == datetime(2026, 11, 19, 1, tzinfo=UTC)
    assert rows[("monthly:2026-11", "overdue")] == datetime(2026, 11, 23, 17, tzinfo=UTC)
    # The December report (15 November - 14 December) and the quarter are planned too.
    assert ("monthly:2026-12", "draft") in rows and ("quarterly:2026-Q4", "overdue") in rows
    # Nothing for periods due long ago (a first start does not nag about them).
    assert not any(k.startswith("annual:2025") or k == "six-monthly:2025-H1" for k, _ in rows)
    assert ("six-monthly:2027-H1", "draft") in rows


def test_timer_keys_read_back_as_their_periods() -> None:
    for key in ("monthly:2026-11", "quarterly:2026-Q4", "six-monthly:2027-H1", "annual:2026"):
        assert period_of(key, SERVICE).key == key


def test_retention_keeps_claims_as_long_as_the_consumed_topics_keep_events() -> None:
    from datetime import timedelta

    from ioc_shared.registry import load_registry as registry_of
    from reporting.bootstrap import consumed_specs, retention_policies
    from reporting.settings import ReportingSettings

    settings = ReportingSettings()
    registry = registry_of(REPO_ROOT / "config" / "registry.yaml", None)
    policies = {p.table: p for p in retention_policies(settings,
                                                       consumed_specs(settings, registry))}
    assert policies["processed_events"].keep >= timedelta(days=400)   # incident events: 400 days
    assert policies["commands"].keep == timedelta(days=400)
    assert "reports" not in policies and "incident_daily" not in policies
