"""Routing's part of the hostile-input suite: no single input stops, corrupts or spoofs it.

Real Kafka and PostgreSQL. Each hostile input is refused with a machine-readable reason,
the next valid input of another unit on the same partition is handled within seconds,
and health stays ok.
"""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from ioc_shared.contracts import Envelope
from ioc_shared.testing import database_url
from routing_harness import FIELD_REPORTS, TopicWatch, World, record

# Bounds of the waits: what must happen is waited for, never timed.
WITHIN_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(world: World) -> str:
    """Start routing with a known HTTP port; returns its /health address."""
    port = _free_port()
    world.settings = world.settings.model_copy(update={"http_port": port})
    await world.start()
    return f"http://127.0.0.1:{port}/health"


async def _healthy(url: str) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.get(url, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "ok", answer.text


async def _rows(world: World, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url())
    try:
        return list(await conn.fetch(sql.format(s=world.settings.db_schema), *args))
    finally:
        await conn.close()


def _result(w: TopicWatch, world: World, command_id: str) -> Any:
    return lambda: [e.payload for e in w.envelopes(world.topics.results)
                    if e.payload.get("command_id") == command_id]


async def _closed_incident(world: World, w: TopicWatch, record_id: str) -> str:
    """A field report from tt-loc-ninh, handled by xa-loc-an and closed: ready for a survey."""
    t = world.topics
    incident = await world.publish_record(record(record_id))
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.assigned", incident))
    await world.command("xa-loc-an-system", "acknowledge", incident)
    await world.command("xa-loc-an-system", "resolve", incident, resolution_note="Đã thu gom")
    await world.command("ioc-operator", "close", incident)
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.closed", incident))
    return incident


async def test_nul_and_bidi_in_a_command_comment_are_refused_and_the_next_command_passes(
        world: World, watch) -> None:
    health = await _start(world)
    w = await watch()
    incident = await _closed_incident(world, w, "HOSTILE-SURVEY-1")

    # The source unit's system answers the survey with a NUL, then with a bidi override.
    nul = await world.command("tt-loc-ninh-system", "answer_survey", incident, score=5,
                              comment="Tốt\x00")
    bidi = await world.command("tt-loc-ninh-system", "answer_survey", incident, score=1,
                               comment="Rất tệ \u202eốt")
    # Another unit's valid command, same key so same partition, right behind them.
    valid = await world.command("ioc-operator", "answer_survey", incident, score=4,
                                comment="Người dân hài lòng (qua điện thoại)")
    for command_id, where in ((nul, "U+0000"), (bidi, "U+202E")):
        [answer] = await w.wait(_result(w, world, command_id), WITHIN_S)
        assert answer["status"] == "rejected"
        assert answer["reason_code"] == "forbidden_character"
        assert where in answer["message"] and "$.payload.comment" in answer["message"]
        assert answer["message"].startswith("Lệnh chứa ký tự không được phép")
    [answer] = await w.wait(_result(w, world, valid), WITHIN_S)
    assert answer["status"] == "accepted" and answer["state"] == "closed"

    rows = await _rows(world, "SELECT command_id, principal, status, reason_code, decided, raw "
                              "FROM {s}.commands WHERE command_id = ANY($1::uuid[])",
                       [uuid.UUID(nul), uuid.UUID(bidi), uuid.UUID(valid)])
    by_id = {str(r["command_id"]): r for r in rows}
    assert by_id[nul]["reason_code"] == "forbidden_character" and not by_id[nul]["decided"]
    assert b"\\u0000" in by_id[nul]["raw"]      # what was received, as bytes only
    assert by_id[bidi]["status"] == "rejected" and by_id[bidi]["principal"] == "tt-loc-ninh-system"
    assert by_id[valid]["status"] == "accepted" and by_id[valid]["decided"]
    [survey] = await _rows(world, "SELECT score, comment FROM {s}.survey_answers "
                                  "WHERE incident_id = $1", incident)
    assert survey["score"] == 4
    await _healthy(health)


async def test_duplicate_keys_and_garbage_are_refused_and_recorded(world: World, watch) -> None:
    health = await _start(world)
    w = await watch()
    t = world.topics
    incident = await world.publish_record(record("HOSTILE-DUPKEY-1", priority="cao"))
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", incident))

    # Signed properly, but "type" twice: a lenient parser would let the second one win.
    doc = Envelope(type="routing.command.verify", source_unit="x", subject=incident,
                   payload={"command_id": str(uuid.uuid4())}).model_dump(mode="json")
    raw = json.dumps(doc, ensure_ascii=False)[:-1] + ', "type": "routing.command.reject"}'
    await world.command_raw("ioc-operator", raw.encode(), key=incident)
    # Unsigned garbage with a NUL in the claimed principal, and a lone surrogate escape.
    producer = await world._producer()
    await producer.send_and_wait(t.commands, b'{"payload": {"comment": "\\ud800"}}',
                                 key=incident.encode(),
                                 headers=[("ioc-principal", b"xa-loc-an\x00-system")])
    valid = await world.command("ioc-operator", "verify", incident)

    # Which of the two values is meant cannot be known, nor can its command id be trusted:
    # the answer goes to the signing principal's unit without one.
    [answer] = await w.wait(lambda: [e.payload for e in w.envelopes(t.results, subject="ioc-loc-ninh")
                                     if e.payload["reason_code"] == "duplicate_key"], WITHIN_S)
    assert answer["status"] == "rejected" and answer["principal"] == "ioc-operator"
    assert answer["command_id"] is None and "$.type" in answer["message"]
    [answer] = await w.wait(_result(w, world, valid), WITHIN_S)
    assert answer["status"] == "accepted" and answer["state"] == "verified"

    rows = await _rows(world, "SELECT principal, claimed_principal, status, reason_code, origin "
                              "FROM {s}.commands ORDER BY id")
    reasons = [(r["principal"], r["reason_code"]) for r in rows]
    assert ("ioc-operator", "duplicate_key") in reasons
    [garbage] = [r for r in rows if r["reason_code"] == "unauthenticated"]
    assert garbage["principal"] is None and garbage["status"] == "rejected"
    assert garbage["claimed_principal"] == "xa-loc-an\ufffd-system"
    assert garbage["origin"].startswith(t.commands + "/")
    await _healthy(health)


async def test_a_forged_source_unit_without_the_producer_header_is_refused(
        world: World, watch) -> None:
    health = await _start(world)
    w = await watch()
    t = world.topics
    # A unit writes straight to the canonical topic as another unit (the ACL forbids it in
    # production; this is the check inside): no producer header.
    key = "xa-loc-an/HOSTILE-FORGED-1"
    forged = await world.publish_record(record("HOSTILE-FORGED-1", title="Giả mạo"),
                                        source_unit="xa-loc-an", producer=None, key=key)
    impostor = await world.publish_record(record("HOSTILE-FORGED-2"), source_unit="xa-loc-an",
                                          producer="xa-loc-an-system", key=key)
    # The next valid record, of another unit, on the same key (so the same partition).
    valid = await world.publish_record(record("HOSTILE-FORGED-3"), source_unit="tt-loc-ninh",
                                       key=key)
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", valid), WITHIN_S)
    assert not w.envelopes(t.events, subject=forged)
    assert not w.envelopes(t.events, subject=impostor)

    refused = await _rows(world, "SELECT reason_code, source_unit, detail "
                                 "FROM {s}.refused_records ORDER BY kafka_offset")
    assert [(r["reason_code"], r["source_unit"]) for r in refused] == [
        ("unknown_producer", None), ("unknown_producer", None)]
    assert all("Giả mạo" not in r["detail"] for r in refused)
    assert not await _rows(world, "SELECT 1 FROM {s}.incidents WHERE source_unit = 'xa-loc-an'")
    await _healthy(health)


async def test_a_canonical_record_with_a_nul_in_its_title_is_refused(world: World, watch) -> None:
    health = await _start(world)
    w = await watch()
    t = world.topics
    key = "xa-loc-an/HOSTILE-NUL-1"
    # A hostile producer that even sets the producer header (only the ACL stops that).
    poisoned = await world.publish_record(record("HOSTILE-NUL-1", title="Rác\x00thải"),
                                          source_unit="xa-loc-an", key=key)
    bidi = await world.publish_record(record("HOSTILE-NUL-2", description="abc\u202e"),
                                      source_unit="xa-loc-an", key=key)
    # Not a unit that may publish field reports (ingest would never accept it).
    outsider = await world.publish_record(record("HOSTILE-NUL-3"), source_unit="phong-noi-vu",
                                          key=key)
    valid = await world.publish_record(record("HOSTILE-NUL-4"), source_unit="tt-loc-ninh",
                                       key=key)
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", valid), WITHIN_S)
    for refused_id in (poisoned, bidi, outsider):
        assert not w.envelopes(t.events, subject=refused_id)
    rows = await _rows(world, "SELECT reason_code, source_unit, detail FROM {s}.refused_records "
                              "ORDER BY kafka_offset")
    assert [(r["reason_code"], r["source_unit"]) for r in rows] == [
        ("forbidden_character", "xa-loc-an"), ("forbidden_character", "xa-loc-an"),
        ("source_not_allowed", "phong-noi-vu")]
    assert rows[0]["detail"].startswith("$.record.title: U+0000")
    assert "Rác" not in rows[0]["detail"]
    await _healthy(health)


async def test_two_units_with_the_same_record_id_have_two_incidents_neither_updating_the_other(
        world: World, watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    # The same record id from two units; one of them with the key as it was before.
    town = await world.publish_record(record("PA-0001", category="moi-truong"),
                                      source_unit="tt-loc-ninh")
    commune = await world.publish_record(
        record("PA-0001", category="giao-thong", commune="xa-loc-an", title="Ổ gà"),
        source_unit="xa-loc-an", legacy_key=True)
    assert town != commune
    for incident in (town, commune):
        await w.wait(lambda i=incident: w.envelopes(t.events, "routing.incident.received", i))
    # The commune publishes the id again: it changes its own incident, never the town's.
    await world.publish_record(
        record("PA-0001", category="giao-thong", commune="xa-loc-an", title="Ổ gà lớn hơn"),
        source_unit="xa-loc-an")
    [updated] = await w.wait(
        lambda: w.envelopes(t.events, "routing.incident.record-updated", commune))
    assert updated.payload["changes"] == {"title": "Ổ gà lớn hơn"}
    await world.publish_record(record("PA-0001", title="Rác đã dọn"), source_unit="tt-loc-ninh")
    [mine] = await w.wait(lambda: w.envelopes(t.events, "routing.incident.record-updated", town))
    assert mine.payload["changes"] == {"title": "Rác đã dọn"}
    assert len(w.envelopes(t.events, "routing.incident.record-updated", commune)) == 1
    rows = await _rows(world, "SELECT id, source_unit, category, title FROM {s}.incidents "
                              "WHERE record_id = 'PA-0001' ORDER BY source_unit")
    assert [(r["id"], r["source_unit"], r["category"]) for r in rows] == [
        (town, "tt-loc-ninh", "moi-truong"), (commune, "xa-loc-an", "giao-thong")]


async def test_an_incident_recorded_before_unit_scoped_ids_keeps_its_id(world: World,
                                                                       watch) -> None:
    await world.start()
    w = await watch()
    t = world.topics
    # A row as 0001-0004 wrote it: the id derived from dataset and record id only.
    legacy = str(uuid.uuid5(uuid.UUID("0d4c7f5e-2b1a-4e8f-9c3d-7a6b5e4f3d21"),
                            f"{FIELD_REPORTS}\x1fPA-OLD-1"))
    now = datetime.now(UTC)
    await _rows(world, "INSERT INTO {s}.incidents (id, dataset, record_id, source_unit, category, "
                       "priority, commune, reported_at, title, lat, lon, state, created_at, updated_at) "
                       "VALUES ($1, $2, 'PA-OLD-1', 'tt-loc-ninh', 'moi-truong', 'binh-thuong', "
                       "'xa-loc-an', $3, 'Rác', 11.83, 106.60, 'received', $3, $3)", legacy, FIELD_REPORTS,
               now)
    await world.publish_record(record("PA-OLD-1", title="Rác nhiều hơn"), source_unit="tt-loc-ninh")
    # Another unit's record of the same id is its own new incident.
    other = await world.publish_record(record("PA-OLD-1"), source_unit="xa-loc-an")
    [updated] = await w.wait(lambda: w.envelopes(t.events, "routing.incident.record-updated",
                                                 legacy))
    assert updated.payload["changes"] == {"title": "Rác nhiều hơn"}
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", other))
    assert other != legacy
