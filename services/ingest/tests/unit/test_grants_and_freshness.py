"""Special-request sharing, publish permission, freshness deadlines and transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from ingest.domain import (
    Accepted,
    FreshnessPolicy,
    Ingestor,
    WatchState,
    assess,
    expected_publishers,
    shared_views,
    special_receivers,
)
from ingest.domain.freshness import deadline
from ioc_shared.registry import Action, Cadence, Registry

from .conftest import NOW, report, signed

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
POLICY = FreshnessPolicy(local=HCM, continuous_after=timedelta(hours=1), grace=timedelta(hours=2))


def test_special_grant_projects_only_granted_fields(registry: Registry, ingestor: Ingestor) -> None:
    acc = ingestor.decide(signed(report(reporter_phone="0912345678", reporter_name="Nguyễn Văn A",
                                        address="Ấp 3")), NOW)
    assert isinstance(acc, Accepted)
    grants = special_receivers(registry, "phan-anh-hien-truong")
    assert [g.id for g in grants] == ["sr-cong-an-pa-2026"]
    (view,) = shared_views(acc, grants, NOW)
    assert set(view.record) <= set(grants[0].fields or ())
    assert "reporter_phone" not in view.record and "reporter_name" not in view.record
    assert view.record["address"] == "Ấp 3"
    assert view.event_id != acc.event_id


def test_special_grant_stops_at_expiry(registry: Registry, ingestor: Ingestor) -> None:
    acc = ingestor.decide(signed(report()), NOW)
    assert isinstance(acc, Accepted)
    grants = special_receivers(registry, "phan-anh-hien-truong")
    expiry = grants[0].expires_at
    assert expiry is not None
    assert len(shared_views(acc, grants, expiry - timedelta(seconds=1))) == 1
    assert shared_views(acc, grants, expiry) == []


def test_publish_grants(registry: Registry) -> None:
    assert registry.may("xa-loc-an", "phan-anh-hien-truong", Action.PUBLISH)
    assert not registry.may("xa-loc-an", "chi-so-y-te", Action.PUBLISH)
    assert not registry.may("phong-tn-mt", "phan-anh-hien-truong", Action.PUBLISH)  # read only


def test_expected_publishers_are_connected_owners_and_grantees(registry: Registry) -> None:
    pairs = expected_publishers(registry)
    assert ("xa-loc-an", "phan-anh-hien-truong") in pairs
    assert ("trung-tam-y-te", "chi-so-y-te") in pairs
    # The owner of ho-so-dich-vu-cong has no system credentials: not watched.
    assert ("vp-hdnd-ubnd", "ho-so-dich-vu-cong") not in pairs
    assert ("phong-tn-mt", "phan-anh-hien-truong") not in pairs


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=HCM).astimezone(UTC)  # type: ignore[misc]


def test_calendar_deadlines_in_local_time() -> None:
    # Daily: last data Friday 28/11 at 23:30 local -> due by end of Saturday 29/11 + 2 h grace.
    assert deadline(Cadence.DAILY, local(2026, 11, 28, 23, 30), POLICY) == local(2026, 11, 30, 2, 0)
    # Weekly (ISO weeks from Monday): data on Wed 25/11 -> due by end of the next week (Sun 6/12).
    assert deadline(Cadence.WEEKLY, local(2026, 11, 25, 10), POLICY) == local(2026, 12, 7, 2, 0)
    # Monthly: data in December -> due by the end of January + grace, across the year boundary.
    assert deadline(Cadence.MONTHLY, local(2026, 12, 5), POLICY) == local(2027, 2, 1, 2, 0)
    assert deadline(Cadence.CONTINUOUS, NOW, POLICY) == NOW + timedelta(hours=3)


def test_lateness_then_recovery() -> None:
    start = local(2026, 11, 28, 8, 0)
    state = WatchState("xa-loc-an", "ho-so-dich-vu-cong", Cadence.DAILY, watch_since=start,
                       last_accepted_at=start)
    assert assess(state, local(2026, 11, 30, 1, 59), POLICY) is None
    late = assess(state, local(2026, 11, 30, 2, 1), POLICY)
    assert late is not None and late.kind == "late" and late.deadline == local(2026, 11, 30, 2, 0)
    assert "hằng ngày" in late.payload()["message_vi"]
    declared = WatchState(state.unit, state.dataset, state.cadence, start, start,
                          late_since=local(2026, 11, 30, 2, 1))
    assert assess(declared, local(2026, 12, 1), POLICY) is None          # still late, said once
    resumed = WatchState(state.unit, state.dataset, state.cadence, start,
                         last_accepted_at=local(2026, 12, 1, 9), late_since=declared.late_since)
    recovered = assess(resumed, local(2026, 12, 1, 9, 1), POLICY)
    assert recovered is not None and recovered.kind == "recovered"
    assert recovered.event_id != late.event_id


def test_never_seen_pair_is_judged_from_watch_start() -> None:
    state = WatchState("xa-loc-an", "phan-anh-hien-truong", Cadence.CONTINUOUS, watch_since=NOW)
    assert assess(state, NOW + timedelta(hours=2, minutes=59), POLICY) is None
    late = assess(state, NOW + timedelta(hours=3, seconds=1), POLICY)
    assert late is not None and late.payload()["last_accepted_at"] is None
