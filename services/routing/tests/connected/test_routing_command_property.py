"""Property: whatever text a command holds, in whichever field of whichever verb, routing
answers it (accepted or rejected, with a reason), records it, and goes on.

The command handler runs against the real PostgreSQL (where a NUL used to fail every
retry); no broker is needed to drive it, so hypothesis can try many commands quickly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.outbox import unpack_messages
from ioc_shared.registry import load_registry, sign
from ioc_shared.testing import database_url, unique
from routing.bootstrap import MIGRATIONS
from routing.config import load_policy, organisation_from_registry
from routing.domain.states import Verb
from routing.handlers import (
    CANONICAL_PRODUCER,
    PRODUCER_HEADER,
    CommandHandler,
    Inbound,
    IntakeHandler,
    RoutingCore,
)
from routing.publishing import COMMAND_RESULT, UNAUTHENTICATED_COMMAND, RoutingTopics
from routing.repository import RoutingRepository
from routing.settings import RoutingSettings
from routing_harness import FIELD_REPORTS, SECRETS, record

PRINCIPALS = ["ioc-operator", "ioc-leader", "xa-loc-an-system", "tt-loc-ninh-system",
              "xa-loc-thanh-huyen-system"]
FIELDS = ["command_id", "incident_id", "reason", "note", "resolution_note", "unit", "primary_id",
          "status", "score", "comment"]

# Any code point, lone surrogates included, and the usual suspects often.
# NUL is the one PostgreSQL cannot store at all: it comes up most.
SUSPECTS = st.sampled_from(["\x00", "\x00", "\x00", "\u202e", "\u2066", "\u200b", "\ufeff", "\x1b", "\x85",
                            "\ud800", "\udfff", "ệ", "\n", "\u0301"])
CHARS = st.characters(exclude_categories=()) | st.characters(categories=["Cs"]) | SUSPECTS
TEXT = st.text(CHARS, max_size=30)
# Text with at least one of the usual suspects in it, and text that may have none.
HOSTILE = TEXT | st.builds(lambda a, c, b: a + c + b, TEXT, SUSPECTS, TEXT)


class Fixture:
    def __init__(self, core: RoutingCore, settings: RoutingSettings) -> None:
        self.core = core
        self.commands = CommandHandler(core)
        self.intake = IntakeHandler(core)
        self.commands_topic = core.topics.commands
        self.canonical = settings.topic(canonical_topic(FIELD_REPORTS)).name
        self.offset = 0
        self.primary = ""
        self.prepared = 0
        self.canary = ""

    def next_offset(self) -> int:
        self.offset += 1
        return self.offset

    async def new_incident(self, record_id: str, unit: str = "xa-loc-an", **fields: Any) -> str:
        env = Envelope(type="ingest.record.accepted", source_unit=unit,
                       subject=f"{unit}/{record_id}",
                       payload={"dataset": FIELD_REPORTS, "schema_version": 2,
                                "record": record(record_id, commune=unit, **fields)})
        await self.intake.handle_batch([Inbound(self.canonical, 0, self.next_offset(),
                                                env.to_bytes(),
                                                {PRODUCER_HEADER: CANONICAL_PRODUCER})])
        async with self.core.pool.acquire() as conn:
            found = await conn.fetchval(
                f"SELECT id FROM {self.core.repo.s}.incidents WHERE source_unit = $1 "
                "AND record_id = $2", unit, record_id)
        assert found is not None
        return str(found)

    async def in_state_for(self, verb: Verb) -> str:
        """A new incident in a state where `verb` is allowed, led there by valid commands."""
        steps = PREPARE[verb]
        self.prepared += 1
        incident = await self.new_incident(f"PROP-{self.prepared}",
                                           **({"priority": "cao"} if verb in MANUAL else {}))
        for step in steps:
            sender, args = VALID[Verb(step)]
            await self.command(sender, step, incident, **args)
        return incident

    async def send(self, value: bytes, principal: str, *, signature: str | None = None) -> int:
        offset = self.next_offset()
        headers = {H_PRINCIPAL: principal,
                   H_SIGNATURE: signature if signature is not None
                   else sign(SECRETS[principal], value)}
        await self.commands.handle(Inbound(self.commands_topic, 0, offset, value, headers))
        return offset

    async def command(self, principal: str, verb: str, incident: str, **payload: Any) -> int:
        env = Envelope(type=f"routing.command.{verb}", source_unit="x", subject=incident,
                       payload={"command_id": str(uuid.uuid4()), **payload})
        return await self.send(env.to_bytes(), principal)

    async def answers(self, offset: int) -> tuple[list[asyncpg.Record], list[dict[str, Any]],
                                                  list[dict[str, Any]]]:
        """The commands rows, the results and the operators' unauthenticated answers of the
        command at `offset`."""
        s = self.core.repo.s
        async with self.core.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT * FROM {s}.commands WHERE origin = $1",
                                    f"{self.commands_topic}/0/{offset}")
            # Commands are handled one at a time here: the newest outbox row is this one's.
            packed = await conn.fetchval(
                f"SELECT messages FROM {s}.outbox ORDER BY id DESC LIMIT 1")
        messages = [(topic, Envelope.from_bytes(value))
                    for _, topic, _, _, value in unpack_messages(packed)]
        results = [e.payload for topic, e in messages
                   if topic == self.core.topics.results and e.type == COMMAND_RESULT]
        unauthenticated = [e.payload for topic, e in messages
                           if topic == self.core.topics.unauthenticated
                           and e.type == UNAUTHENTICATED_COMMAND]
        return list(rows), results, unauthenticated


@pytest.fixture
async def fx() -> AsyncIterator[Fixture]:
    tag = unique("rtprop")
    settings = RoutingSettings(topic_namespace=tag.replace("_", "-"), db_schema=tag,
                               database_url=database_url(), log_level="WARNING")
    registry = load_registry(settings.registry_file, settings.credentials_file)
    org = organisation_from_registry(registry)
    policy = load_policy(settings.routing_config, org)
    pool = await create_pool(database_url(), max_size=2)
    try:
        await migrate(pool, tag, MIGRATIONS)
        core = RoutingCore(pool, RoutingRepository(tag), RoutingTopics.from_settings(settings),
                           policy, policy.calendar.build(), org, registry, "property",
                           clock=lambda: datetime.now(UTC))
        f = Fixture(core, settings)
        f.primary = await f.new_incident("PROP-PRIMARY", priority="cao")
        # The canary only ever gets valid commands.
        f.canary = await f.new_incident("PROP-CANARY")
        await f.command("xa-loc-an-system", "acknowledge", f.canary)
        yield f
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {tag} CASCADE")
        await pool.close()


def _values(incidents: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), HOSTILE, st.integers(-10, 10),
                     st.builds(lambda: str(uuid.uuid4())), st.sampled_from(incidents),
                     st.sampled_from(["xa-loc-an", "ioc-loc-ninh", "phong-tn-mt", "nowhere"]),
                     st.lists(TEXT, max_size=2), st.dictionaries(TEXT, TEXT, max_size=2))


V = Verb
# A complete command of each verb, and who may send it: hostile text then replaces some
# of it, so that much of it gets as far as the database.
VALID: dict[Verb, tuple[str, dict[str, Any]]] = {
    V.VERIFY: ("ioc-operator", {}), V.REJECT: ("ioc-operator", {"reason": "Sai sự thật"}),
    V.APPROVE: ("ioc-leader", {}), V.ASSIGN: ("ioc-operator", {"unit": "xa-loc-an"}),
    V.ACKNOWLEDGE: ("xa-loc-an-system", {}),
    V.UPDATE_STATUS: ("xa-loc-an-system", {"note": "Đang xử lý"}),
    V.RETURN: ("xa-loc-an-system", {"reason": "Không thuộc thẩm quyền"}),
    V.TRANSFER: ("xa-loc-an-system", {"unit": "phong-tn-mt", "reason": "Thuộc lĩnh vực khác"}),
    V.RESOLVE: ("xa-loc-an-system", {"resolution_note": "Đã thu gom"}),
    V.CLOSE: ("ioc-operator", {}), V.REOPEN: ("ioc-operator", {"reason": "Chưa xong"}),
    V.MERGE: ("ioc-operator", {}), V.ANSWER_SURVEY: ("xa-loc-an-system",
                                                     {"score": 4, "comment": "Hài lòng"}),
}
TOP = ["event_id", "type", "source_unit", "subject", "occurred_at", "schema_version"]


# The valid commands that lead a new incident to a state where the verb is allowed (field
# reports of normal priority are verified, approved and assigned automatically).
PREPARE: dict[Verb, tuple[str, ...]] = {
    V.VERIFY: (), V.REJECT: (), V.MERGE: (),
    V.APPROVE: ("verify",), V.ASSIGN: ("verify", "approve"),
    V.ACKNOWLEDGE: (), V.RETURN: (), V.TRANSFER: (),
    V.UPDATE_STATUS: ("acknowledge",), V.RESOLVE: ("acknowledge",),
    V.CLOSE: ("acknowledge", "resolve"), V.REOPEN: ("acknowledge", "resolve", "close"),
    V.ANSWER_SURVEY: ("acknowledge", "resolve", "close"),
}
# Verbs that need a person's verification first start from a high-priority report.
MANUAL = {V.VERIFY, V.REJECT, V.MERGE, V.APPROVE, V.ASSIGN}


@st.composite
def hostile_commands(draw: st.DrawFn, incident: str, primary: str, verb: Verb
                     ) -> tuple[bytes, str, str | None]:
    sender, args = VALID[verb]
    payload: dict[str, Any] = {"command_id": str(uuid.uuid4()), **args}
    if verb is V.MERGE:
        payload["primary_id"] = primary
    doc: dict[str, Any] = {"event_id": str(uuid.uuid4()), "type": f"routing.command.{verb}",
                           "source_unit": "ioc-loc-ninh", "subject": incident}
    # Hostile text in one or more fields: mostly the verb's own text, else anything.
    own = [k for k, v in args.items() if isinstance(v, str)] or ["comment", "note"]
    if draw(st.booleans()):
        payload[draw(st.sampled_from(own))] = draw(HOSTILE)
    else:
        for name in draw(st.lists(st.sampled_from(FIELDS + TOP), min_size=1, max_size=3,
                                  unique=True)):
            (doc if name in TOP else payload)[name] = draw(HOSTILE | _values([incident, primary]))
    if draw(st.sampled_from([False, True])):
        payload[draw(TEXT)] = draw(_values([incident]))       # fields nobody reads, keys too
    doc["payload"] = payload
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.sampled_from([False] * 9 + [True])):
        raw = raw[:-1] + b', "type": "routing.command.verify"}'     # a duplicate key
    principal = draw(st.sampled_from([sender] * 6 + PRINCIPALS))
    signature = draw(st.sampled_from([None] * 8 + ["00" * 32, "chữ ký", "\x00"]))
    return raw, principal, signature          # signature None: signed properly


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_any_text_in_any_field_of_any_command_is_answered_and_the_next_passes(
        fx: Fixture, data: st.DataObject) -> None:
    verb = data.draw(st.sampled_from(list(Verb)))
    incident = await fx.in_state_for(verb)
    raw, principal, signature = data.draw(hostile_commands(incident, fx.primary, verb))
    offset = await fx.send(raw, principal, signature=signature)     # never raises
    rows, results, unauthenticated = await fx.answers(offset)
    assert len(rows) == 1, "every command is recorded once"
    event(f"{rows[0]['status']} {rows[0]['reason_code'] or ''}")   # the spread of outcomes
    assert rows[0]["status"] in ("accepted", "rejected")
    assert rows[0]["status"] == "accepted" or rows[0]["reason_code"]
    if rows[0]["reason_code"] == "unauthenticated":
        # Answered to the operators only, never into the feed of the unit it claims.
        assert rows[0]["principal"] is None
        assert results == [] and len(unauthenticated) == 1
        answer = unauthenticated[0]
    else:
        assert unauthenticated == [] and len(results) == 1
        answer = results[0]
    assert answer["status"] == rows[0]["status"]
    assert answer["message"]
    # The next valid command, on the same partition, passes.
    nxt = await fx.command("xa-loc-an-system", "update_status", fx.canary, note="Đang xử lý")
    rows, results, _ = await fx.answers(nxt)
    assert [r["status"] for r in rows] == ["accepted"]
    assert results[0]["status"] == "accepted"


RECORD_FIELDS = ["record_id", "reported_at", "commune", "category", "priority", "title",
                 "description", "location", "reporter_ref", "channel"]


@st.composite
def hostile_records(draw: st.DrawFn, n: int) -> tuple[bytes, dict[str, str]]:
    unit = draw(st.sampled_from(["xa-loc-an", "tt-loc-ninh"] * 4
                                + ["phong-noi-vu", "xa-loc-\u202ean", "xa-loc-an\x00"]))
    body: dict[str, Any] = record(f"PROP-REC-{n}")
    for name in draw(st.lists(st.sampled_from(RECORD_FIELDS), min_size=1, max_size=3,
                              unique=True)):
        body[name] = draw(HOSTILE | _values(["PROP-0"]) | st.just({"lat": 1e308, "lon": -1e308}))
    doc: dict[str, Any] = {
        "envelope_version": 1, "event_id": str(uuid.uuid4()), "type": "ingest.record.accepted",
        "schema_version": 1, "source_unit": unit, "subject": f"{unit}/PROP-REC-{n}",
        "payload": {"dataset": draw(st.sampled_from([FIELD_REPORTS] * 5 + ["canh-bao-y-te"])),
                    "schema_version": 2, "record": body}}
    if draw(st.sampled_from([False] * 4 + [True])):
        doc[draw(st.sampled_from(["event_id", "type", "source_unit", "payload"]))] = draw(
            HOSTILE | _values(["PROP-0"]))
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.sampled_from([False] * 9 + [True])):
        raw = raw[:-1] + b', "type": "ingest.record.accepted"}'
    headers = {PRODUCER_HEADER: draw(st.sampled_from([CANONICAL_PRODUCER] * 6 + ["xa-loc-an"]))}
    return raw, headers


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_any_canonical_record_is_taken_or_refused_and_the_next_one_is_taken(
        fx: Fixture, data: st.DataObject) -> None:
    fx.prepared += 1
    raw, headers = data.draw(hostile_records(fx.prepared))
    offset = fx.next_offset()
    await fx.intake.handle_batch([Inbound(fx.canonical, 0, offset, raw, headers)])  # no raise
    s = fx.core.repo.s
    async with fx.core.pool.acquire() as conn:
        refused = await conn.fetchval(
            f"SELECT reason_code FROM {s}.refused_records WHERE kafka_offset = $1", offset)
        taken = await conn.fetchval(
            f"SELECT count(*) FROM {s}.incidents WHERE record_id = $1",
            f"PROP-REC-{fx.prepared}")
    event(f"refused {refused}" if refused else f"taken {taken}")
    assert refused is None or taken == 0
    # The next valid record, right behind it, becomes an incident.
    await fx.new_incident(f"PROP-NEXT-{fx.prepared}", unit="tt-loc-ninh")
