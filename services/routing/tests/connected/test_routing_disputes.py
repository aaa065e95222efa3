"""Data disputes on the real Kafka and PostgreSQL (Đ4.5): the owner comes from the record
read at the named position, never from the command."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import asyncpg
from ioc_shared.testing import database_url
from routing.domain.model import dispute_incident_id
from routing_harness import TopicWatch, World, record

WITHIN_S = 30.0
TOWN = "Thị trấn Lộc Ninh"


def _answers(w: TopicWatch, world: World, command_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in w.envelopes(world.topics.results)
            if e.payload["command_id"] == command_id]


async def _answer(w: TopicWatch, world: World, command_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = await w.wait(lambda: _answers(w, world, command_id), WITHIN_S)
    return found[0]


async def _disputes(world: World) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url())
    try:
        return list(await conn.fetch(
            f"SELECT id, source_unit, assigned_unit, state, category, dataset, record_id, "
            f"dispute FROM {world.settings.db_schema}.incidents WHERE dispute IS NOT NULL "
            "ORDER BY created_at"))
    finally:
        await conn.close()


async def test_a_dispute_goes_to_the_unit_whose_record_it_is(world: World, watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    # tt-loc-ninh's record, published as ingest does; phong-tn-mt may read the dataset.
    at = await world.publish_canonical(record("PA-DISPUTE-1"), source_unit="tt-loc-ninh")
    # The payload tries to name another owner and another sender: never read.
    cid = await world.command("phong-tn-mt-system", "dispute", str(at.event_id),
                              **at.dispute(owner_unit="xa-loc-an", source_unit="xa-loc-an",
                                           unit="xa-loc-an"))
    answer = await _answer(w, world, cid)
    incident = dispute_incident_id(at.event_id, "phong-tn-mt-system")
    assert (answer["status"], answer["incident_id"], answer["state"]) == (
        "accepted", incident, "assigned")
    assert answer["unit"] == "phong-tn-mt" and answer["principal"] == "phong-tn-mt-system"
    assert answer["message"] == (f"Đã ghi nhận khiếu nại dữ liệu: sự cố {incident} được giao "
                                 f"cho đơn vị {TOWN}.")

    [assigned] = await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned",
                                                  incident), WITHIN_S)
    assert assigned.payload["unit"] == "tt-loc-ninh"
    assert assigned.payload["rule_id"] == "tranh-chap-du-lieu"
    position = {"event_id": str(at.event_id), "topic": at.topic, "partition": at.partition,
                "offset": at.offset, "owner_unit": "tt-loc-ninh",
                "disputed_by": "phong-tn-mt-system"}
    [received] = w.envelopes(t.events, "routing.incident.received", incident)
    assert received.payload["dispute"] == position and assigned.payload["dispute"] == position
    assert received.payload["actor"]["principal"] == "phong-tn-mt-system"
    assert received.payload["reason"] == "Tọa độ và xã không khớp"
    notes = await w.wait(lambda: w.envelopes(t.notifications, "routing.notification.assigned",
                                             subject="tt-loc-ninh"), WITHIN_S)
    assert [n.payload["incident_id"] for n in notes] == [incident]
    assert notes[0].payload["contact_roles"] == ["data-officer", "head"]

    # Again, with a new command id: the incident it has. The same command id: a repeat.
    again = await world.command("phong-tn-mt-system", "dispute", str(at.event_id),
                                **at.dispute())
    second = await _answer(w, world, again)
    assert (second["status"], second["incident_id"]) == ("accepted", incident)
    await world.command("phong-tn-mt-system", "dispute", str(at.event_id), command_id=cid,
                        **at.dispute())
    await w.wait(lambda: any(a.get("duplicate") for a in _answers(w, world, cid)), WITHIN_S)
    # Two principals of one unit (the IOC's operator and leader) each get their own.
    by_operator = await world.command("ioc-operator", "dispute", "x", **at.dispute())
    by_leader = await world.command("ioc-leader", "dispute", "x", **at.dispute())
    assert (await _answer(w, world, by_operator))["status"] == "accepted"
    assert (await _answer(w, world, by_leader))["status"] == "accepted"

    rows = await _disputes(world)
    assert [(r["source_unit"], r["assigned_unit"], r["state"], r["category"]) for r in rows] == [
        ("phong-tn-mt", "tt-loc-ninh", "assigned", "tranh-chap-du-lieu"),
        ("ioc-loc-ninh", "tt-loc-ninh", "assigned", "tranh-chap-du-lieu"),
        ("ioc-loc-ninh", "tt-loc-ninh", "assigned", "tranh-chap-du-lieu")]
    assert json.loads(rows[0]["dispute"]) == position
    assert len(w.envelopes(t.events, "routing.incident.received", incident)) == 1
    # The record's own incident is untouched by its disputes.
    own = await w.wait(lambda: w.envelopes(t.events, "routing.incident.received"), WITHIN_S)
    assert any(e.payload.get("dispute") is None for e in own)

    # The owner acts on it like on any incident it holds.
    ack = await world.command("tt-loc-ninh-system", "acknowledge", incident)
    assert (await _answer(w, world, ack))["state"] == "acknowledged"
    [acked] = await w.wait(lambda: w.envelopes(t.events, "routing.incident.acknowledged",
                                               incident), WITHIN_S)
    assert acked.payload["dispute"] == position


async def test_a_forged_position_or_event_id_or_a_consumer_without_a_grant_is_refused(
        world: World, watch) -> None:
    await world.start()
    w = await watch()
    at = await world.publish_canonical(record("PA-DISPUTE-2"), source_unit="tt-loc-ninh")
    other = await world.publish_canonical(record("PA-DISPUTE-3"), source_unit="xa-loc-an")
    # Written on the canonical topic without ingest's header (the ACL forbids it; the
    # intake refuses it too): not a record anyone can dispute into an incident.
    stray = await world.publish_canonical(record("PA-DISPUTE-4"), source_unit="xa-loc-an",
                                          producer=None)
    principal = "phong-tn-mt-system"
    cases: list[tuple[str, dict[str, Any], str]] = [
        # Another record's position with this record's event id, and the reverse.
        (principal, dataclasses.replace(other, event_id=at.event_id).dispute(),
         "event_id_mismatch"),
        (principal, dataclasses.replace(at, event_id=other.event_id).dispute(),
         "event_id_mismatch"),
        (principal, dataclasses.replace(at, offset=at.offset + 10_000).dispute(),
         "record_not_found"),
        (principal, dataclasses.replace(at, partition=99).dispute(), "record_not_found"),
        (principal, stray.dispute(), "record_not_from_ingest"),
        (principal, dataclasses.replace(at, topic=world.topics.commands).dispute(),
         "not_the_dataset_topic"),
        (principal, at.dispute(dataset="khong-co"), "unknown_dataset"),
        # No grant on the dataset: a consumer disputes only data it may receive.
        ("phong-kt-ht-system", at.dispute(), "dataset_not_permitted"),
        (principal, at.dispute(reason="  "), "reason_required"),
    ]
    sent = [(await world.command(who, "dispute", "x", **payload), code)
            for who, payload, code in cases]
    for command_id, code in sent:
        answer = await _answer(w, world, command_id)
        assert (answer["status"], answer["reason_code"]) == ("rejected", code), code
        # No incident named (a payload refused while parsing echoes the subject sent).
        expected_subject = "x" if code == "reason_required" else None
        assert answer["incident_id"] == expected_subject and answer["message"]
    assert await _disputes(world) == []
    assert not [e for e in w.envelopes(world.topics.events)
                if e.payload.get("category") == "tranh-chap-du-lieu"]


async def test_a_dispute_of_data_the_ioc_publishes_goes_to_its_data_officer(
        world: World, watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    # The citizen app's reports are the IOC's own records; the IOC handles no incidents.
    at = await world.publish_canonical(record("PA-DISPUTE-IOC"), source_unit="ioc-loc-ninh")
    cid = await world.command("phong-tn-mt-system", "dispute", "x", **at.dispute())
    incident = dispute_incident_id(at.event_id, "phong-tn-mt-system")
    assert (await _answer(w, world, cid))["incident_id"] == incident
    [assigned] = await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned",
                                                  incident), WITHIN_S)
    assert assigned.payload["unit"] == "ioc-loc-ninh"
    assert assigned.payload["fallback_from"] == "ioc-loc-ninh"
    assert assigned.payload["dispute"]["owner_unit"] == "ioc-loc-ninh"
    [note] = await w.wait(lambda: [n for n in w.envelopes(t.notifications,
                                                          "routing.notification.assigned")
                                   if n.payload["incident_id"] == incident], WITHIN_S)
    assert note.payload["unit"] == "ioc-loc-ninh"
    assert note.payload["contact_roles"] == ["data-officer", "head"]
