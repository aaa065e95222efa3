"""Orchestration: load state, ask the domain, write state + audit + outbox in one transaction.

No broker code here: subscribers hand over plain `Inbound` records, so these
handlers can be driven by tests and by any transport.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from ioc_shared.contracts.envelope import Envelope, EnvelopeHead, deterministic_event_id
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.outbox import enqueue_many
from ioc_shared.platform.telemetry import start_hop
from ioc_shared.registry import Registry
from opentelemetry import trace
from pydantic import ValidationError

from routing.domain.calendar import WorkingCalendar
from routing.domain.commands import Command, command_id_of, parse_command
from routing.domain.geo import CandidateIndex, DuplicateCandidate, bounding_box, cells_of_box
from routing.domain.intake import (
    RecordError,
    flag_duplicates,
    incident_from_record,
    receive,
    record_updated,
)
from routing.domain.lifecycle import decide
from routing.domain.model import Context, Incident
from routing.domain.organisation import Organisation
from routing.domain.policy import RoutingPolicy
from routing.domain.reasons import Reason, Rejection, accepted_message, reject
from routing.domain.states import Actor, State, Verb
from routing.publishing import Effects, RoutingTopics, command_result
from routing.repository import DuplicateQuery, RoutingRepository

log = get_logger(__name__)
tracer = trace.get_tracer("routing")

RECORD_ACCEPTED = "ingest.record.accepted"
INTAKE_CONSUMER = "routing-intake"
COMMAND_CONSUMER = "routing-commands"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One Kafka record as the handlers see it."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: dict[str, str]

    @property
    def position_id(self) -> uuid.UUID:
        """Stable id of this record, for answers to input that has no event id of its own."""
        event_id: uuid.UUID = deterministic_event_id(self.topic, self.partition, self.offset)
        return event_id


@dataclass
class RoutingCore:
    """What every handler needs; built once in `routing.bootstrap`."""

    pool: asyncpg.Pool
    repo: RoutingRepository
    topics: RoutingTopics
    policy: RoutingPolicy
    calendar: WorkingCalendar
    org: Organisation
    registry: Registry
    instance_id: str
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @property
    def system(self) -> Actor:
        return Actor("system:routing", self.org.ioc_unit, frozenset({"system"}))

    def context(self) -> Context:
        return Context(self.policy, self.calendar, self.org, self.clock())

    def effects(self, at: datetime | None = None) -> Effects:
        """Effects of one decision; `at` (its time) is stamped on every envelope."""
        return Effects(self.topics, self.org.ioc_unit, self.policy.survey, at=at)

    async def write(self, conn: asyncpg.Connection, effects: Effects) -> None:
        """Audit rows, due work and outbox messages of `effects`, in the caller's transaction."""
        if effects.due:
            await self.repo.insert_due_work(conn, effects.due)
        await self.repo.insert_transitions_and_outbox(conn, effects.audit, effects.messages)


@dataclass(slots=True)
class _Arrival:
    record: Inbound
    envelope: EnvelopeHead
    incident: Incident


class IntakeHandler:
    """Canonical incident records -> incidents, one transaction per batch."""

    def __init__(self, core: RoutingCore) -> None:
        self.core = core

    def _parse(self, record: Inbound) -> _Arrival | None:
        env = EnvelopeHead.read(record.value)
        if env is None:
            log.warning("intake: not an envelope, skipped", topic=record.topic,
                        partition=record.partition, offset=record.offset)
            return None
        if env.type != RECORD_ACCEPTED:
            return None
        dataset = str(env.payload.get("dataset", ""))
        body = env.payload.get("record")
        if dataset not in self.core.org.incident_datasets or not isinstance(body, dict):
            log.warning("intake: not an incident record, skipped", event_id=str(env.event_id),
                        dataset=dataset)
            return None
        id_field = self.core.registry.datasets[dataset].record_id_field
        try:
            incident = incident_from_record(dataset, env.source_unit, body, id_field)
        except RecordError as exc:
            log.warning("intake: record unusable, skipped", event_id=str(env.event_id),
                        dataset=dataset, problem=str(exc))
            return None
        return _Arrival(record, env, incident)

    async def handle_batch(self, records: Sequence[Inbound]) -> int:
        """Returns how many incidents were created."""
        arrivals: dict[uuid.UUID, _Arrival] = {}
        for record in records:
            arrival = self._parse(record)
            if arrival is not None:
                arrivals.setdefault(arrival.envelope.event_id, arrival)
        if not arrivals:
            return 0
        core = self.core
        ctx = core.context()
        effects = core.effects(ctx.now)
        async with core.pool.acquire() as conn, conn.transaction():
            # Round trips are the cost of a batch: BEGIN; claim + load; all the writes with
            # the duplicate-check locks; the candidates; the flags, if any; COMMIT.
            fresh, existing = await core.repo.claim_and_load(
                conn, INTAKE_CONSUMER, [(eid, a.incident.id) for eid, a in arrivals.items()])
            todo = [a for eid, a in arrivals.items() if eid in fresh]
            if not todo:
                return 0
            primary_ids = {i.primary_id for i in existing.values() if i.primary_id}
            primaries = await core.repo.load_incidents(conn, primary_ids) if primary_ids else {}
            created: list[_Arrival] = []
            system = core.system
            for arrival in todo:
                incident = arrival.incident
                hop = start_hop(tracer, "routing.intake", arrival.record.headers)
                known = existing.get(incident.id)
                if known is not None:
                    outcome = record_updated(known, incident, ctx, system,
                                             primaries.get(known.primary_id or ""))
                    effects.record(outcome, known, seed=arrival.envelope.event_id,
                                   cause=arrival.envelope, trace=hop.headers)
                    hop.end()
                    continue
                outcome = receive(incident, ctx, system)
                effects.record(outcome, incident, seed=arrival.envelope.event_id,
                               cause=arrival.envelope, trace=hop.headers)
                hop.end()
                existing[incident.id] = incident
                created.append(arrival)
            located = [a for a in created if a.incident.location is not None]
            # The duplicate-check locks come last, with the bulk of the writes: only the
            # candidate search, the few flags and the commit run under them.
            versions = await core.repo.write_intake(
                conn, [a.incident for a in created], ctx.now, effects.due, effects.audit,
                effects.messages, {a.incident.category for a in located})
            flags = core.effects(ctx.now)
            await self._flag_duplicates(conn, located, ctx, flags)
            await core.repo.insert_transitions_and_outbox(conn, flags.audit, flags.messages)
        core.repo.versions_committed(versions)
        return len(created)

    async def _flag_duplicates(self, conn: asyncpg.Connection, located: list[_Arrival],
                               ctx: Context, effects: Effects) -> None:
        """Flag likely duplicates, serialised per category (effects added to `effects`).

        Concurrent batches (two consumers, two instances) cannot see each other's
        uncommitted incidents; a transaction-scoped lock per category (taken with the
        batch's writes, held until commit) makes the later batch wait for the earlier
        one's commit, so the candidate query that follows sees those incidents and flags
        the pair. Only the tail of the transaction runs under the lock.
        """
        if not located:
            return
        core = self.core
        nearby = CandidateIndex(ctx.policy.duplicates.radius_m)
        for candidate in await self._candidates(conn, located, ctx.policy):
            nearby.add(candidate)
        later = {a.incident.id for a in located}
        for arrival in located:
            incident = arrival.incident
            later.discard(incident.id)
            assert incident.location is not None
            # Before this one: committed incidents and those earlier in this batch.
            before = [c for c in nearby.near(incident.category, incident.location)
                      if c.incident_id != incident.id and c.incident_id not in later]
            outcome = flag_duplicates(incident, ctx, core.system, before)
            if outcome.events:
                hop = start_hop(tracer, "routing.duplicates", arrival.record.headers)
                effects.record(outcome, incident, seed=(arrival.envelope.event_id, "dup"),
                               cause=arrival.envelope, trace=hop.headers)
                hop.end()

    async def _candidates(self, conn: asyncpg.Connection, arrivals: list[_Arrival],
                          policy: RoutingPolicy) -> list[DuplicateCandidate]:
        window = policy.duplicates.window.wall_clock()
        queries = []
        for a in arrivals:
            i = a.incident
            if i.location is None:
                continue
            min_lat, min_lon, max_lat, max_lon = bounding_box(i.location, policy.duplicates.radius_m)
            queries.append(DuplicateQuery(i.category, min_lat, min_lon, max_lat, max_lon,
                                          i.reported_at - window, i.reported_at + window,
                                          tuple(cells_of_box(min_lat, min_lon, max_lat, max_lon))))
        return await self.core.repo.duplicate_candidates(conn, queries, limit=20)


class CommandHandler:
    """Signed commands from units and operators -> transitions, always answered."""

    def __init__(self, core: RoutingCore) -> None:
        self.core = core

    async def handle(self, record: Inbound) -> None:
        core = self.core
        effects = core.effects()
        principal_id = record.headers.get(H_PRINCIPAL)
        signature = record.headers.get(H_SIGNATURE)
        principal = (core.registry.verify_signature(principal_id, record.value, signature)
                     if principal_id and signature else None)
        env: Envelope | None
        try:
            env = Envelope.from_bytes(record.value)
        except ValidationError:
            env = None
        cause_id = env.event_id if env is not None else record.position_id
        claimed = core.registry.principals.get(principal_id or "")
        command_id = command_id_of(env.payload) if env else None
        verb = env.type.rsplit(".", 1)[-1] if env else None
        incident_id = env.subject if env else None
        if principal is None:
            # Answer to the unit the sender claims to be: it learns nothing but the refusal.
            no = reject(Reason.UNAUTHENTICATED)
            log.warning("command: unauthenticated", claimed_principal=principal_id,
                        topic=record.topic, partition=record.partition, offset=record.offset)
            command_result(effects, unit=claimed.unit if claimed else "unknown", cause_id=cause_id,
                           cause=env, status="rejected", reason_code=no.reason.value,
                           message=no.message, command_id=command_id, verb=verb,
                           incident_id=incident_id, principal=None)
            await self._write_answer_only(effects, cause_id)
            return
        actor = Actor(principal.id, principal.unit, frozenset(principal.roles))
        parsed = (parse_command(env.type, env.subject, env.payload) if env is not None
                  else reject(Reason.MALFORMED, "không phải một envelope hợp lệ"))
        if isinstance(parsed, Rejection):
            command_result(effects, unit=actor.unit, cause_id=cause_id, cause=env,
                           status="rejected", reason_code=parsed.reason.value,
                           message=parsed.message, command_id=command_id, verb=verb,
                           incident_id=incident_id, principal=actor.principal)
            await self._write_answer_only(effects, cause_id)
            return
        assert env is not None
        await self._execute(parsed, actor, env, effects)

    async def _write_answer_only(self, effects: Effects, cause_id: uuid.UUID) -> None:
        async with self.core.pool.acquire() as conn, conn.transaction():
            if await self.core.repo.claim_events(conn, COMMAND_CONSUMER, [cause_id]):
                await enqueue_many(conn, self.core.repo.s, effects.messages)

    async def _execute(self, cmd: Command, actor: Actor, env: Envelope, effects: Effects) -> None:
        core, repo = self.core, self.core.repo
        ctx = core.context()

        def answer(status: str, reason: Reason | None, message: str, state: str | None = None,
                   duplicate: bool = False) -> None:
            command_result(effects, unit=actor.unit, cause_id=env.event_id, cause=env,
                           status=status, reason_code=reason.value if reason else None,
                           message=message, command_id=cmd.command_id, verb=cmd.verb.value,
                           incident_id=cmd.incident_id, principal=actor.principal, state=state,
                           duplicate=duplicate)

        async with core.pool.acquire() as conn, conn.transaction():
            if not await repo.claim_events(conn, COMMAND_CONSUMER, [env.event_id]):
                return  # redelivery of a command already answered
            if not await repo.claim_command(conn, actor.principal, cmd.command_id):
                earlier = await repo.command_status(conn, actor.principal, cmd.command_id)
                no = reject(Reason.DUPLICATE_COMMAND)
                answer(earlier[0] if earlier else "rejected", Reason.DUPLICATE_COMMAND, no.message,
                       duplicate=True)
                await enqueue_many(conn, repo.s, effects.messages)
                return
            ids = [cmd.incident_id] + ([cmd.primary_id] if cmd.primary_id else [])
            loaded = await repo.load_incidents(conn, ids, for_update=True)
            incident = loaded.get(cmd.incident_id)
            if incident is None:
                result: Any = reject(Reason.UNKNOWN_INCIDENT, cmd.incident_id)
            else:
                primary = loaded.get(cmd.primary_id) if cmd.primary_id else None
                result = decide(incident, cmd, actor, ctx, primary)
            if isinstance(result, Rejection):
                answer("rejected", result.reason, result.message,
                       incident.state.value if incident else None)
                await repo.record_command(conn, actor.principal, cmd.command_id, cmd.incident_id,
                                          cmd.verb.value, "rejected", result.reason.value)
                log.info("command rejected", verb=cmd.verb.value, incident_id=cmd.incident_id,
                         principal=actor.principal, reason=result.reason.value)
                await enqueue_many(conn, repo.s, effects.messages)
                return
            assert incident is not None
            await repo.update_incident(conn, incident, ctx.now)
            effects.record(result, incident, seed=env.event_id, cause=env)
            await self._relay_to_duplicates(conn, incident, result.events, effects, env)
            if cmd.verb is Verb.ANSWER_SURVEY and cmd.score is not None:
                await repo.record_survey(conn, incident.id, incident.last_unit, cmd.score,
                                         cmd.comment, actor.principal, ctx.now)
            answer("accepted", None, accepted_message(cmd.verb), incident.state.value)
            await repo.record_command(conn, actor.principal, cmd.command_id, cmd.incident_id,
                                      cmd.verb.value, "accepted", None)
            await core.write(conn, effects)
        log.info("command accepted", verb=cmd.verb.value, incident_id=cmd.incident_id,
                 principal=actor.principal, state=incident.state.value)

    async def _relay_to_duplicates(self, conn: asyncpg.Connection, incident: Incident,
                                   events: Sequence[Any], effects: Effects, env: Envelope) -> None:
        if incident.state is State.MERGED:
            return
        duplicates = await self.core.repo.merged_into(conn, incident.id)
        for duplicate in duplicates:
            for i, event in enumerate(events):
                if event.incident_id == incident.id:
                    effects.relay_status(duplicate, incident, event, seed=(env.event_id, i),
                                         cause=env)
