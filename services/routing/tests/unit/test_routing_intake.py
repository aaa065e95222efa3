"""Intake: record -> incident, automation, likely duplicates, updates on merged incidents."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from routing.domain.geo import (
    DuplicateCandidate,
    Point,
    bounding_box,
    cell_of,
    cells_of_box,
    haversine_m,
    likely_duplicates,
)
from routing.domain.intake import (
    RecordError,
    flag_duplicates,
    incident_from_record,
    receive,
    record_updated,
)
from routing.domain.model import incident_id_for
from routing.domain.states import State
from routing_examples import NOW, SYSTEM, ctx, incident


def raw(**kw: Any) -> dict[str, Any]:
    base = {"record_id": "R-1", "reported_at": "2026-06-03T09:00:00+07:00", "commune": "xa-a",
            "category": "moi-truong", "priority": "binh-thuong", "title": "Rác",
            "location": {"lat": 11.8, "lon": 106.6}, "reporter_name": "Nguyễn Văn A",
            "reporter_phone": "0912345678", "reporter_ref": "ticket-7"}
    return {**base, **kw}


def test_record_becomes_an_incident_without_personal_data() -> None:
    inc = incident_from_record("field-reports", "xa-c", raw())
    assert inc.id == incident_id_for("xa-c", "field-reports", "R-1")
    assert inc.reported_at.utcoffset() == timedelta(0)
    assert inc.reporter_ref == "ticket-7"
    assert "Nguyễn" not in repr(inc) and "0912345678" not in repr(inc)


@pytest.mark.parametrize("broken", [{"record_id": None}, {"reported_at": "yesterday"},
                                    {"reported_at": "2026-06-03T09:00:00"}, {"category": ""},
                                    {"reported_at": "0001-01-01T00:00:00+00:00"},
                                    {"reported_at": "9999-12-31T23:59:59-05:00"}])
def test_unusable_records_are_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(RecordError):
        incident_from_record("field-reports", "xa-c", raw(**broken))


def test_automated_category_is_verified_approved_and_assigned() -> None:
    inc = incident_from_record("field-reports", "xa-c", raw())
    out = receive(inc, ctx(), SYSTEM)
    assert [e.type.rsplit(".", 1)[1] for e in out.events] == [
        "received", "verified", "approved", "assigned"]
    assert inc.state is State.ASSIGNED and inc.assigned_unit == "xa-a"
    assert all(e.actor == SYSTEM for e in out.events)
    assert "env-auto" in (out.events[2].reason or "")
    assert out.schedule


def test_other_categories_wait_for_people() -> None:
    inc = incident_from_record("field-reports", "xa-c", raw(priority="cao"))
    out = receive(inc, ctx(), SYSTEM)
    assert [e.type for e in out.events] == ["routing.incident.received"]
    assert inc.state is State.RECEIVED and out.schedule is None


def candidate(id: str, lat: float, lon: float, category: str = "moi-truong",
              hours: float = 0) -> DuplicateCandidate:
    return DuplicateCandidate(id, category, Point(lat, lon), NOW + timedelta(hours=hours))


def test_likely_duplicates_are_close_in_space_and_time_and_of_the_same_category() -> None:
    here = Point(11.8, 106.6)
    found = likely_duplicates("moi-truong", here, NOW, [
        candidate("near", 11.8009, 106.6),            # ~100 m
        candidate("nearer", 11.8004, 106.6),          # ~45 m
        candidate("far", 11.81, 106.6),               # ~1.1 km
        candidate("other-kind", 11.8001, 106.6, category="an-ninh"),
        candidate("too-old", 11.8001, 106.6, hours=-49),
    ], radius_m=200, window=timedelta(hours=48), limit=3)
    assert [d.incident_id for d in found] == ["nearer", "near"]
    assert 40 < found[0].distance_m < 50


def test_haversine_and_bounding_box() -> None:
    assert haversine_m(Point(11.0, 106.0), Point(12.0, 106.0)) == pytest.approx(111_195, rel=1e-3)
    lat0, lon0, lat1, lon1 = bounding_box(Point(11.8, 106.6), 200)
    for bearing_point in (Point(11.8017, 106.6), Point(11.8, 106.6017)):
        assert haversine_m(Point(11.8, 106.6), bearing_point) < 200
        assert lat0 <= bearing_point.lat <= lat1 and lon0 <= bearing_point.lon <= lon1


def test_a_likely_duplicate_is_flagged_against_earlier_incidents() -> None:
    inc = incident_from_record("field-reports", "xa-c", raw())
    out = flag_duplicates(inc, ctx(), SYSTEM, [candidate("inc-old", 11.8005, 106.6)])
    assert [e.type for e in out.events] == ["routing.incident.duplicate-suspected"]
    assert out.events[0].data["candidates"][0]["incident_id"] == "inc-old"
    assert not flag_duplicates(inc, ctx(), SYSTEM, [candidate("far", 11.9, 106.6)]).events
    inc.location = None
    assert not flag_duplicates(inc, ctx(), SYSTEM, [candidate("inc-old", 11.8, 106.6)]).events


def test_update_of_a_merged_incident_reaches_the_primary() -> None:
    merged = incident(State.MERGED, primary_id="inc-2")
    primary = incident(State.IN_PROGRESS, id="inc-2", assigned="xa-b")
    newer = incident(title="Rác đã lan ra đường", location=Point(11.8, 106.6))
    out = record_updated(merged, newer, ctx(), SYSTEM, primary)
    assert [(e.type, e.incident_id) for e in out.events] == [
        ("routing.incident.record-updated", "inc-1"), ("routing.incident.update-forwarded", "inc-2")]
    assert out.events[1].data["changes"] == {"title": "Rác đã lan ra đường"}
    assert out.events[1].data["duplicate_id"] == "inc-1"


@given(st.text(max_size=20), st.text(max_size=40), st.text(max_size=60))
def test_incident_id_is_exactly_uuid5_of_unit_dataset_and_record_id(
        unit: str, dataset: str, record_id: str) -> None:
    expected = uuid.uuid5(uuid.UUID("0d4c7f5e-2b1a-4e8f-9c3d-7a6b5e4f3d21"),
                          f"{unit}\x1f{dataset}\x1f{record_id}")
    assert incident_id_for(unit, dataset, record_id) == str(expected)


def test_the_same_record_id_of_two_units_is_two_incidents() -> None:
    mine = incident_from_record("field-reports", "xa-a", raw())
    theirs = incident_from_record("field-reports", "xa-b", raw())
    assert mine.id != theirs.id
    assert mine.record_key == ("xa-a", "field-reports", "R-1")
    assert theirs.record_key == ("xa-b", "field-reports", "R-1")


@pytest.mark.parametrize(("field", "text"), [
    ("title", "Rác\x00"), ("title", "abc\u202edcba"), ("commune", "xa-a\u200b"),
    ("reporter_ref", "ticket\x07"), ("description", "\ud800")])
def test_text_that_cannot_be_stored_is_refused_with_its_code(field: str, text: str) -> None:
    with pytest.raises(RecordError) as caught:
        incident_from_record("field-reports", "xa-c", raw(**{field: text}))
    assert caught.value.code == "forbidden_character"
    assert field in caught.value.detail
    assert text not in str(caught.value)      # where and what kind, never the content


def test_a_refused_record_names_the_field_not_its_value() -> None:
    with pytest.raises(RecordError) as caught:
        incident_from_record("field-reports", "xa-c", raw(reported_at="0912345678"))
    assert caught.value.code == "unusable_record"
    assert "0912345678" not in str(caught.value)


@given(st.floats(min_value=8.0, max_value=23.5), st.floats(min_value=102.0, max_value=110.0),
       st.floats(min_value=0, max_value=360), st.floats(min_value=0, max_value=1.0),
       st.sampled_from([50.0, 200.0, 1500.0]))
def test_every_point_within_the_radius_is_in_a_searched_cell(
        lat: float, lon: float, bearing: float, fraction: float, radius_m: float) -> None:
    import math
    centre = Point(lat, lon)
    d = radius_m * fraction / 6_371_000.0
    b = math.radians(bearing)
    lat2 = math.asin(math.sin(math.radians(lat)) * math.cos(d)
                     + math.cos(math.radians(lat)) * math.sin(d) * math.cos(b))
    lon2 = math.radians(lon) + math.atan2(math.sin(b) * math.sin(d) * math.cos(math.radians(lat)),
                                          math.cos(d) - math.sin(math.radians(lat)) * math.sin(lat2))
    other = Point(math.degrees(lat2), math.degrees(lon2))
    if haversine_m(centre, other) > radius_m:
        return  # rounding at the very edge
    assert cell_of(other.lat, other.lon) in cells_of_box(*bounding_box(centre, radius_m))


def test_cells_are_numbered_row_then_column() -> None:
    assert cell_of(11.7512, 106.5234) == (1175 + 9000) * 100_000 + 10652 + 18000
    assert cell_of(-0.001, -0.001) == (-1 + 9000) * 100_000 - 1 + 18000
    assert cells_of_box(11.749, 106.519, 11.753, 106.521) == [
        cell_of(11.749, 106.519), cell_of(11.749, 106.521), cell_of(11.753, 106.519),
        cell_of(11.753, 106.521)]
