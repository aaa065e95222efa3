"""Freshness (Đ6.3, Đ11.7): has each unit published each dataset as often as agreed?

A calendar cadence is judged in the centre's local calendar (Asia/Ho_Chi_Minh):
data last seen in some day / ISO week / month is expected again by the end of
the *next* one, plus a grace period. A continuous dataset is expected at least
every `continuous_after`. Lateness is declared once per episode; the first
record accepted after it recovers the pair.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

from ioc_shared.contracts.envelope import deterministic_event_id
from ioc_shared.registry import Action, Cadence, Registry

from ingest.domain.normalize import iso_utc

LATE_TYPE = "ingest.freshness.late"
RECOVERED_TYPE = "ingest.freshness.recovered"


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    local: tzinfo
    continuous_after: timedelta = timedelta(hours=1)
    grace: timedelta = timedelta(hours=2)


@dataclass(frozen=True, slots=True)
class WatchState:
    unit: str
    dataset: str
    cadence: Cadence
    watch_since: datetime
    last_accepted_at: datetime | None = None
    late_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    kind: Literal["late", "recovered"]
    state: WatchState
    at: datetime
    deadline: datetime | None = None

    @property
    def event_type(self) -> str:
        return LATE_TYPE if self.kind == "late" else RECOVERED_TYPE

    @property
    def event_id(self) -> uuid.UUID:
        episode = self.deadline if self.kind == "late" else self.state.late_since
        event_id: uuid.UUID = deterministic_event_id(
            self.event_type, self.state.unit, self.state.dataset, iso_utc(episode) if episode else "")
        return event_id

    def payload(self) -> dict[str, Any]:
        s = self.state
        last = iso_utc(s.last_accepted_at) if s.last_accepted_at else None
        if self.kind == "late":
            message = (f"Đơn vị {s.unit} chưa cập nhật bộ dữ liệu {s.dataset} theo tần suất "
                       f"{_CADENCE_VI[s.cadence]} (hạn {iso_utc(self.deadline or self.at)}).")
        else:
            message = f"Đơn vị {s.unit} đã cập nhật lại bộ dữ liệu {s.dataset}."
        return {
            "unit": s.unit, "dataset": s.dataset, "cadence": s.cadence.value,
            "last_accepted_at": last, "watch_since": iso_utc(s.watch_since),
            "deadline": iso_utc(self.deadline) if self.deadline else None,
            "late_since": iso_utc(s.late_since) if s.late_since else None,
            "detected_at": iso_utc(self.at), "message_vi": message,
        }


_CADENCE_VI = {Cadence.CONTINUOUS: "liên tục", Cadence.DAILY: "hằng ngày",
               Cadence.WEEKLY: "hằng tuần", Cadence.MONTHLY: "hằng tháng"}


def _period_start(moment: datetime, cadence: Cadence, local: tzinfo) -> datetime:
    day = moment.astimezone(local).replace(hour=0, minute=0, second=0, microsecond=0)
    if cadence is Cadence.WEEKLY:
        return day - timedelta(days=day.weekday())
    if cadence is Cadence.MONTHLY:
        return day.replace(day=1)
    return day


def _add_periods(start: datetime, cadence: Cadence, count: int) -> datetime:
    if cadence is Cadence.MONTHLY:
        month_index = start.month - 1 + count
        return start.replace(year=start.year + month_index // 12, month=month_index % 12 + 1)
    days = 7 if cadence is Cadence.WEEKLY else 1
    # Naive local arithmetic then re-attach: calendar days, whatever the offset.
    naive = start.replace(tzinfo=None) + timedelta(days=days * count)
    return naive.replace(tzinfo=start.tzinfo)


def deadline(cadence: Cadence, since: datetime, policy: FreshnessPolicy) -> datetime:
    """When data is next due, given the last data (or the start of watching) at `since`."""
    if cadence is Cadence.CONTINUOUS:
        return since + policy.continuous_after + policy.grace
    start = _period_start(since, cadence, policy.local)
    end_of_next = _add_periods(start, cadence, 2)
    return end_of_next.astimezone(UTC) + policy.grace


def assess(state: WatchState, now: datetime, policy: FreshnessPolicy) -> Transition | None:
    if state.late_since is not None:
        if state.last_accepted_at is not None and state.last_accepted_at >= state.late_since:
            return Transition("recovered", state, now)
        return None
    due = deadline(state.cadence, state.last_accepted_at or state.watch_since, policy)
    if now > due:
        return Transition("late", state, now, due)
    return None


def expected_publishers(registry: Registry) -> list[tuple[str, str]]:
    """(unit, dataset) pairs to watch: owners and publish grantees that have credentials."""
    connected = {p.unit for p in registry.principals.values()}
    pairs: set[tuple[str, str]] = set()
    for ds in registry.datasets.values():
        if ds.owner in connected:
            pairs.add((ds.owner, ds.id))
    for grant in registry.grants:
        if Action.PUBLISH in grant.actions and grant.unit in connected and grant.dataset in registry.datasets:
            pairs.add((grant.unit, grant.dataset))
    return sorted(pairs)
