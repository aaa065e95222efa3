"""An incident's contribution to the rollups, on small hand-checked histories."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import orjson
from ioc_shared.calendar_vn import WorkingCalendar
from reporting.domain import incidents as inc
from reporting.domain.histogram import EDGES, bucket_of, percentile

CAL = WorkingCalendar()
# Monday 2 November 2026, 09:00 local = 02:00 UTC.
T0 = datetime(2026, 11, 2, 2, tzinfo=UTC)


def t(n: int, kind: str, hours: float, to: str | None, **kw: object) -> inc.Transition:
    return inc.Transition(f"00000000-0000-0000-0000-{n:012d}", kind, T0 + timedelta(hours=hours),
                          to, **kw)  # type: ignore[arg-type]


RECEIVED = t(1, "received", 0, "received", facts={"dataset": "phan-anh-hien-truong",
                                                   "category": "moi-truong",
                                                   "commune": "xa-loc-an", "priority": "cao"})
HISTORY = [
    RECEIVED,
    t(2, "verified", 1, "verified"),
    t(3, "approved", 2, "approved"),
    t(4, "assigned", 3, "assigned", unit="phong-tn-mt", ack_due_at=T0 + timedelta(hours=5),
      resolve_due_at=T0 + timedelta(hours=30)),
    # assigned 12:00 local, acknowledged 14:00: lunch 11:30-13:30 leaves half an hour
    t(5, "acknowledged", 5, "acknowledged"),
    t(6, "resolved", 26, "resolved"),
]


def measure(c: inc.Contribution, name: str, unit: str | None = None) -> int:
    return sum(n for k, n in c.items() if k[1] == name and (unit is None or k[2] == unit))


def test_a_resolved_incident_counts_its_flows_state_and_durations() -> None:
    s = inc.fold("i1", HISTORY, CAL)
    c = s.contribution
    assert s.state == "resolved" and s.unit == "phong-tn-mt"
    for name in ("received", "verified", "approved", "assigned", "acknowledged", "resolved"):
        assert measure(c, name) == 1, name
    assert measure(c, "ack_on_time", "phong-tn-mt") == 1
    assert measure(c, "resolve_on_time") == 1
    assert measure(c, "state:resolved", "phong-tn-mt") == 1
    ack = [k for k in c if k[1].startswith("ack_h")]
    assert ack == [(date(2026, 11, 2), f"ack_h{bucket_of(0.5)}", "phong-tn-mt", "", "moi-truong", "")]
    assert all(k[0] == date(2026, 11, 2) for k in c if k[1] in ("received", "state:resolved"))


def test_order_of_arrival_does_not_matter() -> None:
    expected = inc.fold("i1", HISTORY, CAL).contribution
    rng = random.Random(1)
    for _ in range(20):
        shuffled = HISTORY[:]
        rng.shuffle(shuffled)
        assert inc.fold("i1", shuffled, CAL).contribution == expected


def test_moving_from_assigned_to_resolved_moves_between_the_counts() -> None:
    before = inc.fold("i1", HISTORY[:4], CAL).contribution
    after = inc.fold("i1", HISTORY, CAL).contribution
    d = inc.delta(before, after)
    assert measure(d, "state:assigned") == -1
    assert measure(d, "state:resolved") == 1
    assert measure(d, "received") == 0


def test_late_resolution_transfer_return_and_survey() -> None:
    history = [*HISTORY[:4],
               t(7, "transferred", 3.5, "assigned", from_unit="phong-tn-mt", unit="phong-kt-ht",
                 ack_due_at=T0 + timedelta(hours=6), resolve_due_at=T0 + timedelta(hours=8)),
               t(8, "acknowledged", 5, "acknowledged"),
               t(9, "resolved", 50, "resolved"),
               t(10, "closed", 51, "closed"),
               t(11, "survey-answered", 60, "closed", score=4, unit="phong-kt-ht")]
    c = inc.fold("i1", history, CAL).contribution
    assert measure(c, "transferred", "phong-tn-mt") == 1
    assert measure(c, "assigned", "phong-kt-ht") == 1 and measure(c, "assigned") == 2
    assert measure(c, "resolve_late", "phong-kt-ht") == 1
    assert measure(c, "survey_responses", "phong-kt-ht") == 1
    assert measure(c, "survey_score", "phong-kt-ht") == 4
    assert measure(c, "state:closed", "phong-kt-ht") == 1


def test_an_event_before_its_received_event_is_kept_and_lands_when_the_facts_arrive() -> None:
    early = inc.fold("i1", HISTORY[1:3], CAL).contribution
    assert all(k[4] == "" for k in early)      # category unknown yet
    full = inc.fold("i1", HISTORY[:3], CAL).contribution
    assert all(k[4] == "moi-truong" for k in full)


def test_transitions_survive_their_json_form() -> None:
    for tr in HISTORY:
        assert inc.Transition.from_json(tr.to_json()) == tr
        # As stored: through orjson's text and back (times written as isoformat writes them).
        stored = orjson.loads(orjson.dumps(tr.to_json()))
        assert stored["at"] == tr.at.isoformat()
        assert inc.Transition.from_json(stored) == tr
    c = inc.fold("i1", HISTORY, CAL).contribution
    assert inc.contribution_from_json(inc.contribution_to_json(c)) == c


def test_percentiles_from_the_histogram() -> None:
    counts = [0] * (len(EDGES) + 1)
    for hours in (0.1, 0.2, 1.5, 1.5, 5.0):
        counts[bucket_of(hours)] += 1
    # Median: third of five, in bucket [1, 2) holding two -> 1 + 1 * (2.5 - 2) / 2 = 1.25.
    assert percentile(counts, 0.5) == 1.25
    # p90: rank 4.5 in bucket [4, 6) holding one -> 4 + 2 * 0.5 = 5.0.
    assert percentile(counts, 0.9) == 5.0
    assert percentile([0] * len(counts), 0.5) is None


def test_every_measure_has_its_column_in_the_migration() -> None:
    import re

    from reporting.bootstrap import MIGRATIONS
    from reporting.repository import INCIDENT_MEASURES

    sql = (MIGRATIONS / "0003_incident_measures_as_columns.sql").read_text()
    table = sql[sql.index("CREATE TABLE incident_counts"):sql.index("PRIMARY KEY")]
    columns = re.findall(r"^\s+(\w+)\s+bigint NOT NULL DEFAULT 0,$", table, re.M)
    assert columns == [m.replace(":", "_") for m in INCIDENT_MEASURES]
    # And fold emits nothing else: every state routing has, every duration bucket.
    from reporting.domain.histogram import BUCKETS
    assert {m for m in INCIDENT_MEASURES if m.startswith("ack_h")} == {
        f"ack_h{i}" for i in range(BUCKETS)}


def test_an_event_into_a_state_without_a_column_is_skipped() -> None:
    from reporting.rollups import Event, _transitions

    def event(event_id: str, to_state: str) -> Event:
        return Event(event_id, "routing.incident.verified", T0, {
            "incident_id": "i1", "at": T0.isoformat(), "to_state": to_state})

    parsed = _transitions({"e1": event("e1", "verified"), "e2": event("e2", "frozen-forever")})
    assert set(parsed) == {"e1"}
