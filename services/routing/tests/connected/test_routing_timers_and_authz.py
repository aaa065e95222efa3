"""Timers across restarts, two instances in one group, and refusals of foreign or unsigned commands."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest
from ioc_shared.contracts import Envelope
from ioc_shared.contracts.headers import H_PRINCIPAL
from ioc_shared.testing import database_url
from routing.repository import RoutingRepository
from routing_harness import World, record, tiny_deadlines

pytestmark = pytest.mark.connected

# tiny_deadlines: acknowledge after 3 s, reminder 1 s before, escalation steps 0..3 s after.
ACK_STEPS = 4


def escalations(w, topic: str) -> Counter[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    return Counter((e.subject, e.payload["deadline"], e.payload["step"])
                   for e in w.envelopes(topic, "routing.incident.escalated"))


async def test_restart_with_pending_timers_fires_each_escalation_once(world: World, watch) -> None:
    world.with_policy(tiny_deadlines)
    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(record("MT-TIMER-1"))
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned", incident))
    await world.stop()      # the first step is 3 s away; on a loaded machine it may fire first
    assert len(escalations(w, t.events)) < ACK_STEPS, "no step was left pending at the stop"

    await asyncio.sleep(7.0)               # every acknowledgement step is now overdue
    await world.start()
    await w.wait(lambda: len(escalations(w, t.events)) >= ACK_STEPS, timeout=15)
    await asyncio.sleep(1.5)               # give a second firing the chance to show up

    fired = escalations(w, t.events)
    assert fired == Counter({(incident, "acknowledge", s): 1 for s in range(1, ACK_STEPS + 1)})
    levels = [e.payload["level"] for e in w.envelopes(t.events, "routing.incident.escalated")]
    assert levels == ["unit-officer", "unit-head", "ioc-leader", "district-leadership"]
    # The last step reaches the district leadership and the IOC, each on its own key.
    last = [e for e in w.envelopes(t.notifications, "routing.notification.escalation")
            if e.payload["step"] == ACK_STEPS]
    assert sorted(e.subject for e in last) == ["ioc-loc-ninh", "ubnd-huyen"]
    reminders = w.envelopes(t.notifications, "routing.notification.reminder", "xa-loc-an")
    assert len(reminders) == 1             # one reminder before the acknowledgement deadline

    # Still overdue until handled: the query lists it with the highest step fired.
    conn = await asyncpg.connect(database_url())
    try:
        rows = await RoutingRepository(world.settings.db_schema).overdue(conn, datetime.now(UTC))
    finally:
        await conn.close()
    assert [(r["id"], r["deadline"], r["escalation_step"]) for r in rows] == [
        (incident, "acknowledge", ACK_STEPS)]


async def test_two_instances_never_double_assign_or_escalate(world: World, watch) -> None:
    world.with_policy(tiny_deadlines)
    await world.start("a")
    await world.start("b")
    w = await watch()
    t = world.topics
    ids = [await world.publish_record(record(f"MT-PAIR-{i}", location={"lat": 11.7 + i * 0.01,
                                                                         "lon": 106.5}))
           for i in range(30)]
    await w.wait(lambda: len({e.subject for e in w.envelopes(t.events, "routing.incident.assigned")})
                 >= len(ids), timeout=30)
    await w.wait(lambda: len(escalations(w, t.events)) >= len(ids) * ACK_STEPS, timeout=30)
    await asyncio.sleep(1.5)

    assigned = Counter(e.subject for e in w.envelopes(t.events, "routing.incident.assigned"))
    assert assigned == Counter({i: 1 for i in ids})
    fired = escalations(w, t.events)
    assert set(fired.values()) == {1} and len(fired) == len(ids) * ACK_STEPS
    conn = await asyncpg.connect(database_url())
    try:
        s = world.settings.db_schema
        by = await conn.fetch(f"SELECT fired_by, count(*) FROM {s}.due_work "
                              "WHERE fired_at IS NOT NULL GROUP BY fired_by")
    finally:
        await conn.close()
    assert sum(r["count"] for r in by) == len(ids) * (ACK_STEPS + 1)  # + one reminder each


async def test_unit_acting_on_another_units_incident_is_refused(world: World, watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(record("MT-AUTHZ-1"))     # goes to xa-loc-an
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned", incident))

    foreign = await world.command("xa-loc-thanh-huyen-system", "acknowledge", incident)
    result = await w.wait(lambda: [e for e in w.envelopes(t.results, subject="xa-loc-thanh-huyen")
                                   if e.payload["command_id"] == foreign])
    assert result[0].payload["status"] == "rejected"
    assert result[0].payload["reason_code"] == "not_assigned_to_unit"
    assert result[0].payload["message"] == "Sự cố không được giao cho đơn vị của bạn."

    # A forged signature (signed with another principal's secret) claiming xa-loc-an is
    # refused as unauthenticated, and answered to the operators only: nothing goes into
    # xa-loc-an's results (whoever can write the commands topic could write there).
    forged = await world.command("xa-loc-an-system", "acknowledge", incident,
                                 sign_with="xa-loc-thanh-huyen-system")
    refused = await w.wait(lambda: [r for r in w.records if r.topic == t.unauthenticated])
    [answer] = [Envelope.from_bytes(r.value).payload for r in refused]
    assert (answer["command_id"], answer["reason_code"]) == (forged, "unauthenticated")
    assert answer["claimed_principal"] == "xa-loc-an-system" and "unit" not in answer
    assert refused[0].key.decode() == f"{t.commands}:{answer['origin']['partition']}"

    # Garbage on the command topic (a principal, no signature) is answered to the operators
    # too and does not block the partition.
    producer = await world._producer()
    await producer.send_and_wait(t.commands, b"not json", key=incident.encode(),
                                 headers=[(H_PRINCIPAL, b"xa-loc-an-system")])
    own = await world.command("xa-loc-an-system", "acknowledge", incident)
    result = await w.wait(lambda: [e for e in w.envelopes(t.results, subject="xa-loc-an")
                                   if e.payload["command_id"] == own])
    assert result[0].payload["status"] == "accepted"
    # Same key, same partition: both were handled before this one was answered.
    assert not [e for e in w.envelopes(t.results) if e.payload["command_id"] == forged]
    assert not [e for e in w.envelopes(t.results) if e.payload["reason_code"] == "unauthenticated"]
    await w.wait(lambda: len(w.envelopes(t.unauthenticated)) >= 2)
    unauthenticated = w.envelopes(t.unauthenticated)
    assert [e.payload["command_id"] for e in unauthenticated] == [forged, None]
    assert len([e for e in unauthenticated if e.payload["command_id"] == forged]) == 1
    assert [e.type for e in w.envelopes(t.events, subject=incident)][-1] == \
        "routing.incident.acknowledged"

    # The same command id again (a client retry in a new envelope) changes nothing.
    await world.command("xa-loc-an-system", "acknowledge", incident, command_id=own)
    again = await w.wait(lambda: [e for e in w.envelopes(t.results, subject="xa-loc-an")
                                  if e.payload["command_id"] == own and e.payload.get("duplicate")])
    assert again[0].payload["reason_code"] == "duplicate_command"
    assert again[0].payload["status"] == "accepted"      # what the first one got
    assert len(w.envelopes(t.events, "routing.incident.acknowledged", incident)) == 1


async def test_reminders_and_escalations_continue_the_incidents_trace(world: World, watch) -> None:
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    world.with_policy(tiny_deadlines)
    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(
        record("MT-TIMER-TRACE"), headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    fired = await w.wait(lambda: [e for e in w.envelopes(t.events, subject=incident)
                                  if e.type in ("routing.incident.reminder-sent",
                                                "routing.incident.escalated")], timeout=15)
    assert all(w.headers(e.event_id)["traceparent"].split("-")[1] == trace_id for e in fired)
