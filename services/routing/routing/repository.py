"""All SQL of the routing service. Callers own the transaction; nothing here commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from ioc_shared.platform.idempotency import claim_events
from ioc_shared.platform.outbox import OutboxMessage, notify_channel, outbox_insert

from routing.domain.deadlines import SHARED_SNAPSHOT_KEYS, DueWork
from routing.domain.geo import DuplicateCandidate, Point
from routing.domain.model import Dispute, Incident, IncidentEvent, RecordKey
from routing.domain.states import State

_INCIDENT_COLUMNS = (
    "id, dataset, record_id, source_unit, category, priority, commune, reported_at, title, lat, lon, "
    "reporter_ref, state, assigned_unit, last_unit, assignment_no, primary_id, policy, ack_due_at, "
    "resolve_due_at, survey_answered, created_at")


@dataclass(frozen=True, slots=True)
class DueRow:
    id: int
    incident_id: str
    assignment_no: int
    kind: str
    deadline: str
    step: int
    due_at: datetime
    # An IOC step's plan (None for unit deadlines) and whether a later entry of the
    # incident into an IOC waiting state superseded this row's sequence.
    plan: dict[str, Any] | None = None
    superseded: bool = False


@dataclass(frozen=True, slots=True)
class CommandReceipt:
    """A command answered without a decision of its own; text fields bounded and clean."""

    status: str
    reason_code: str
    cause_id: uuid.UUID
    origin: str
    principal: str | None = None
    claimed_principal: str | None = None
    command_id: uuid.UUID | None = None
    incident_id: str | None = None
    verb: str | None = None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class RefusedRecord:
    topic: str
    partition: int
    offset: int
    reason_code: str
    detail: str
    event_id: uuid.UUID | None = None
    source_unit: str | None = None


@dataclass(frozen=True, slots=True)
class DuplicateQuery:
    category: str
    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float
    reported_from: datetime
    reported_to: datetime
    cells: tuple[int, ...]  # routing.domain.geo.cells_of_box of the box


_SELECT_INCIDENTS = (
    "SELECT " + ", ".join(f"i.{c.strip()}" for c in _INCIDENT_COLUMNS.split(",")) +
    ", i.dispute, v.body AS shared_policy FROM {s}.incidents i "
    "LEFT JOIN {s}.policy_versions v ON v.version = i.policy->>'version' ")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _stored_policy(policy: dict[str, Any] | None) -> str | None:
    """The per-incident part of a snapshot; the shared part lives in policy_versions."""
    if policy is None:
        return None
    own = {k: v for k, v in policy.items() if k not in SHARED_SNAPSHOT_KEYS}
    return _dumps(own)


def _incident(row: asyncpg.Record) -> Incident:
    policy = _json(row["policy"])
    if policy is not None and row["shared_policy"] is not None:
        policy = {**_json(row["shared_policy"]), **policy}
    dispute = _json(row.get("dispute"))
    return Incident(
        id=row["id"], dataset=row["dataset"], record_id=row["record_id"],
        source_unit=row["source_unit"], category=row["category"], priority=row["priority"],
        commune=row["commune"], reported_at=row["reported_at"], title=row["title"],
        location=Point(row["lat"], row["lon"]) if row["lat"] is not None else None,
        reporter_ref=row["reporter_ref"], state=State(row["state"]),
        assigned_unit=row["assigned_unit"], last_unit=row["last_unit"],
        assignment_no=row["assignment_no"], primary_id=row["primary_id"],
        policy=policy,
        ack_due_at=row["ack_due_at"], resolve_due_at=row["resolve_due_at"],
        survey_answered=row["survey_answered"], created_at=row["created_at"],
        dispute=Dispute.from_data(dispute) if dispute is not None else None,
    )


def _incident_row(i: Incident, now: datetime) -> tuple[Any, ...]:
    """The incidents columns of `i`, in `_INCIDENT_COLUMNS` order, then updated_at (for a
    JSON row: the policy as an object, without the parts stored in policy_versions)."""
    policy = (None if i.policy is None
              else {k: v for k, v in i.policy.items() if k not in SHARED_SNAPSHOT_KEYS})
    return (i.id, i.dataset, i.record_id, i.source_unit, i.category, i.priority, i.commune,
            i.reported_at, i.title, i.location.lat if i.location else None,
            i.location.lon if i.location else None, i.reporter_ref, i.state.value,
            i.assigned_unit, i.last_unit, i.assignment_no, i.primary_id, policy,
            i.ack_due_at, i.resolve_due_at, i.survey_answered, i.created_at or now, now)


class RoutingRepository:
    def __init__(self, schema: str) -> None:
        self.s = schema
        # Policy versions known to be committed: saved once, not on every batch.
        self._versions: set[str] = set()

    def versions_committed(self, versions: Iterable[str]) -> None:
        """Call after the transaction that saved `versions` committed."""
        self._versions.update(versions)

    # --- idempotency ---------------------------------------------------------
    async def claim_events(self, conn: asyncpg.Connection, consumer: str,
                           event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Claim a batch of event ids in the caller's transaction; returns the new ones."""
        return await claim_events(conn, self.s, consumer, event_ids)

    async def claim_command(self, conn: asyncpg.Connection, principal: str,
                            command_id: uuid.UUID, cause_id: uuid.UUID | None = None,
                            origin: str | None = None) -> bool:
        """Claim the decision of (principal, command id); False if it was decided before."""
        row = await conn.fetchval(
            f"INSERT INTO {self.s}.commands (principal, command_id, status, cause_id, origin) "
            "VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
            principal, command_id, cause_id, origin)
        return row is not None

    async def record_command(self, conn: asyncpg.Connection, principal: str, command_id: uuid.UUID,
                             incident_id: str | None, verb: str | None, status: str,
                             reason_code: str | None) -> None:
        await conn.execute(
            f"UPDATE {self.s}.commands SET incident_id = $3, verb = $4, status = $5, "
            "reason_code = $6 WHERE principal = $1 AND command_id = $2 AND decided",
            principal, command_id, incident_id, verb, status, reason_code)

    async def record_command_receipt(self, conn: asyncpg.Connection, receipt: CommandReceipt) -> None:
        """A command answered without a decision of its own (refused at the door, or a
        repeat of a decided one): recorded with its outcome all the same."""
        r = receipt
        await conn.execute(
            f"INSERT INTO {self.s}.commands (principal, command_id, incident_id, verb, status, "
            "reason_code, decided, cause_id, claimed_principal, origin, raw) "
            "VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9, $10)",
            r.principal, r.command_id, r.incident_id, r.verb, r.status, r.reason_code,
            r.cause_id, r.claimed_principal, r.origin, r.raw)

    async def command_recorded_at(self, conn: asyncpg.Connection, origin: str) -> bool:
        """Whether the command record at `origin` (topic/partition/offset) was recorded."""
        return bool(await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {self.s}.commands WHERE origin = $1)", origin))

    async def command_status(self, conn: asyncpg.Connection, principal: str,
                             command_id: uuid.UUID) -> tuple[str, str | None] | None:
        row = await conn.fetchrow(
            f"SELECT status, reason_code FROM {self.s}.commands WHERE principal = $1 "
            "AND command_id = $2 AND decided", principal, command_id)
        return (row["status"], row["reason_code"]) if row else None

    async def record_refused(self, conn: asyncpg.Connection, refused: Sequence[RefusedRecord]
                             ) -> set[tuple[str, int, int]]:
        """Canonical records the intake refused; returns the positions new to the table
        (a redelivered one is there already)."""
        rows = await conn.fetch(
            f"INSERT INTO {self.s}.refused_records (topic, kafka_partition, kafka_offset, "
            "event_id, source_unit, reason_code, detail) "
            "SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::uuid[], $5::text[], "
            "$6::text[], $7::text[]) ON CONFLICT DO NOTHING "
            "RETURNING topic, kafka_partition, kafka_offset",
            [r.topic for r in refused], [r.partition for r in refused],
            [r.offset for r in refused], [r.event_id for r in refused],
            [r.source_unit for r in refused], [r.reason_code for r in refused],
            [r.detail for r in refused])
        return {(r["topic"], r["kafka_partition"], r["kafka_offset"]) for r in rows}

    # --- incidents -------------------------------------------------------------
    async def load_incidents(self, conn: asyncpg.Connection, ids: Iterable[str], *,
                             for_update: bool = False) -> dict[str, Incident]:
        lock = " ORDER BY i.id FOR UPDATE OF i" if for_update else ""
        rows = await conn.fetch(
            _SELECT_INCIDENTS.format(s=self.s) + f"WHERE i.id = ANY($1::text[]){lock}", list(ids))
        return {r["id"]: _incident(r) for r in rows}

    async def claim_and_load(self, conn: asyncpg.Connection, consumer: str,
                             arrivals: Sequence[tuple[uuid.UUID, RecordKey]]
                             ) -> tuple[set[uuid.UUID], dict[RecordKey, Incident]]:
        """`claim_events`, then the incidents (locked) of the records whose event was new,
        found by (source unit, dataset, record id), in one round trip: (new event ids,
        locked incidents by record key). The key, not the id, finds incidents recorded
        before ids were scoped to the unit."""
        rows = await conn.fetch(
            f"""WITH claimed AS (
                    INSERT INTO {self.s}.processed_events (consumer, event_id)
                    SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id),
                locked AS (
                    SELECT i.* FROM {self.s}.incidents i
                    WHERE i.dispute IS NULL AND (i.source_unit, i.dataset, i.record_id) IN (
                        SELECT a.source_unit, a.dataset, a.record_id
                        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[])
                             AS a(event_id, source_unit, dataset, record_id)
                        JOIN claimed c ON c.event_id = a.event_id)
                    ORDER BY i.id FOR UPDATE)
                SELECT (SELECT array_agg(event_id) FROM claimed) AS fresh,
                       {", ".join(f"i.{c.strip()}" for c in _INCIDENT_COLUMNS.split(","))},
                       v.body AS shared_policy
                FROM (SELECT 1) AS one LEFT JOIN locked i ON true
                LEFT JOIN {self.s}.policy_versions v ON v.version = i.policy->>'version'""",
            consumer, [e for e, _ in arrivals], [k[0] for _, k in arrivals],
            [k[1] for _, k in arrivals], [k[2] for _, k in arrivals])
        fresh = set(rows[0]["fresh"] or ()) if rows else set()
        found = (_incident(r) for r in rows if r["id"] is not None)
        return fresh, {i.record_key: i for i in found}

    async def write_intake(self, conn: asyncpg.Connection, incidents: Sequence[Incident],
                           now: datetime, due: Sequence[tuple[str, int, DueWork]],
                           audit: Sequence[tuple[uuid.UUID | str, IncidentEvent]],
                           messages: Sequence[OutboxMessage],
                           lock_categories: Iterable[str],
                           traces: Mapping[str, str] | None = None) -> list[str]:
        """Everything an intake batch writes, in one statement: new incidents (with the
        traceparent `traces` gives each, the trace its later steps continue) and their
        policy versions and due work, the audit rows, the outbox row and the relay's NOTIFY
        (sent at commit), then the duplicate-check locks of `lock_categories` (sorted: two
        batches cannot deadlock), held until commit. Returns the policy versions saved.

        Round trips are what a batch waits for, more so on a busy machine: rows travel as
        JSON arrays of arrays (asyncpg spends ~1 µs of this process's CPU per array
        element, orjson a fraction of that; PostgreSQL parses them). No ON CONFLICT on
        incidents: one that another transaction inserted meanwhile (two consumers during a
        rebalance) fails the batch, which is redelivered and then treats it as an update.
        """
        versions = self._new_versions([i.policy for i in incidents])
        traces = traces or {}
        rows = orjson.dumps([(*_incident_row(i, now), traces.get(i.id)) for i in incidents],
                            default=str).decode()
        due_rows = orjson.dumps([(i, n, w.kind, w.deadline, w.step, w.due_at, w.plan, w.stage_at)
                                 for i, n, w in due]).decode()
        audit_rows = orjson.dumps([_audit_row(event_id, e) for event_id, e in audit],
                                  default=str).decode()
        locks = sorted(self._category_lock(c) for c in set(lock_categories))
        outbox = ""
        outbox_args: list[Any] = []
        if messages:
            outbox_sql, outbox_args = outbox_insert(self.s, messages, first_param=8)
            outbox = f", outbox AS ({outbox_sql})"
        await conn.execute(
            f"""WITH pv AS (
                    INSERT INTO {self.s}.policy_versions (version, body)
                    SELECT v, b::jsonb FROM unnest($1::text[], $2::text[]) AS x(v, b)
                    ON CONFLICT DO NOTHING),
                inc AS (
                    INSERT INTO {self.s}.incidents ({_INCIDENT_COLUMNS}, updated_at,
                                                    traceparent)
                    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, r->>5, r->>6,
                           (r->>7)::timestamptz, r->>8, (r->>9)::float8, (r->>10)::float8,
                           r->>11, r->>12, r->>13, r->>14, (r->>15)::int, r->>16,
                           nullif(r->17, 'null'::jsonb), (r->>18)::timestamptz,
                           (r->>19)::timestamptz, (r->>20)::bool, (r->>21)::timestamptz,
                           (r->>22)::timestamptz, r->>23
                    FROM jsonb_array_elements($3::jsonb) AS r),
                dw AS (
                    INSERT INTO {self.s}.due_work (incident_id, assignment_no, kind, deadline,
                                                   step, due_at, plan, stage_at)
                    SELECT r->>0, (r->>1)::int, r->>2, r->>3, (r->>4)::int, (r->>5)::timestamptz,
                           nullif(r->6, 'null'::jsonb), (r->>7)::timestamptz
                    FROM jsonb_array_elements($4::jsonb) AS r
                    ON CONFLICT DO NOTHING),
                audit AS (
                    INSERT INTO {self.s}.transitions (incident_id, event_id, event_type,
                        from_state, to_state, actor_principal, actor_unit, reason, details,
                        occurred_at)
                    SELECT r->>0, (r->>1)::uuid, r->>2, r->>3, r->>4, r->>5, r->>6, r->>7, r->8,
                           (r->>9)::timestamptz
                    FROM jsonb_array_elements($5::jsonb) AS r){outbox}
                SELECT pg_notify($6, ''),
                       (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
                        FROM (SELECT unnest($7::text[]) AS k ORDER BY 1) AS keys)""",
            list(versions), list(versions.values()), rows, due_rows, audit_rows,
            notify_channel(self.s), locks, *outbox_args)
        return list(versions)

    async def insert_incident(self, conn: asyncpg.Connection, incident: Incident,
                              now: datetime, traceparent: str | None = None) -> None:
        """One incident opened by a command (a data dispute), with its dispute and the
        trace its later steps continue."""
        await self._save_policy_versions(conn, [incident.policy])
        row = list(_incident_row(incident, now))
        row[17] = _stored_policy(incident.policy)
        dispute = _dumps(incident.dispute.as_data()) if incident.dispute else None
        await conn.execute(
            f"INSERT INTO {self.s}.incidents ({_INCIDENT_COLUMNS}, updated_at, dispute, "
            "traceparent) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
            "$18::jsonb, $19, $20, $21, $22, $23, $24::jsonb, $25)", *row, dispute, traceparent)

    async def traceparents(self, conn: asyncpg.Connection | asyncpg.Pool,
                           ids: Iterable[str]) -> dict[str, str]:
        """The trace each incident continues (those that have one)."""
        rows = await conn.fetch(f"SELECT id, traceparent FROM {self.s}.incidents "
                                "WHERE id = ANY($1::text[]) AND traceparent IS NOT NULL", list(ids))
        return {r["id"]: r["traceparent"] for r in rows}

    def _category_lock(self, category: str) -> str:
        return f"routing-duplicates:{self.s}:{category}"

    async def update_incident(self, conn: asyncpg.Connection, incident: Incident,
                              now: datetime) -> None:
        i = incident
        await self._save_policy_versions(conn, [i.policy])
        await conn.execute(
            f"UPDATE {self.s}.incidents SET state = $2, assigned_unit = $3, last_unit = $4, "
            "assignment_no = $5, primary_id = $6, policy = $7::jsonb, ack_due_at = $8, "
            "resolve_due_at = $9, survey_answered = $10, updated_at = $11 WHERE id = $1",
            i.id, i.state.value, i.assigned_unit, i.last_unit, i.assignment_no, i.primary_id,
            _stored_policy(i.policy), i.ack_due_at, i.resolve_due_at, i.survey_answered, now)

    def _new_versions(self, policies: Sequence[dict[str, Any] | None]) -> dict[str, str]:
        versions: dict[str, str] = {}
        for p in policies:
            if (p is not None and p.get("version") and p["version"] not in versions
                    and p["version"] not in self._versions):
                versions[p["version"]] = json.dumps(
                    {k: p[k] for k in SHARED_SNAPSHOT_KEYS if k in p}, ensure_ascii=False)
        return versions

    async def _save_policy_versions(self, conn: asyncpg.Connection,
                                    policies: Sequence[dict[str, Any] | None]) -> list[str]:
        versions = self._new_versions(policies)
        if versions:
            await conn.execute(
                f"INSERT INTO {self.s}.policy_versions (version, body) "
                "SELECT v, b::jsonb FROM unnest($1::text[], $2::text[]) AS x(v, b) "
                "ON CONFLICT DO NOTHING", list(versions), list(versions.values()))
        return list(versions)

    async def merged_into(self, conn: asyncpg.Connection, primary_id: str) -> list[Incident]:
        rows = await conn.fetch(
            _SELECT_INCIDENTS.format(s=self.s) + "WHERE i.primary_id = $1", primary_id)
        return [_incident(r) for r in rows]

    async def duplicate_candidates(self, conn: asyncpg.Connection,
                                   queries: Sequence[DuplicateQuery], limit: int
                                   ) -> list[DuplicateCandidate]:
        """Open incidents inside each query's box and time window (a prefilter: the domain
        measures real distances)."""
        if not queries:
            return []
        rows = await conn.fetch(
            f"""SELECT DISTINCT c.id, c.category, c.lat, c.lon, c.reported_at
                FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[],
                            $6::timestamptz[], $7::timestamptz[])
                     WITH ORDINALITY AS q(category, min_lat, min_lon, max_lat, max_lon,
                                          t_from, t_to, n)
                JOIN unnest($8::int[], $9::bigint[]) AS qc(n, cell) ON qc.n = q.n
                CROSS JOIN LATERAL (
                    SELECT i.id, i.category, i.lat, i.lon, i.reported_at
                    FROM {self.s}.incidents i
                    WHERE i.category = q.category AND i.cell = qc.cell
                      AND i.reported_at BETWEEN q.t_from AND q.t_to
                      AND i.lat BETWEEN q.min_lat AND q.max_lat
                      AND i.lon BETWEEN q.min_lon AND q.max_lon
                      AND i.lat IS NOT NULL
                      AND i.state NOT IN ('closed', 'rejected_not_genuine', 'merged')
                    LIMIT $10) c""",
            [q.category for q in queries], [q.min_lat for q in queries],
            [q.min_lon for q in queries], [q.max_lat for q in queries],
            [q.max_lon for q in queries], [q.reported_from for q in queries],
            [q.reported_to for q in queries],
            [n for n, q in enumerate(queries, 1) for _ in q.cells],
            [cell for q in queries for cell in q.cells], limit)
        return [DuplicateCandidate(r["id"], r["category"], Point(r["lat"], r["lon"]),
                                   r["reported_at"]) for r in rows]

    # --- audit trail -----------------------------------------------------------
    async def insert_transitions(self, conn: asyncpg.Connection,
                                 events: Sequence[tuple[uuid.UUID | str, IncidentEvent]]) -> None:
        """Binary COPY: the audit trail is the largest write of a batch.

        No ON CONFLICT is needed: event ids derive from the input's event id, which the
        same transaction has just claimed, so a row can only be written once.
        """
        if not events:
            return
        await conn.copy_records_to_table(
            "transitions", schema_name=self.s,
            columns=["incident_id", "event_id", "event_type", "from_state", "to_state",
                     "actor_principal", "actor_unit", "reason", "details", "occurred_at"],
            records=[(e.incident_id, event_id, e.type,
                      e.from_state.value if e.from_state else None, e.to_state.value,
                      e.actor.principal, e.actor.unit, e.reason,
                      _dumps(_audit_details(e)), e.at)
                     for event_id, e in events])

    async def insert_transitions_and_outbox(
            self, conn: asyncpg.Connection, events: Sequence[tuple[uuid.UUID | str, IncidentEvent]],
            messages: Sequence[OutboxMessage], *, lock_categories: Iterable[str] = ()) -> None:
        """The audit rows (binary COPY: a quarter of the client CPU of arrays), then in one
        statement the outbox row, the relay's NOTIFY (sent at commit) and the duplicate-check
        locks of `lock_categories` (sorted: two batches cannot deadlock), held until commit."""
        await self.insert_transitions(conn, events)
        locks = sorted(self._category_lock(c) for c in set(lock_categories))
        if not messages and not locks:
            return
        sql = ("SELECT pg_notify($1, ''), (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
               " FROM (SELECT unnest($2::text[]) AS k ORDER BY 1) AS keys)")
        args: list[Any] = [notify_channel(self.s), locks]
        if messages:
            outbox_sql, outbox_args = outbox_insert(self.s, messages, first_param=3)
            sql = f"WITH outbox AS ({outbox_sql}) {sql}"
            args += outbox_args
        await conn.execute(sql, *args)

    async def history(self, conn: asyncpg.Connection, incident_id: str) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"SELECT event_type, from_state, to_state, actor_principal, actor_unit, reason, "
            f"occurred_at FROM {self.s}.transitions WHERE incident_id = $1 ORDER BY id",
            incident_id))

    # --- due work ----------------------------------------------------------------
    async def insert_due_work(self, conn: asyncpg.Connection,
                              work: Sequence[tuple[str, int, DueWork]]) -> None:
        if not work:
            return
        await conn.execute(
            f"INSERT INTO {self.s}.due_work (incident_id, assignment_no, kind, deadline, step, "
            "due_at, plan, stage_at) "
            "SELECT i, n, k, d, st, at, p::jsonb, sa FROM unnest($1::text[], $2::int[], "
            "$3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], "
            "$8::timestamptz[]) AS x(i, n, k, d, st, at, p, sa) ON CONFLICT DO NOTHING",
            [i for i, _, _ in work], [n for _, n, _ in work], [w.kind for _, _, w in work],
            [w.deadline for _, _, w in work], [w.step for _, _, w in work],
            [w.due_at for _, _, w in work],
            [None if w.plan is None else _dumps(w.plan) for _, _, w in work],
            [w.stage_at for _, _, w in work])

    async def count_due_work(self, conn: asyncpg.Connection, now: datetime) -> int:
        """Deadlines, reminders and escalation steps whose time has come and that have
        neither fired nor been skipped (the `ioc_timers_due` gauge)."""
        return int(await conn.fetchval(
            f"SELECT count(*) FROM {self.s}.due_work WHERE fired_at IS NULL "
            "AND skipped_at IS NULL AND due_at <= $1", now))

    async def claim_due_work(self, conn: asyncpg.Connection, now: datetime,
                             limit: int) -> list[DueRow]:
        """Due rows locked for this transaction; rows another instance holds are skipped."""
        rows = await conn.fetch(
            f"""SELECT w.id, w.incident_id, w.assignment_no, w.kind, w.deadline, w.step,
                       w.due_at, w.plan,
                       w.stage_at IS NOT NULL AND EXISTS (
                           SELECT 1 FROM {self.s}.due_work later
                           WHERE later.incident_id = w.incident_id
                             AND later.stage_at > w.stage_at) AS superseded
                FROM {self.s}.due_work w WHERE w.fired_at IS NULL AND w.skipped_at IS NULL
                AND w.due_at <= $1 ORDER BY w.due_at, w.id LIMIT $2 FOR UPDATE OF w SKIP LOCKED""",
            now, limit)
        return [DueRow(r["id"], r["incident_id"], r["assignment_no"], r["kind"], r["deadline"],
                       r["step"], r["due_at"], _json(r["plan"]), r["superseded"]) for r in rows]

    async def finish_due_work(self, conn: asyncpg.Connection, fired: Sequence[int],
                              skipped: Sequence[int], now: datetime, instance: str) -> None:
        if fired:
            await conn.execute(
                f"UPDATE {self.s}.due_work SET fired_at = $2, fired_by = $3 WHERE id = ANY($1)",
                list(fired), now, instance)
        if skipped:
            await conn.execute(
                f"UPDATE {self.s}.due_work SET skipped_at = $2 WHERE id = ANY($1)",
                list(skipped), now)

    async def next_due_at(self, conn: asyncpg.Connection) -> datetime | None:
        value: datetime | None = await conn.fetchval(
            f"SELECT min(due_at) FROM {self.s}.due_work WHERE fired_at IS NULL AND skipped_at IS NULL")
        return value

    # --- overdue and survey ----------------------------------------------------
    async def overdue(self, conn: asyncpg.Connection, now: datetime,
                      limit: int = 500) -> list[asyncpg.Record]:
        """One row per deadline an incident still waits on and has missed, with the
        highest escalation step fired for that deadline (0 when none yet).

        Unit deadlines come from the incident; the IOC's own steps from the plan of the
        latest entry into the state that waits for them."""
        return list(await conn.fetch(
            f"""WITH missed AS (
                    SELECT i.id, 'acknowledge' AS deadline, i.ack_due_at AS due_at,
                           NULL::timestamptz AS stage_at
                    FROM {self.s}.incidents i WHERE i.state = 'assigned' AND i.ack_due_at < $1
                    UNION ALL
                    SELECT i.id, 'resolve', i.resolve_due_at, NULL
                    FROM {self.s}.incidents i
                    WHERE i.state IN ('assigned', 'acknowledged', 'in_progress')
                      AND i.resolve_due_at < $1
                    UNION ALL
                    SELECT i.id, w.deadline, (w.plan->>'due_at')::timestamptz, w.stage_at
                    FROM {self.s}.incidents i
                    CROSS JOIN LATERAL (
                        SELECT s.deadline, s.plan, s.stage_at FROM {self.s}.due_work s
                        WHERE s.incident_id = i.id AND s.stage_at IS NOT NULL
                        ORDER BY s.stage_at DESC, s.id DESC LIMIT 1) w
                    WHERE i.state IN ('received', 'verified', 'approved', 'returned')
                      AND (w.deadline, i.state) IN (('verify', 'received'),
                          ('approve', 'verified'), ('dispatch', 'approved'),
                          ('dispatch', 'returned'))
                      AND (w.plan->>'due_at')::timestamptz < $1)
                SELECT i.id, i.dataset, i.record_id, i.category, i.priority, i.commune, i.state,
                       i.assigned_unit, m.deadline, m.due_at,
                       coalesce((SELECT max(w.step) FROM {self.s}.due_work w
                                 WHERE w.incident_id = i.id AND w.assignment_no = i.assignment_no
                                   AND w.deadline = m.deadline
                                   AND w.stage_at IS NOT DISTINCT FROM m.stage_at
                                   AND w.kind = 'escalation' AND w.fired_at IS NOT NULL), 0)
                           AS escalation_step
                FROM missed m JOIN {self.s}.incidents i ON i.id = m.id
                ORDER BY m.due_at, i.id, m.deadline LIMIT $2""", now, limit))

    async def record_survey(self, conn: asyncpg.Connection, incident_id: str, unit: str | None,
                            score: int, comment: str | None, principal: str,
                            at: datetime) -> None:
        await conn.execute(
            f"INSERT INTO {self.s}.survey_answers (incident_id, unit, score, comment, principal, "
            "answered_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            incident_id, unit, score, comment, principal, at)


def _audit_row(event_id: uuid.UUID | str, e: IncidentEvent) -> tuple[Any, ...]:
    return (e.incident_id, event_id, e.type, e.from_state.value if e.from_state else None,
            e.to_state.value, e.actor.principal, e.actor.unit, e.reason, _audit_details(e), e.at)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _audit_details(event: IncidentEvent) -> dict[str, Any]:
    # The policy snapshot is stored on the incident already; keep the trail compact.
    return {k: v for k, v in event.data.items() if k != "policy"}
