"""Synthetic but plausible source events, for the sample report, tests and the benchmark.

Incident events have routing's envelope shape and payloads (`routing/publishing.py`:
`event_payload`); quality counters, freshness and indicator records have ingest's.
Deterministic for a seed. Nothing here is real data.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from ioc_shared.contracts.envelope import deterministic_event_id

CATEGORY_UNIT = {
    "moi-truong": "phong-tn-mt", "giao-thong": "phong-kt-ht", "an-ninh-trat-tu": "cong-an-huyen",
    "dat-dai-xay-dung": "phong-tn-mt", "dien-nuoc": "phong-kt-ht", "y-te": "trung-tam-y-te",
    "giao-duc": "phong-gd-dt", "dich-vu-cong": "vp-hdnd-ubnd", "khac": "tt-loc-ninh",
}
COMMUNES = ["tt-loc-ninh", "xa-loc-an", "xa-loc-dien", "xa-loc-hiep", "xa-loc-hoa", "xa-loc-hung",
            "xa-loc-khanh", "xa-loc-phu", "xa-loc-quang", "xa-loc-tan", "xa-loc-thai",
            "xa-loc-thanh-nang", "xa-loc-thanh-huyen", "xa-loc-thien", "xa-loc-thinh",
            "xa-loc-thuan"]
DATASETS = ["phan-anh-hien-truong"] * 8 + ["canh-bao-dich-vu-cong", "canh-bao-y-te"]


def envelope(event_type: str, subject: str, payload: dict[str, Any], at: datetime,
             event_id: uuid.UUID | str) -> bytes:
    return orjson.dumps({
        "envelope_version": 1, "event_id": str(event_id), "type": event_type, "schema_version": 1,
        "source_unit": "ioc-loc-ninh", "subject": subject, "occurred_at": at, "produced_at": at,
        "correlation_id": None, "causation_id": None, "payload": payload})


def _transition(incident_id: str, kind: str, before: str | None, after: str, at: datetime,
                n: int, **data: Any) -> tuple[str, bytes]:
    payload = {"incident_id": incident_id, "from_state": before, "to_state": after,
               "actor": {"principal": "ioc-operator", "unit": "ioc-loc-ninh"}, "reason": None,
               "at": at.isoformat(), **data}
    event_id = deterministic_event_id("sample", incident_id, n)
    return incident_id, envelope(f"routing.incident.{kind}", incident_id, payload, at, event_id)


def incident_events(count: int, start: datetime, end: datetime, *, seed: int = 7,
                    prefix: str = "inc") -> Iterator[tuple[str, bytes]]:
    """(incident id, envelope bytes) of every transition of `count` incidents received
    between `start` and `end` (aware datetimes), in occurrence order per incident."""
    rng = random.Random(seed)
    span_s = max(1.0, (end - start).total_seconds())
    categories = list(CATEGORY_UNIT)
    for i in range(count):
        incident_id = f"{prefix}-{i:07d}"
        category = rng.choice(categories)
        unit = CATEGORY_UNIT[category]
        at = start + timedelta(seconds=rng.random() * span_s)
        n = 0

        def step(kind: str, before: str | None, after: str, when: datetime,
                 incident_id: str = incident_id, **data: Any) -> tuple[str, bytes]:
            nonlocal n
            n += 1
            return _transition(incident_id, kind, before, after, when, n, **data)

        yield step("received", None, "received", at, dataset=rng.choice(DATASETS),
                   record_id=f"r{i}", source_unit="ioc-loc-ninh", category=category,
                   priority="binh-thuong", commune=rng.choice(COMMUNES),
                   reported_at=at.isoformat(), title="Phản ánh mẫu")
        at += timedelta(minutes=rng.randint(10, 300))
        if rng.random() < 0.06:
            yield step("rejected", "received", "rejected_not_genuine", at)
            continue
        yield step("verified", "received", "verified", at)
        at += timedelta(minutes=rng.randint(5, 120))
        yield step("approved", "verified", "approved", at)
        at += timedelta(minutes=rng.randint(1, 60))
        state = "approved"
        for assignment in range(1, 4):
            ack_due, resolve_due = at + timedelta(hours=8), at + timedelta(days=5)
            yield step("assigned", state, "assigned", at, unit=unit, assignment_no=assignment,
                       acknowledge_due_at=ack_due.isoformat(),
                       resolve_due_at=resolve_due.isoformat())
            if rng.random() < 0.05 and assignment < 3:
                at += timedelta(hours=rng.randint(1, 30))
                other = rng.choice([u for u in set(CATEGORY_UNIT.values()) if u != unit])
                yield step("transferred", "assigned", "assigned", at, from_unit=unit, unit=other,
                           acknowledge_due_at=(at + timedelta(hours=8)).isoformat(),
                           resolve_due_at=(at + timedelta(days=5)).isoformat())
                unit = other
            at += timedelta(hours=rng.expovariate(1 / 6))
            if now_open := (at > end + timedelta(days=20)):
                break
            yield step("acknowledged", "assigned", "acknowledged", at)
            if rng.random() < 0.04 and assignment < 3:
                at += timedelta(hours=rng.randint(1, 20))
                yield step("returned", "acknowledged", "returned", at, unit=unit)
                at += timedelta(hours=rng.randint(1, 10))
                state = "returned"
                continue
            break
        else:
            now_open = True
        if now_open:
            continue
        at += timedelta(hours=rng.expovariate(1 / 50))
        if rng.random() < 0.08:
            yield step("escalated", "acknowledged", "acknowledged", at - timedelta(hours=1),
                       level="unit-head")
        if rng.random() < 0.1:
            continue     # still being handled
        yield step("resolved", "acknowledged", "resolved", at, note="Đã xử lý")
        at += timedelta(hours=rng.randint(1, 48))
        yield step("closed", "resolved", "closed", at)
        if rng.random() < 0.35:
            at += timedelta(hours=rng.randint(1, 72))
            yield step("survey-answered", "closed", "closed", at, score=rng.choice([3, 4, 4, 5, 5]),
                       comment=None, unit=unit)


def quality_events(start: date, days: int, *, seed: int = 11) -> Iterator[bytes]:
    rng = random.Random(seed)
    pairs = [("tt-loc-ninh", "phan-anh-hien-truong"), ("xa-loc-an", "phan-anh-hien-truong"),
             ("trung-tam-y-te", "chi-so-y-te"), ("phong-gd-dt", "thong-ke-truong-hoc"),
             ("phong-tc-kh", "chi-tieu-kt-xh"), ("xa-loc-an", "ho-so-dich-vu-cong")]
    for d in range(days):
        day = start + timedelta(days=d)
        for unit, dataset in pairs:
            accepted = rng.randint(20, 400)
            rejected = {"missing_field": rng.randint(0, 6), "wrong_type": rng.randint(0, 3)}
            as_of = datetime(day.year, day.month, day.day, 16, 59, tzinfo=UTC)
            yield envelope("ingest.quality.counters", f"{unit}/{dataset}/{day}", {
                "day": day.isoformat(), "unit": unit, "dataset": dataset, "accepted": accepted,
                "rejected": rejected, "rejected_total": sum(rejected.values()),
                "as_of": as_of.isoformat(), "cumulative": True}, as_of,
                deterministic_event_id("q", unit, dataset, day))


def indicator_events(start: date, days: int, *, seed: int = 13) -> Iterator[bytes]:
    rng = random.Random(seed)
    for d in range(0, days, 7):
        day = start + timedelta(days=d)
        at = datetime(day.year, day.month, day.day, 3, tzinfo=UTC)
        for commune in COMMUNES[:8]:
            for indicator in ("ca-sot-xuat-huyet", "kham-chua-benh"):
                rid = f"yt-{commune}-{indicator}-{day}"
                yield envelope("ingest.record.accepted", rid, {
                    "dataset": "chi-so-y-te", "schema_version": 1, "record": {
                        "record_id": rid, "period_start": day.isoformat(), "commune": commune,
                        "indicator": indicator, "value": rng.randint(0, 40)
                        if indicator == "ca-sot-xuat-huyet" else rng.randint(100, 900)}},
                    at, deterministic_event_id("ind", rid))
