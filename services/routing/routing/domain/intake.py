"""From a canonical incident record to a received (and possibly dispatched) incident."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ioc_shared.contracts.hygiene import find_forbidden

from routing.domain.geo import DuplicateCandidate, Point, likely_duplicates
from routing.domain.lifecycle import assign, with_ioc_deadline
from routing.domain.model import Context, Incident, IncidentEvent, Outcome, incident_id_for
from routing.domain.states import RECEIVED_EVENT, Actor, State

DEFAULT_PRIORITY = "binh-thuong"
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# Record fields that change nothing for routing but are worth passing on.
_UPDATE_FIELDS = ("category", "priority", "commune", "title", "location")


class RecordError(ValueError):
    """A canonical record routing cannot use (ingest validated it, so this means a fault
    upstream or a hostile producer). `code` is machine-readable; `detail` names fields,
    never their values (records carry citizens' reports)."""

    def __init__(self, detail: str, code: str = "unusable_record") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _text(record: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RecordError(f"record field '{name}' is missing")
        return None
    return str(value)


def _location(record: dict[str, Any]) -> Point | None:
    raw = record.get("location")
    if not isinstance(raw, dict):
        return None
    try:
        lat, lon = float(raw["lat"]), float(raw["lon"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return Point(lat, lon)


def _reported_at(record: dict[str, Any]) -> datetime:
    raw = _text(record, "reported_at")
    assert raw is not None
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            raise RecordError("record field 'reported_at' has no time zone")
        value = value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError("record field 'reported_at' is not a datetime") from None
    # Deadlines and the duplicate window do arithmetic on it: keep it where that is safe.
    if not _EARLIEST <= value <= _LATEST:
        raise RecordError("record field 'reported_at' is out of range")
    return value


def incident_from_record(dataset: str, source_unit: str, record: dict[str, Any],
                         record_id_field: str = "record_id") -> Incident:
    """The incident of a canonical record; personal fields of the reporter are not read.

    Every string of the record must be storable and harmless on a screen (no NUL, no
    bidi override...): `RecordError` with the hygiene code otherwise.
    """
    problem = find_forbidden(record, "$.record")
    if problem is not None:
        raise RecordError(f"{problem.path}: {problem.detail}", problem.code)
    record_id = _text(record, record_id_field)
    assert record_id is not None
    return Incident(
        id=incident_id_for(source_unit, dataset, record_id),
        dataset=dataset,
        record_id=record_id,
        source_unit=source_unit,
        category=_text(record, "category") or "",
        priority=_text(record, "priority", required=False) or DEFAULT_PRIORITY,
        commune=_text(record, "commune") or "",
        reported_at=_reported_at(record),
        title=(_text(record, "title", required=False) or "")[:200],
        location=_location(record),
        reporter_ref=_text(record, "reporter_ref", required=False),
    )


def receive(incident: Incident, ctx: Context, system: Actor) -> Outcome:
    """Record the incident, then run the configured automation."""
    incident.created_at = ctx.now
    outcome = Outcome(events=[IncidentEvent(
        RECEIVED_EVENT, incident.id, None, State.RECEIVED, system, ctx.now, None,
        {"dataset": incident.dataset, "record_id": incident.record_id,
         "source_unit": incident.source_unit, "category": incident.category,
         "priority": incident.priority, "commune": incident.commune,
         "reported_at": incident.reported_at.isoformat(), "title": incident.title})])
    outcome.extend(automate(incident, ctx, system))
    return with_ioc_deadline(outcome, incident, ctx)


def flag_duplicates(incident: Incident, ctx: Context, system: Actor,
                    candidates: Iterable[DuplicateCandidate]) -> Outcome:
    """Flag the incident as a likely duplicate of incidents that existed before it.

    `candidates` are the open incidents recorded before this one (the caller excludes
    the incident itself and anything recorded after it), so each pair is flagged once.
    """
    if incident.location is None:
        return Outcome()
    dup = ctx.policy.duplicates
    found = likely_duplicates(incident.category, incident.location, incident.reported_at,
                              candidates, radius_m=dup.radius_m, window=dup.window.wall_clock(),
                              limit=dup.max_candidates)
    if not found:
        return Outcome()
    return Outcome(events=[IncidentEvent(
        "routing.incident.duplicate-suspected", incident.id, incident.state, incident.state,
        system, ctx.now, None,
        {"candidates": [{"incident_id": d.incident_id, "distance_m": round(d.distance_m, 1),
                         "apart_s": int(d.apart.total_seconds())} for d in found]})])


def automate(incident: Incident, ctx: Context, system: Actor) -> Outcome:
    """Verify, approve and assign without a human where the configuration says so."""
    auto = ctx.policy.automation_for(incident.dataset, incident.category, incident.priority)
    outcome = Outcome()
    if auto is None or not auto.verify:
        return outcome
    why = f"tự động theo cấu hình automation '{auto.id}'"
    steps = [("routing.incident.verified", State.VERIFIED, auto.verify),
             ("routing.incident.approved", State.APPROVED, auto.approve)]
    for event_type, target, enabled in steps:
        if not enabled:
            return outcome
        outcome.events.append(IncidentEvent(event_type, incident.id, incident.state, target,
                                            system, ctx.now, why, {"automation": auto.id}))
        incident.state = target
    if auto.assign:
        outcome.extend(assign(incident, system, ctx, unit=None, reason=why, automation=auto,
                              extra={"automation": auto.id}))
    return outcome


def record_updated(existing: Incident, update: Incident, ctx: Context, system: Actor,
                   primary: Incident | None) -> Outcome:
    """A newer version of the record: noted on the incident and passed on to its primary."""
    changes = {name: _plain(getattr(update, name)) for name in _UPDATE_FIELDS
               if getattr(update, name) != getattr(existing, name)}
    data: dict[str, Any] = {"record_id": existing.record_id, "changes": changes}
    outcome = Outcome(events=[IncidentEvent(
        "routing.incident.record-updated", existing.id, existing.state, existing.state, system,
        ctx.now, None, data)])
    if existing.state is State.MERGED and primary is not None:
        outcome.events.append(IncidentEvent(
            "routing.incident.update-forwarded", primary.id, primary.state, primary.state, system,
            ctx.now, None, {**data, "duplicate_id": existing.id}))
    return outcome


def _plain(value: object) -> object:
    if isinstance(value, Point):
        return {"lat": value.lat, "lon": value.lon}
    return value
