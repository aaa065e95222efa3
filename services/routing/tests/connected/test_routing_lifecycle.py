"""Full lifecycle through real Kafka and PostgreSQL, checked on the output topics and the audit trail."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from ioc_shared.testing import database_url
from routing.domain.geo import cell_of
from routing.repository import RoutingRepository
from routing_harness import World, record

pytestmark = pytest.mark.connected

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def results_for(watch, command_id: str):  # type: ignore[no-untyped-def]
    return [e for e in watch.envelopes(type="routing.command.result")
            if e.payload["command_id"] == command_id]


async def answer(watch, command_id: str):  # type: ignore[no-untyped-def]
    found = await watch.wait(lambda: results_for(watch, command_id))
    return found[0].payload


async def test_incident_goes_from_record_to_survey_answer(world: World, watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    # A traffic report: not automated, so the IOC verifies, its leader approves, it assigns.
    incident = await world.publish_record(
        record("GT-0001", category="giao-thong", priority="cao", commune="tt-loc-ninh"),
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    received = await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", incident))
    assert received[0].payload["to_state"] == "received"
    # Trace context flows from the incoming record into routing's events.
    assert TRACE_ID in w.headers(received[0].event_id)["traceparent"]

    steps = [
        ("ioc-operator", "verify", {}, "verified"),
        ("ioc-leader", "approve", {}, "approved"),
        ("ioc-operator", "assign", {}, "assigned"),
        ("phong-kt-ht-system", "acknowledge", {}, "acknowledged"),
        ("phong-kt-ht-system", "update_status", {"note": "Đã cử cán bộ kiểm tra"}, "in_progress"),
        ("phong-kt-ht-system", "resolve", {"resolution_note": "Đã sửa ổ gà"}, "resolved"),
        ("ioc-operator", "close", {}, "closed"),
        ("tt-loc-ninh-system", "answer_survey", {"score": 5, "comment": "Hài lòng"}, "closed"),
    ]
    for principal, verb, payload, state in steps:
        cid = await world.command(principal, verb, incident, **payload)
        result = await answer(w, cid)
        assert result["status"] == "accepted", (verb, result)
        assert result["state"] == state
        assert result["unit"] == world_unit(principal)

    # The rule for traffic named the unit, and the policy was frozen on the assignment.
    assigned = w.envelopes(t.events, "routing.incident.assigned", incident)[0].payload
    assert assigned["unit"] == "phong-kt-ht" and assigned["rule_id"] == "ha-tang"
    assert assigned["policy"]["rule"] == "ha-tang"
    assert assigned["policy"]["acknowledge"] == {"working_hours": 2.0}
    types = [e.type for e in w.envelopes(t.events, subject=incident)]
    assert types == ["routing.incident.received", "routing.incident.verified",
                     "routing.incident.approved", "routing.incident.assigned",
                     "routing.incident.acknowledged", "routing.incident.progress-updated",
                     "routing.incident.resolved", "routing.incident.closed",
                     "routing.incident.survey-answered"]
    note = w.envelopes(t.notifications, "routing.notification.assigned", "phong-kt-ht")
    assert note and note[0].payload["incident_id"] == incident

    # The reporter hears of the status and gets a survey, with no personal data.
    await w.wait(lambda: w.envelopes(t.reporter, "routing.reporter.survey-requested", incident))
    to_reporter = w.envelopes(t.reporter, subject=incident)
    statuses = [e.payload.get("status") for e in to_reporter if e.type.endswith("status-changed")]
    assert statuses == ["received", "assigned", "in_progress", "resolved", "closed"]
    for rec in w.records:
        assert b"0912345678" not in rec.value and "Nguyễn Văn A".encode() not in rec.value
    assert to_reporter[0].payload["reporter"]["reporter_ref"] == "app-user-42"

    # The audit trail has every transition with its actor; the survey answer is attributed.
    conn = await asyncpg.connect(database_url())
    try:
        s = world.settings.db_schema
        trail = await conn.fetch(f"SELECT event_type, actor_principal, actor_unit FROM {s}.transitions "
                                 "WHERE incident_id = $1 ORDER BY id", incident)
        survey = await conn.fetchrow(f"SELECT unit, score FROM {s}.survey_answers "
                                     "WHERE incident_id = $1", incident)
        loaded = (await RoutingRepository(s).load_incidents(conn, [incident]))[incident]
    finally:
        await conn.close()
    assert [r["event_type"] for r in trail] == types
    assert (trail[2]["actor_principal"], trail[2]["actor_unit"]) == ("ioc-leader", "ioc-loc-ninh")
    assert dict(survey) == {"unit": "phong-kt-ht", "score": 5}
    # The whole policy in force at assignment is kept with the incident.
    assert loaded.policy is not None and loaded.policy["rule"]["id"] == "ha-tang"
    assert [s["level"] for s in loaded.policy["chain"]][-1] == "district-leadership"
    assert loaded.policy["calendar"]["timezone"] == "Asia/Ho_Chi_Minh"


def world_unit(principal: str) -> str:
    return {"ioc-operator": "ioc-loc-ninh", "ioc-leader": "ioc-loc-ninh",
            "phong-kt-ht-system": "phong-kt-ht", "tt-loc-ninh-system": "tt-loc-ninh"}[principal]


async def test_auto_category_is_assigned_without_commands(world: World, watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(record("MT-0001"))
    assigned = await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned", incident))
    assert assigned[0].payload["unit"] == "xa-loc-an"
    assert assigned[0].payload["actor"]["principal"] == "system:routing"
    assert assigned[0].payload["policy"]["automation"] == "moi-truong-thong-thuong"


async def test_duplicate_is_flagged_merged_and_its_updates_reach_the_primary(world: World,
                                                                             watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    # About 45 m apart, on either side of a search-grid cell border (latitude 11.83).
    spot = {"lat": 11.8298, "lon": 106.6000}
    near = {"lat": 11.8302, "lon": 106.6000}
    assert cell_of(spot["lat"], spot["lon"]) != cell_of(near["lat"], near["lon"])
    first = await world.publish_record(record("DUP-1", category="giao-thong", location=spot))
    second = await world.publish_record(record("DUP-2", category="giao-thong", location=near))
    # Whichever of the two routing recorded second is flagged, pointing at the other
    # (the two records may sit on different partitions and be decided in either order).
    flagged = await w.wait(lambda: w.envelopes(t.events, "routing.incident.duplicate-suspected"))
    await asyncio.sleep(1.0)
    flagged = w.envelopes(t.events, "routing.incident.duplicate-suspected")
    assert len(flagged) == 1, "a pair is flagged once"
    duplicate, primary = flagged[0].subject, flagged[0].payload["candidates"][0]["incident_id"]
    assert {duplicate, primary} == {first, second}

    cid = await world.command("ioc-operator", "merge", duplicate, primary_id=primary)
    result = await w.wait(lambda: [e for e in w.envelopes(t.results)
                                   if e.payload["command_id"] == cid])
    assert result[0].payload["status"] == "accepted" and result[0].payload["state"] == "merged"
    assert w.envelopes(t.events, "routing.incident.duplicate-merged", primary)

    record_id = "DUP-2" if duplicate == second else "DUP-1"
    await world.publish_record(record(record_id, category="giao-thong",
                                      location=near if duplicate == second else spot,
                                      title="Ổ gà lớn hơn, đã có người ngã"))
    forwarded = await w.wait(lambda: w.envelopes(t.events, "routing.incident.update-forwarded",
                                                 primary))
    assert forwarded[0].payload["duplicate_id"] == duplicate
    assert forwarded[0].payload["changes"] == {"title": "Ổ gà lớn hơn, đã có người ngã"}
    # The database numbers cells as the domain does.
    conn = await asyncpg.connect(database_url())
    try:
        rows = await conn.fetch(f"SELECT lat, lon, cell FROM {world.settings.db_schema}.incidents")
    finally:
        await conn.close()
    assert rows and all(r["cell"] == cell_of(r["lat"], r["lon"]) for r in rows)


async def test_a_command_is_decided_in_the_incidents_trace_and_answered_in_its_own(
        world: World, watch) -> None:
    import uuid

    from ioc_shared.testing import signed_command
    from routing_harness import SECRETS

    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(
        record("GT-0003", category="giao-thong", priority="cao", commune="tt-loc-ninh"),
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", incident))
    command_trace = uuid.uuid4().hex
    command_id = str(uuid.uuid4())
    value, headers = signed_command("routing.command.verify", incident, {"command_id": command_id},
                                    principal="ioc-operator", secret=SECRETS["ioc-operator"])
    headers.append(("traceparent", f"00-{command_trace}-{uuid.uuid4().hex[:16]}-01".encode()))
    producer = await world._producer()
    await producer.send_and_wait(t.commands, value, key=incident.encode(), headers=headers)
    result = (await w.wait(lambda: results_for(w, command_id)))[0]
    assert result.payload["status"] == "accepted"
    verified = await w.wait(lambda: w.envelopes(t.events, "routing.incident.verified", incident))
    # The decision continues the report's trace; the sender finds the answer in its own.
    assert w.headers(verified[0].event_id)["traceparent"].split("-")[1] == TRACE_ID
    assert w.headers(result.event_id)["traceparent"].split("-")[1] == command_trace
