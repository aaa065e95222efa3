"""What one incident contributes to the daily rollups, from its transitions in any order.

Routing publishes every transition on `ioc.routing.incident-events.v1`. The consumer
keeps, per incident, the compact list of transitions seen so far and the contribution
it last added to the rollups. A new event (late, out of order or not) is merged into the
list, the list is replayed in occurrence order (`fold`), and the rollups receive the
difference between the new contribution and the stored one. So at any moment the
rollups equal a recount from the source events, whatever order they came in, and an
incident that moves from assigned to resolved moves between the counts.

A contribution is a map from a rollup key (local day, measure, unit, commune, category,
source) to a count. Measures:

- flows, on the day they happened: `received`, `verified`, `rejected`, `approved`,
  `assigned`, `acknowledged`, `resolved`, `closed`, `returned`, `transferred` (counted
  for the unit it left), `escalated`, `reopened`, `merged`, `ack_on_time`, `ack_late`,
  `resolve_on_time`, `resolve_late`, `survey_responses`, `survey_score` (sum of scores);
- durations in working hours, as histogram buckets `ack_h<i>` / `resolve_h<i>` (commune
  and source left empty, to keep the table small);
- the current state, on the day the incident was received: `state:<state>`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from reporting.domain.histogram import bucket_of

EVENT_PREFIX = "routing.incident."
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")

RollupKey = tuple[date, str, str, str, str, str]
Contribution = dict[RollupKey, int]

# States in which an incident is with a responsible unit (routing.domain.states.WITH_UNIT).
WITH_UNIT = frozenset({"assigned", "acknowledged", "in_progress"})
OPEN = frozenset({"received", "verified", "approved", "assigned", "acknowledged", "in_progress",
                  "returned", "resolved"})

# Event type suffix -> flow measure counted on the event's day.
_FLOWS = {"verified": "verified", "rejected": "rejected", "approved": "approved",
          "returned": "returned", "closed": "closed", "reopened": "reopened",
          "merged": "merged", "escalated": "escalated"}


@dataclass(slots=True)   # not frozen: a frozen __init__ cost 1.4 us, once per event
class Transition:
    """The fields of one incident event that the rollups use (stored as JSON per incident).
    Not changed once made."""

    event_id: str
    kind: str               # the event type without `routing.incident.`
    at: datetime            # UTC
    to_state: str | None
    unit: str | None = None
    from_unit: str | None = None
    ack_due_at: datetime | None = None
    resolve_due_at: datetime | None = None
    score: int | None = None
    facts: dict[str, str] | None = None   # received: dataset, category, commune, priority

    def to_json(self) -> dict[str, Any]:
        """For orjson: times stay datetimes (orjson writes the text `isoformat` would;
        calling it per transition was 8 % of the rollup handler)."""
        out: dict[str, Any] = {"id": self.event_id, "k": self.kind, "at": self.at,
                               "to": self.to_state}
        for name in ("unit", "from_unit", "score", "facts", "ack_due_at", "resolve_due_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Transition:
        def when(name: str) -> datetime | None:
            value = raw.get(name)
            if isinstance(value, datetime):
                return value
            return datetime.fromisoformat(value) if value else None

        at = when("at")
        assert at is not None
        return cls(raw["id"], raw["k"], at, raw.get("to"), raw.get("unit"), raw.get("from_unit"),
                   when("ack_due_at"), when("resolve_due_at"), raw.get("score"), raw.get("facts"))


class EventError(ValueError):
    """An incident event the rollups cannot use (skipped, logged)."""


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise EventError(f"bad time {value!r}") from exc
    if parsed.tzinfo is None:
        raise EventError(f"time without offset {value!r}")
    return parsed.astimezone(UTC)


def transition_from_event(event_id: str, event_type: str, payload: dict[str, Any]) -> Transition:
    """Raises EventError for an event without incident id or time."""
    if not event_type.startswith(EVENT_PREFIX):
        raise EventError(f"not an incident event: {event_type}")
    kind = event_type[len(EVENT_PREFIX):]
    if not isinstance(payload.get("incident_id"), str):
        raise EventError("no incident_id")
    at = _time(payload.get("at"))
    if at is None:
        raise EventError("no time")
    facts = None
    if kind == "received":
        facts = {name: str(payload.get(name) or "") for name in
                 ("dataset", "category", "commune", "priority", "source_unit")}
    score = payload.get("score")
    to_state = payload.get("to_state")
    unit = payload.get("unit")
    from_unit = payload.get("from_unit")
    return Transition(
        event_id, kind, at, to_state if isinstance(to_state, str) else None,
        unit if isinstance(unit, str) else None,
        from_unit if isinstance(from_unit, str) else None,
        _time(payload.get("acknowledge_due_at")), _time(payload.get("resolve_due_at")),
        score if isinstance(score, int) and not isinstance(score, bool) else None, facts)


@dataclass(slots=True)
class IncidentSummary:
    """An incident as the transitions seen so far describe it."""

    incident_id: str
    dataset: str = ""
    category: str = ""
    commune: str = ""
    received_at: datetime | None = None
    state: str | None = None
    unit: str | None = None            # the responsible unit now (or last)
    assigned_at: datetime | None = None
    ack_due_at: datetime | None = None
    resolve_due_at: datetime | None = None
    acknowledged: bool = False
    last_at: datetime | None = None
    contribution: Contribution = field(default_factory=dict)


class WorkingSeconds(Protocol):
    """`ioc_shared.calendar_vn.WorkingCalendar`, or `domain.working_time.WorkingTime`."""

    def working_seconds_between(self, start: datetime, end: datetime) -> float: ...


def local_day(moment: datetime) -> date:
    return moment.astimezone(LOCAL).date()


def fold(incident_id: str, transitions: list[Transition],
         calendar: WorkingSeconds) -> IncidentSummary:
    """Replay the transitions in occurrence order; the summary carries its contribution."""
    ordered = sorted(transitions, key=lambda t: (t.at, t.event_id))
    s = IncidentSummary(incident_id)
    for t in ordered:
        if t.facts is not None:
            s.dataset, s.category = t.facts.get("dataset", ""), t.facts.get("category", "")
            s.commune = t.facts.get("commune", "")
            s.received_at = t.at if s.received_at is None else min(s.received_at, t.at)
    flows: Counter[RollupKey] = Counter()

    def add(day: date, measure: str, unit: str | None, n: int = 1, *, full: bool = True) -> None:
        commune, source = (s.commune, s.dataset) if full else ("", "")
        flows[(day, measure, unit or "", commune, s.category, source)] += n

    for t in ordered:
        day = local_day(t.at)
        kind = t.kind
        if kind == "received":
            add(day, "received", None)
        elif kind in ("assigned", "transferred") or (kind == "reopened" and t.to_state == "assigned"):
            if kind == "transferred":
                add(day, "transferred", t.from_unit or s.unit)
            if kind == "reopened":
                add(day, "reopened", None)
            s.unit = t.unit or s.unit
            s.assigned_at, s.acknowledged = t.at, False
            s.ack_due_at, s.resolve_due_at = t.ack_due_at, t.resolve_due_at
            add(day, "assigned", s.unit)
        elif kind == "acknowledged":
            add(day, "acknowledged", s.unit)
            if not s.acknowledged and s.assigned_at is not None:
                hours = calendar.working_seconds_between(s.assigned_at, t.at) / 3600
                add(day, f"ack_h{bucket_of(hours)}", s.unit, full=False)
                on_time = s.ack_due_at is None or t.at <= s.ack_due_at
                add(day, "ack_on_time" if on_time else "ack_late", s.unit)
            s.acknowledged = True
        elif kind == "resolved":
            add(day, "resolved", s.unit)
            if s.assigned_at is not None:
                hours = calendar.working_seconds_between(s.assigned_at, t.at) / 3600
                add(day, f"resolve_h{bucket_of(hours)}", s.unit, full=False)
                on_time = s.resolve_due_at is None or t.at <= s.resolve_due_at
                add(day, "resolve_on_time" if on_time else "resolve_late", s.unit)
        elif kind == "survey-answered":
            unit = t.unit or s.unit
            add(day, "survey_responses", unit)
            if t.score is not None:
                add(day, "survey_score", unit, t.score)
        elif kind in _FLOWS:
            unit = t.unit if kind == "returned" else s.unit
            add(day, _FLOWS[kind], unit)
        if t.to_state is not None and kind not in ("escalated", "reminder-sent"):
            s.state = t.to_state
            s.last_at = t.at
        if kind == "returned":
            s.unit = t.unit or s.unit
    if s.received_at is not None and s.state is not None:
        add(local_day(s.received_at), f"state:{s.state}", s.unit)
    s.contribution = {k: n for k, n in flows.items() if n}
    return s


def delta(old: Contribution, new: Contribution) -> Contribution:
    """What to add to the rollups to replace `old` by `new` (zero entries left out)."""
    out: Contribution = {}
    for key in old.keys() | new.keys():
        change = new.get(key, 0) - old.get(key, 0)
        if change:
            out[key] = change
    return out


# Days as text and back, once per day (per key they were a third of these two).
_DAY_TEXT: dict[date, str] = {}
_TEXT_DAY: dict[str, date] = {}


def contribution_to_json(c: Contribution) -> list[list[Any]]:
    texts = _DAY_TEXT
    out = []
    for (day, measure, unit, commune, category, source), n in sorted(c.items()):
        text = texts.get(day)
        if text is None:
            text = texts[day] = day.isoformat()
        out.append([text, measure, unit, commune, category, source, n])
    return out


def contribution_from_json(raw: list[list[Any]]) -> Contribution:
    days = _TEXT_DAY
    out: Contribution = {}
    for text, measure, unit, commune, category, source, n in raw:
        day = days.get(text)
        if day is None:
            day = days[text] = date.fromisoformat(text)
        out[(day, measure, unit, commune, category, source)] = int(n)
    return out
