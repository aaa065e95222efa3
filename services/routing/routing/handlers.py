"""Orchestration: load state, ask the domain, write state + audit + outbox in one transaction.

No broker code here: subscribers hand over plain `Inbound` records, so these
handlers can be driven by tests and by any transport.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import asyncpg
from ioc_shared.calendar_vn import WorkingCalendar
from ioc_shared.commands import bounded_text, command_id_of, verified_sender
from ioc_shared.contracts.envelope import Envelope, EnvelopeHead, deterministic_event_id
from ioc_shared.contracts.headers import H_PRINCIPAL, H_PRODUCER, H_SIGNATURE
from ioc_shared.contracts.hygiene import HygieneError, loads_strict
from ioc_shared.contracts.topics import canonical_topic
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.outbox import enqueue_many
from ioc_shared.platform.telemetry import context_of, start_hop
from ioc_shared.registry import Action, Registry
from ioc_shared.serialized import current_trace
from opentelemetry import trace
from opentelemetry.trace import Link
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from routing.domain.commands import Command, parse_command, screen_command
from routing.domain.disputes import (
    DISPUTE_TYPE,
    DISPUTE_VERB,
    DisputeCommand,
    ReadRecord,
    admit,
    open_dispute,
    parse_dispute,
    provenance,
)
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
from routing.domain.reasons import (
    DISPUTE_EXISTS,
    DISPUTE_OPENED,
    STATE_NAMES,
    Reason,
    Rejection,
    accepted_message,
    dispute_message,
    reject,
)
from routing.domain.states import Actor, State, Verb
from routing.positions import PositionReader
from routing.publishing import Effects, RoutingTopics, command_result, unauthenticated_answer
from routing.repository import CommandReceipt, DuplicateQuery, RefusedRecord, RoutingRepository

log = get_logger(__name__)
tracer = trace.get_tracer("routing")

RECORD_ACCEPTED = "ingest.record.accepted"
INTAKE_CONSUMER = "routing-intake"
COMMAND_CONSUMER = "routing-commands"
# Kafka header ingest sets on canonical records (ingest's side of the contract).
PRODUCER_HEADER = H_PRODUCER
CANONICAL_PRODUCER = "ingest"


@contextlib.contextmanager
def in_trace_of(name: str, traceparent: str | None,
                attributes: dict[str, str] | None = None) -> Iterator[None]:
    """A span child of `traceparent` (an incident's trace) with a link to the current span
    (what started the work: a command, a timer round); without one, the current span goes on."""
    parent = context_of(traceparent)
    if parent is None:
        yield
        return
    here = trace.get_current_span().get_span_context()
    with tracer.start_as_current_span(name, context=parent, attributes=attributes,
                                      links=[Link(here)] if here.is_valid else ()):
        yield


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
    # The service's metrics registry (its /metrics); a private one if not given.
    metrics: CollectorRegistry | None = None
    # Reads a disputed record at its position (None, a wiring fault: a dispute fails, parked).
    positions: PositionReader | None = None

    @cached_property
    def refused(self) -> Counter:
        """Inputs refused as unusable, by input and reason (commands also get an answer)."""
        return Counter("routing_refused_inputs", "Inputs refused at routing's door",
                       ["input", "reason"], registry=self.metrics or CollectorRegistry())

    def count_refused(self, input: str, reason: str) -> None:
        """One input refused with `reason`: routing's counter and the kit's
        `ioc_messages_rejected_total{service="routing"}`."""
        self.refused.labels(input, reason).inc()
        bus_metrics(self.metrics).rejected.labels("routing", reason).inc()

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


def _head(doc: Any) -> EnvelopeHead | None:
    """The envelope head of a decoded document (`EnvelopeHead.read` without parsing again)."""
    if not isinstance(doc, dict):
        return None
    try:
        correlation = doc.get("correlation_id")
        head = EnvelopeHead(uuid.UUID(doc["event_id"]), doc["type"], doc["source_unit"],
                            uuid.UUID(correlation) if correlation is not None else None,
                            doc.get("payload", {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not (isinstance(head.type, str) and isinstance(head.source_unit, str)
            and isinstance(head.payload, dict)):
        return None
    return head


class IntakeHandler:
    """Canonical incident records -> incidents, one transaction per batch.

    Only ingest writes canonical topics (the broker's ACL: ingest's principal alone may
    WRITE `ioc.data.*`); inside, a record must carry `ioc-producer: ingest`, be strict
    JSON with storable text, come from a unit that may publish its dataset, on that
    dataset's topic. Anything else is refused: an internal error (logged without its
    content, counted, kept in `refused_records`), never a stuck partition.
    """

    def __init__(self, core: RoutingCore) -> None:
        self.core = core
        namespace = core.topics.namespace
        self._dataset_of_topic = {
            (f"{namespace}." if namespace else "") + canonical_topic(d).name: d
            for d in core.org.incident_datasets}

    def _refuse(self, record: Inbound, code: str, detail: str,
                env: EnvelopeHead | None = None) -> RefusedRecord:
        return RefusedRecord(record.topic, record.partition, record.offset, code,
                             bounded_text(detail, 300) or "",
                             env.event_id if env else None,
                             bounded_text(env.source_unit, 100) if env else None)

    def _parse(self, record: Inbound) -> _Arrival | RefusedRecord | None:
        if record.headers.get(PRODUCER_HEADER) != CANONICAL_PRODUCER:
            return self._refuse(record, "unknown_producer",
                                f"header {PRODUCER_HEADER} is not '{CANONICAL_PRODUCER}'")
        try:
            doc = loads_strict(record.value)
        except HygieneError as exc:
            return self._refuse(record, exc.code, exc.path)
        env = _head(doc)
        if env is None:
            return self._refuse(record, "not_an_envelope", "not an envelope")
        if env.type != RECORD_ACCEPTED:
            return None
        dataset = env.payload.get("dataset")
        if dataset != self._dataset_of_topic.get(record.topic):
            return self._refuse(record, "dataset_mismatch",
                                "payload.dataset is not the dataset of the topic", env)
        assert isinstance(dataset, str)
        registry = self.core.registry
        if env.source_unit not in registry.units or not registry.may(
                env.source_unit, dataset, Action.PUBLISH):
            return self._refuse(record, "source_not_allowed",
                                "source_unit may not publish this dataset", env)
        body = env.payload.get("record")
        if not isinstance(body, dict):
            return self._refuse(record, "unusable_record", "payload.record is not an object", env)
        try:
            incident = incident_from_record(dataset, env.source_unit, body,
                                            registry.datasets[dataset].record_id_field)
        except RecordError as exc:
            return self._refuse(record, exc.code, exc.detail, env)
        return _Arrival(record, env, incident)

    async def _record_refused(self, refused: list[RefusedRecord]) -> None:
        core = self.core
        async with core.pool.acquire() as conn, conn.transaction():
            new = await core.repo.record_refused(conn, refused)
        for r in refused:
            if (r.topic, r.partition, r.offset) not in new:
                continue   # a redelivery: logged and counted the first time
            core.count_refused("canonical-record", r.reason_code)
            log.error("intake: canonical record refused (internal error: only ingest's "
                      "validated records belong on this topic)", topic=r.topic,
                      partition=r.partition, offset=r.offset,
                      event_id=str(r.event_id) if r.event_id else None,
                      source_unit=r.source_unit, reason=r.reason_code, detail=r.detail)

    async def handle_batch(self, records: Sequence[Inbound]) -> int:
        """Returns how many incidents were created."""
        arrivals: dict[uuid.UUID, _Arrival] = {}
        refused: list[RefusedRecord] = []
        for record in records:
            arrival = self._parse(record)
            if isinstance(arrival, RefusedRecord):
                refused.append(arrival)
            elif arrival is not None:
                arrivals.setdefault(arrival.envelope.event_id, arrival)
        if refused:
            await self._record_refused(refused)
        if not arrivals:
            return 0
        core = self.core
        ctx = core.context()
        effects = core.effects(ctx.now)
        async with core.pool.acquire() as conn, conn.transaction():
            # Round trips are the cost of a batch: BEGIN; claim + load; all the writes with
            # the duplicate-check locks; the candidates; the flags, if any; COMMIT.
            fresh, existing = await core.repo.claim_and_load(
                conn, INTAKE_CONSUMER,
                [(eid, a.incident.record_key) for eid, a in arrivals.items()])
            todo = [a for eid, a in arrivals.items() if eid in fresh]
            if not todo:
                return 0
            primary_ids = {i.primary_id for i in existing.values() if i.primary_id}
            primaries = await core.repo.load_incidents(conn, primary_ids) if primary_ids else {}
            created: list[_Arrival] = []
            traces: dict[str, str] = {}   # new incident -> the trace its later steps continue
            system = core.system
            for arrival in todo:
                incident = arrival.incident
                hop = start_hop(tracer, "routing.intake", arrival.record.headers)
                # Only the publishing unit's own record: record ids are per unit.
                known = existing.get(incident.record_key)
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
                traces[incident.id] = hop.headers["traceparent"]
                existing[incident.record_key] = incident
                created.append(arrival)
            located = [a for a in created if a.incident.location is not None]
            # The duplicate-check locks come last, with the bulk of the writes: only the
            # candidate search, the few flags and the commit run under them.
            versions = await core.repo.write_intake(
                conn, [a.incident for a in created], ctx.now, effects.due, effects.audit,
                effects.messages, {a.incident.category for a in located}, traces)
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
    """Signed commands from units and operators -> transitions, always answered, every one
    recorded in `commands` with its outcome."""

    def __init__(self, core: RoutingCore) -> None:
        self.core = core

    async def handle(self, record: Inbound) -> None:
        """In the span of the command's consumption (FastStream's, in the sender's trace);
        a decision on an incident moves into the incident's trace (`_execute`)."""
        core = self.core
        effects = core.effects()
        principal_id = record.headers.get(H_PRINCIPAL)
        principal = verified_sender(core.registry, principal_id, record.headers.get(H_SIGNATURE),
                                    record.value)
        # Text that cannot be stored or shown safely is refused before anything reads it.
        doc, problem = screen_command(record.value)
        env: Envelope | None = None
        if doc is not None and problem is None:
            try:
                env = Envelope.model_validate(doc)
            except ValidationError:
                env = None
        received = _Received(record, doc, env, principal.id if principal else None,
                           bounded_text(principal_id, 100))
        if principal is None:
            # Answered to the IOC's operators only: never into the feed of the unit the
            # sender claims to be (anyone who can write the commands topic could).
            log.warning("command: unauthenticated", claimed_principal=received.claimed_principal,
                        topic=record.topic, partition=record.partition, offset=record.offset)
            await self._refuse(received, reject(Reason.UNAUTHENTICATED), None, effects)
            return
        actor = Actor(principal.id, principal.unit, frozenset(principal.roles))
        if problem is not None:
            parsed: Command | Rejection = problem
        elif env is None:
            parsed = reject(Reason.MALFORMED, "không phải một envelope hợp lệ")
        elif env.type == DISPUTE_TYPE:
            dispute = parse_dispute(env.payload)
            if not isinstance(dispute, Rejection):
                await self._dispute(dispute, actor, env, effects, received)
                return
            parsed = dispute
        else:
            parsed = parse_command(env.type, env.subject, env.payload)
        if isinstance(parsed, Rejection):
            log.info("command refused", principal=actor.principal, reason=parsed.reason.value,
                     topic=record.topic, partition=record.partition, offset=record.offset)
            await self._refuse(received, parsed, actor.unit, effects)
            return
        assert env is not None
        await self._execute(parsed, actor, env, effects, received)

    async def _refuse(self, received: _Received, no: Rejection, unit: str | None,
                      effects: Effects) -> None:
        """Answer a command refused before any decision, and record it (once per record).
        `unit` None: the sender is not authenticated; the answer goes to the operators."""
        core = self.core
        if unit is None:
            r = received.record
            unauthenticated_answer(effects, cause_id=received.cause_id, origin_topic=r.topic,
                                   origin_partition=r.partition, origin_offset=r.offset,
                                   reason_code=no.reason.value, message=no.message,
                                   claimed_principal=received.claimed_principal,
                                   command_id=received.command_id, verb=received.verb,
                                   incident_id=received.incident_id)
        else:
            command_result(effects, unit=unit, cause_id=received.cause_id, cause=received.env,
                           status="rejected", reason_code=no.reason.value, message=no.message,
                           command_id=received.command_id, verb=received.verb,
                           incident_id=received.incident_id, principal=received.principal)
        async with core.pool.acquire() as conn, conn.transaction():
            if not await core.repo.claim_events(conn, COMMAND_CONSUMER, [received.cause_id]):
                return   # a redelivery: answered and recorded the first time
            await core.repo.record_command_receipt(conn, received.receipt("rejected",
                                                                         no.reason.value))
            await enqueue_many(conn, core.repo.s, effects.messages)
        core.count_refused("command", no.reason.value)

    async def _execute(self, cmd: Command, actor: Actor, env: Envelope, effects: Effects,
                       received: _Received) -> None:
        core, repo = self.core, self.core.repo
        ctx = core.context()
        # Claimed per principal: an envelope id chosen by one sender cannot shadow another's.
        claim_id = deterministic_event_id("command", actor.principal, env.event_id)
        own_trace = current_trace()   # the answer stays in the sender's trace

        def answer(status: str, reason: Reason | None, message: str, state: str | None = None,
                   duplicate: bool = False, cause_id: uuid.UUID = claim_id) -> None:
            command_result(effects, unit=actor.unit, cause_id=cause_id, cause=env,
                           status=status, reason_code=reason.value if reason else None,
                           message=message, command_id=cmd.command_id, verb=cmd.verb.value,
                           incident_id=cmd.incident_id, principal=actor.principal, state=state,
                           duplicate=duplicate, trace=own_trace)

        # The decision belongs to the incident's trace (so one trace follows the report to
        # its closure), linked to the command's own.
        incident_trace = (await repo.traceparents(core.pool, [cmd.incident_id])).get(
            cmd.incident_id)
        with in_trace_of(f"routing.command {cmd.verb.value}", incident_trace,
                         {"ioc.incident_id": cmd.incident_id, "ioc.principal": actor.principal}):
            await self._decide(cmd, actor, env, effects, ctx, claim_id, received, answer)

    async def _decide(self, cmd: Command, actor: Actor, env: Envelope, effects: Effects,
                      ctx: Context, claim_id: uuid.UUID, received: _Received,
                      answer: Callable[..., None]) -> None:
        core, repo = self.core, self.core.repo
        async with core.pool.acquire() as conn, conn.transaction():
            if not await self._claim(conn, actor, cmd.command_id, claim_id, received,
                                     effects, answer):
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
                core.count_refused("command", result.reason.value)
                await enqueue_many(conn, repo.s, effects.messages)
                return
            assert incident is not None
            await repo.update_incident(conn, incident, ctx.now)
            effects.record(result, incident, seed=claim_id, cause=env)
            await self._relay_to_duplicates(conn, incident, result.events, effects, claim_id,
                                            env)
            if cmd.verb is Verb.ANSWER_SURVEY and cmd.score is not None:
                await repo.record_survey(conn, incident.id, incident.last_unit, cmd.score,
                                         cmd.comment, actor.principal, ctx.now)
            answer("accepted", None, accepted_message(cmd.verb), incident.state.value)
            await repo.record_command(conn, actor.principal, cmd.command_id, cmd.incident_id,
                                      cmd.verb.value, "accepted", None)
            await core.write(conn, effects)
        log.info("command accepted", verb=cmd.verb.value, incident_id=cmd.incident_id,
                 principal=actor.principal, state=incident.state.value)

    async def _claim(self, conn: asyncpg.Connection, actor: Actor, command_id: uuid.UUID,
                     claim_id: uuid.UUID, received: _Received, effects: Effects,
                     answer: Callable[..., None]) -> bool:
        """Claim the decision of this command; False (answered, recorded) when it was
        handled before: a redelivery, a copy at another offset, a command id decided."""
        repo = self.core.repo
        first = await repo.claim_events(conn, COMMAND_CONSUMER, [claim_id])
        if not first and await repo.command_recorded_at(conn, received.origin):
            return False  # a redelivery of this very record: answered and recorded then
        # A copy of an envelope already handled (at another offset), or a command id
        # already decided: answered with the earlier decision, recorded as a repeat.
        if not first or not await repo.claim_command(conn, actor.principal, command_id,
                                                     claim_id, received.origin):
            earlier = await repo.command_status(conn, actor.principal, command_id)
            no = reject(Reason.DUPLICATE_COMMAND)
            status = earlier[0] if earlier else "rejected"
            cause_id = claim_id if first else received.cause_id
            answer(status, Reason.DUPLICATE_COMMAND, no.message, duplicate=True,
                   cause_id=cause_id)
            await repo.record_command_receipt(conn, received.receipt(
                status, Reason.DUPLICATE_COMMAND.value, cause_id=cause_id, raw=False))
            await enqueue_many(conn, repo.s, effects.messages)
            return False
        return True

    async def _dispute(self, cmd: DisputeCommand, actor: Actor, env: Envelope,
                       effects: Effects, received: _Received) -> None:
        """Đ4.5: open an incident for the owner of the disputed record, the owner read from
        the record at the named position (its provenance), never from the command."""
        core, repo = self.core, self.core.repo
        ctx = core.context()
        claim_id = deterministic_event_id("command", actor.principal, env.event_id)
        incident_id = cmd.incident_id(actor)
        dataset = core.registry.datasets.get(cmd.dataset)
        may = dataset is not None and any(
            core.registry.may(actor.unit, cmd.dataset, action, ctx.now)
            for action in (Action.READ, Action.RECEIVE))
        verdict: Any = admit(cmd, actor, dataset_known=dataset is not None, may_receive=may,
                             canonical_topic=core.topics.canonical(cmd.dataset))
        if verdict is None:
            assert dataset is not None
            verdict = provenance(cmd, await self._read(cmd), dataset.record_id_field,
                                 core.org.unit_ids)

        def answer(status: str, reason: Reason | None, message: str, state: str | None = None,
                   duplicate: bool = False, cause_id: uuid.UUID = claim_id) -> None:
            command_result(effects, unit=actor.unit, cause_id=cause_id, cause=env,
                           status=status, reason_code=reason.value if reason else None,
                           message=message, command_id=cmd.command_id, verb=DISPUTE_VERB,
                           incident_id=incident_id if status == "accepted" else None,
                           principal=actor.principal, state=state, duplicate=duplicate)

        async with core.pool.acquire() as conn, conn.transaction():
            if not await self._claim(conn, actor, cmd.command_id, claim_id, received,
                                     effects, answer):
                return
            if isinstance(verdict, Rejection):
                answer("rejected", verdict.reason, verdict.message)
                await repo.record_command(conn, actor.principal, cmd.command_id, None,
                                          DISPUTE_VERB, "rejected", verdict.reason.value)
                await enqueue_many(conn, repo.s, effects.messages)
                log.info("dispute refused", principal=actor.principal, dataset=cmd.dataset,
                         position=cmd.position, reason=verdict.reason.value)
                core.count_refused("command", verdict.reason.value)
                return
            existing = (await repo.load_incidents(conn, [incident_id], for_update=True)
                        ).get(incident_id)
            if existing is not None:
                # The same principal disputing the same record again: the incident it has.
                answer("accepted", None, dispute_message(
                    DISPUTE_EXISTS, incident=incident_id,
                    state=STATE_NAMES[existing.state]), existing.state.value)
                await repo.record_command(conn, actor.principal, cmd.command_id, incident_id,
                                          DISPUTE_VERB, "accepted", None)
                await enqueue_many(conn, repo.s, effects.messages)
                return
            incident, outcome = open_dispute(cmd, actor, verdict, ctx, core.system)
            await repo.insert_incident(conn, incident, ctx.now, current_trace().get("traceparent"))
            effects.record(outcome, incident, seed=claim_id, cause=env)
            answer("accepted", None, dispute_message(
                DISPUTE_OPENED, incident=incident.id,
                unit=core.org.name_of(incident.assigned_unit or "")), incident.state.value)
            await repo.record_command(conn, actor.principal, cmd.command_id, incident.id,
                                      DISPUTE_VERB, "accepted", None)
            await core.write(conn, effects)
        log.info("dispute opened", incident_id=incident.id, principal=actor.principal,
                 dataset=cmd.dataset, position=cmd.position, unit=incident.assigned_unit)

    async def _read(self, cmd: DisputeCommand) -> ReadRecord | None:
        positions = self.core.positions
        if positions is None:   # wiring fault: fail (and park) rather than refuse wrongly
            raise RuntimeError("routing: no position reader to check a disputed record")
        found = await positions.read(cmd.topic, cmd.partition, cmd.offset)
        if found is None:
            return None
        try:
            doc = loads_strict(found.value)
        except HygieneError:
            doc = None
        return ReadRecord(found.headers.get(PRODUCER_HEADER), doc)

    async def _relay_to_duplicates(self, conn: asyncpg.Connection, incident: Incident,
                                   events: Sequence[Any], effects: Effects, seed: uuid.UUID,
                                   env: Envelope) -> None:
        if incident.state is State.MERGED:
            return
        duplicates = await self.core.repo.merged_into(conn, incident.id)
        for duplicate in duplicates:
            for i, event in enumerate(events):
                if event.incident_id == incident.id:
                    effects.relay_status(duplicate, incident, event, seed=(seed, i),
                                         cause=env)


# Kept with a refused command: bounded, and raw bytes only where nothing was decided.
_RAW_LIMIT = 16 * 1024


@dataclass(frozen=True, slots=True)
class _Received:
    """A command record as received: what can be said of it before (or without) a decision."""

    record: Inbound
    doc: dict[str, Any] | None     # strict JSON, possibly with forbidden characters
    env: Envelope | None           # only when the document passed every check
    principal: str | None          # verified
    claimed_principal: str | None  # the header, bounded and cleaned

    @property
    def cause_id(self) -> uuid.UUID:
        # The record's position, not an id the sender chose: an envelope id cannot be
        # reused to shadow another command.
        return self.record.position_id

    @property
    def origin(self) -> str:
        return f"{self.record.topic}/{self.record.partition}/{self.record.offset}"

    @property
    def command_id(self) -> uuid.UUID | None:
        return command_id_of(self.doc.get("payload")) if self.doc is not None else None

    @property
    def verb(self) -> str | None:
        kind = self.doc.get("type") if self.doc is not None else None
        return bounded_text(kind.rsplit(".", 1)[-1], 40) if isinstance(kind, str) else None

    @property
    def incident_id(self) -> str | None:
        subject = self.doc.get("subject") if self.doc is not None else None
        return bounded_text(subject, 200) if isinstance(subject, str) else None

    def receipt(self, status: str, reason_code: str, *, cause_id: uuid.UUID | None = None,
                raw: bool = True) -> CommandReceipt:
        return CommandReceipt(
            status=status, reason_code=reason_code, cause_id=cause_id or self.cause_id,
            origin=self.origin, principal=self.principal,
            claimed_principal=self.claimed_principal, command_id=self.command_id,
            incident_id=self.incident_id, verb=self.verb,
            raw=self.record.value[:_RAW_LIMIT] if raw else None)
