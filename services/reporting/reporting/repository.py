"""All SQL of the reporting service (schema `reporting`, `REPORTING_DB_SCHEMA`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from reporting.domain.histogram import BUCKETS
from reporting.domain.incidents import Contribution
from reporting.domain.indicators import IndicatorContribution

# Measures also kept per calendar month (the trend chart).
TREND_MEASURES = frozenset({"received", "resolved"})

# The measures of `incident_counts`, one column each, in the order of migration 0003
# (reporting.domain.incidents documents them). A state is counted as `state:<state>`.
INCIDENT_FLOWS = (
    "received", "verified", "rejected", "approved", "assigned", "acknowledged", "resolved",
    "closed", "returned", "transferred", "escalated", "reopened", "merged", "ack_on_time",
    "ack_late", "resolve_on_time", "resolve_late", "survey_responses", "survey_score")
INCIDENT_STATES = (
    "received", "verified", "rejected_not_genuine", "approved", "assigned", "acknowledged",
    "in_progress", "resolved", "closed", "returned", "merged")
INCIDENT_MEASURES = (
    *INCIDENT_FLOWS, *(f"ack_h{i}" for i in range(BUCKETS)),
    *(f"resolve_h{i}" for i in range(BUCKETS)), *(f"state:{s}" for s in INCIDENT_STATES))
_COLUMN_OF = {m: m.replace(":", "_") for m in INCIDENT_MEASURES}
_COLUMNS = tuple(_COLUMN_OF.values())
_ADD_COLUMNS = ", ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in _COLUMNS)
_SUM_COLUMNS = ", ".join(f"sum({c})::bigint AS {c}" for c in _COLUMNS)
_INSERT_COLUMNS = ", ".join(_COLUMNS)
_SELECT_COLUMNS = ", ".join(f"coalesce(r.{c}, 0)" for c in _COLUMNS)
_RECORD_COLUMNS = ", ".join(["day date", "unit text", "commune text", "category text",
                             "source text", *(f"{c} bigint" for c in _COLUMNS)])
_FLOW_SUMS = ", ".join(f"sum({_COLUMN_OF[m]})::bigint" for m in INCIDENT_FLOWS)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class ReportingRepository:
    def __init__(self, schema: str) -> None:
        self.s = schema

    # --- consumption ---------------------------------------------------------------
    async def claim(self, conn: asyncpg.Connection, consumer: str,
                    event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Claim the batch's event ids in one round trip; returns those not seen before."""
        rows = await conn.fetch(
            f"INSERT INTO {self.s}.processed_events (consumer, event_id) "
            "SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
            consumer, list(event_ids))
        return {r["event_id"] for r in rows}

    async def claim_and_load(self, conn: asyncpg.Connection, consumer: str,
                             event_ids: Sequence[str], incident_ids: Sequence[str]
                             ) -> tuple[set[str], dict[str, tuple[list[Any], list[Any]]]]:
        """`claim` and `load_incidents` (locked) in one round trip. Event ids as canonical
        UUID text, both ways (no uuid.UUID object per record)."""
        rows = await conn.fetch(
            f"""WITH claimed AS (
                    INSERT INTO {self.s}.processed_events (consumer, event_id)
                    SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id),
                known AS (
                    SELECT incident_id, transitions, contribution FROM {self.s}.incidents
                    WHERE incident_id = ANY($3::text[]) ORDER BY incident_id FOR UPDATE)
                SELECT event_id::text AS id, NULL::jsonb AS transitions, NULL::jsonb AS contribution
                FROM claimed
                UNION ALL SELECT incident_id, transitions, contribution FROM known""",
            consumer, list(event_ids), sorted(incident_ids))
        fresh: set[str] = set()
        stored: dict[str, tuple[list[Any], list[Any]]] = {}
        for r in rows:
            if r["transitions"] is None:
                fresh.add(r["id"])
            else:
                stored[r["id"]] = (orjson.loads(r["transitions"]), orjson.loads(r["contribution"]))
        return fresh, stored

    async def save_incidents(self, conn: asyncpg.Connection, rows: Sequence[dict[str, Any]],
                             deltas: Contribution) -> None:
        """Upsert the incident rows (as one JSON array) and add the deltas to
        `incident_counts` and `incident_monthly`, in one statement."""
        if not rows and not deltas:
            return
        # One row per day x unit x commune x category x source, its measures as columns
        # (only the non-zero ones sent; jsonb_to_recordset leaves the others NULL).
        counts: dict[tuple[date, str, str, str, str], dict[str, int]] = {}
        monthly: dict[tuple[date, str], int] = {}
        for (day, measure, unit, commune, category, source), n in deltas.items():
            if not n:
                continue
            column = _COLUMN_OF.get(measure)
            if column is None:
                raise ValueError(f"no incident_counts column for measure {measure!r}")
            row = counts.setdefault((day, unit, commune, category, source), {})
            row[column] = row.get(column, 0) + n
            if measure in TREND_MEASURES:
                month = (day.replace(day=1), measure)
                monthly[month] = monthly.get(month, 0) + n
        # Sorted: two instances updating the same keys take the row locks in one order.
        keys = sorted(counts)
        months = sorted(m for m, n in monthly.items() if n)
        await conn.execute(
            f"""WITH saved AS (
                  INSERT INTO {self.s}.incidents AS i (incident_id, transitions, contribution, state,
                      unit, category, commune, received_at, assigned_at, ack_due_at, resolve_due_at,
                      acknowledged, updated_at)
                  SELECT r.incident_id, r.transitions, r.contribution, r.state, r.unit,
                         r.category, r.commune, r.received_at, r.assigned_at, r.ack_due_at,
                         r.resolve_due_at, r.acknowledged, now()
                  FROM jsonb_to_recordset($1::jsonb) AS r(incident_id text, transitions jsonb,
                      contribution jsonb, state text, unit text, category text, commune text,
                      received_at timestamptz, assigned_at timestamptz, ack_due_at timestamptz,
                      resolve_due_at timestamptz, acknowledged boolean)
                  ORDER BY r.incident_id
                  ON CONFLICT (incident_id) DO UPDATE SET transitions = EXCLUDED.transitions,
                      contribution = EXCLUDED.contribution, state = EXCLUDED.state,
                      unit = EXCLUDED.unit, category = EXCLUDED.category,
                      commune = EXCLUDED.commune, received_at = EXCLUDED.received_at,
                      assigned_at = EXCLUDED.assigned_at, ack_due_at = EXCLUDED.ack_due_at,
                      resolve_due_at = EXCLUDED.resolve_due_at,
                      acknowledged = EXCLUDED.acknowledged, updated_at = now()
                  RETURNING 1),
                daily AS (
                  INSERT INTO {self.s}.incident_counts AS d
                      (day, unit, commune, category, source, {_INSERT_COLUMNS})
                  SELECT r.day, r.unit, r.commune, r.category, r.source, {_SELECT_COLUMNS}
                  FROM jsonb_to_recordset($2::jsonb) AS r({_RECORD_COLUMNS})
                  ON CONFLICT (day, unit, commune, category, source)
                  DO UPDATE SET {_ADD_COLUMNS} RETURNING 1),
                monthly AS (
                  INSERT INTO {self.s}.incident_monthly AS m (month, measure, n)
                  SELECT (r->>0)::date, r->>1, (r->>2)::bigint FROM jsonb_array_elements($3::jsonb) AS r
                  ON CONFLICT (month, measure) DO UPDATE SET n = m.n + EXCLUDED.n RETURNING 1)
                SELECT (SELECT count(*) FROM saved), (SELECT count(*) FROM daily),
                       (SELECT count(*) FROM monthly)""",
            # Rows as JSON: asyncpg's per-element cost of seven arrays was the batch's largest.
            _json(rows),
            _json([{"day": k[0], "unit": k[1], "commune": k[2], "category": k[3],
                    "source": k[4], **counts[k]} for k in keys]),
            _json([[*m, monthly[m]] for m in months]))

    async def upsert_quality(self, conn: asyncpg.Connection,
                             rows: Sequence[tuple[date, str, str, int, dict[str, int], datetime]]
                             ) -> None:
        if not rows:
            return
        rows = sorted(rows, key=lambda r: (r[0], r[1], r[2], r[5]))
        # The latest snapshot of a (day, unit, dataset) wins, whatever order they came in.
        await conn.execute(
            f"""INSERT INTO {self.s}.quality_daily AS q (day, unit, dataset, accepted, rejected, as_of)
                SELECT DISTINCT ON (day, unit, dataset) day, unit, dataset, accepted, rejected, as_of
                FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[],
                            $6::timestamptz[]) AS u(day, unit, dataset, accepted, rejected, as_of)
                ORDER BY day, unit, dataset, as_of DESC
                ON CONFLICT (day, unit, dataset) DO UPDATE SET accepted = EXCLUDED.accepted,
                    rejected = EXCLUDED.rejected, as_of = EXCLUDED.as_of
                WHERE q.as_of < EXCLUDED.as_of""",
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            [r[3] for r in rows], [_json(r[4]) for r in rows], [r[5] for r in rows])

    async def add_rejections(self, conn: asyncpg.Connection,
                             counts: dict[tuple[date, str, str, str], int]) -> None:
        if not counts:
            return
        keys = sorted(counts)
        await conn.execute(
            f"""INSERT INTO {self.s}.rejections_daily AS r (day, unit, dataset, code, n)
                SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                ON CONFLICT (day, unit, dataset, code) DO UPDATE SET n = r.n + EXCLUDED.n""",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
            [k[3] for k in keys], [counts[k] for k in keys])

    async def add_freshness(self, conn: asyncpg.Connection,
                            counts: dict[tuple[date, str, str], tuple[int, int]]) -> None:
        if not counts:
            return
        keys = sorted(counts)
        await conn.execute(
            f"""INSERT INTO {self.s}.freshness_daily AS f (day, unit, dataset, late, recovered)
                SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
                ON CONFLICT (day, unit, dataset) DO UPDATE SET late = f.late + EXCLUDED.late,
                    recovered = f.recovered + EXCLUDED.recovered""",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
            [counts[k][0] for k in keys], [counts[k][1] for k in keys])

    async def load_indicator_records(self, conn: asyncpg.Connection,
                                     keys: Sequence[tuple[str, str]]
                                     ) -> dict[tuple[str, str], tuple[datetime, str, list[Any]]]:
        rows = await conn.fetch(
            f"""SELECT r.dataset, r.record_id, r.occurred_at, r.event_id::text AS event_id,
                       r.contribution
                FROM {self.s}.indicator_records r
                JOIN unnest($1::text[], $2::text[]) AS k(dataset, record_id)
                  USING (dataset, record_id) FOR UPDATE OF r""",
            [k[0] for k in keys], [k[1] for k in keys])
        return {(r["dataset"], r["record_id"]): (r["occurred_at"], r["event_id"],
                                                 orjson.loads(r["contribution"])) for r in rows}

    async def save_indicator_records(self, conn: asyncpg.Connection,
                                     rows: Sequence[tuple[str, str, datetime, str, list[Any]]]
                                     ) -> None:
        if not rows:
            return
        rows = sorted(rows, key=lambda r: (r[0], r[1]))
        await conn.execute(
            f"""INSERT INTO {self.s}.indicator_records AS r
                    (dataset, record_id, occurred_at, event_id, contribution)
                SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[],
                                     $5::jsonb[])
                ON CONFLICT (dataset, record_id) DO UPDATE SET occurred_at = EXCLUDED.occurred_at,
                    event_id = EXCLUDED.event_id, contribution = EXCLUDED.contribution""",
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            [r[3] for r in rows], [_json(r[4]) for r in rows])

    async def add_indicator_deltas(self, conn: asyncpg.Connection,
                                   deltas: IndicatorContribution) -> None:
        if not deltas:
            return
        keys = sorted(deltas)
        await conn.execute(
            f"""INSERT INTO {self.s}.indicator_daily AS d
                    (day, dataset, commune, unit, indicator, n, total)
                SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[],
                                     $6::bigint[], $7::float8[])
                ON CONFLICT (day, dataset, commune, unit, indicator)
                DO UPDATE SET n = d.n + EXCLUDED.n, total = d.total + EXCLUDED.total""",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
            [k[3] for k in keys], [k[4] for k in keys], [deltas[k][0] for k in keys],
            [deltas[k][1] for k in keys])

    # --- reading rollups for a report ----------------------------------------------
    async def incident_rows(self, conn: asyncpg.Connection, start: date, end: date, *,
                            unit: str | None = None, commune: str | None = None,
                            category: str | None = None) -> list[tuple[Any, ...]]:
        """The period's non-zero sums per measure, and per measure and unit, commune,
        category or source (None: summed over), for a thematic scope if given, as
        (day, measure, unit, commune, category, source, n); `day` is the period's first
        day. (reporting.domain.figures.group_rows is the same in Python.)"""
        # The period's rows summed per cell first (one pass over the days), then the
        # grouping sets over those few thousand cells.
        rows = await conn.fetch(
            f"""WITH cells AS (
                  SELECT unit, commune, category, source, {_SUM_COLUMNS}
                  FROM {self.s}.incident_counts
                  WHERE day BETWEEN $1 AND $2
                    AND ($3::text IS NULL OR unit IN ($3, ''))
                    AND ($4::text IS NULL OR commune IN ($4, ''))
                    AND ($5::text IS NULL OR category IN ($5, ''))
                  GROUP BY unit, commune, category, source)
                SELECT unit, commune, category, source, {_SUM_COLUMNS}
                FROM cells AS c
                GROUP BY GROUPING SETS ((), (unit), (commune), (category), (source))""",
            start, end, unit, commune, category)
        out: list[tuple[Any, ...]] = []
        for r in rows:
            dims = (r[0], r[1], r[2], r[3])
            for measure, n in zip(INCIDENT_MEASURES, r[4:], strict=True):
                if n:
                    out.append((start, measure, *dims, n))
        return out

    async def incident_totals_by_month(self, conn: asyncpg.Connection, start: date,
                                       end: date, measures: Iterable[str]) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT month, measure, n FROM {self.s}.incident_monthly
                WHERE month BETWEEN date_trunc('month', $1::date) AND $2
                  AND measure = ANY($3::text[]) ORDER BY month""", start, end, list(measures)))

    async def overdue_incidents(self, conn: asyncpg.Connection,
                                at: datetime, limit: int = 200) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT incident_id, unit, category, commune, state, resolve_due_at
                FROM {self.s}.incidents
                WHERE state IN ('assigned', 'acknowledged', 'in_progress')
                  AND resolve_due_at < $1
                ORDER BY resolve_due_at, incident_id LIMIT $2""", at, limit))

    async def count_overdue(self, conn: asyncpg.Connection, at: datetime) -> int:
        return int(await conn.fetchval(
            f"""SELECT count(*) FROM {self.s}.incidents
                WHERE state IN ('assigned', 'acknowledged', 'in_progress')
                  AND resolve_due_at < $1""", at))

    async def quality_rows(self, conn: asyncpg.Connection, start: date,
                           end: date) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT unit, dataset, sum(accepted)::bigint AS accepted, count(*) AS days
                FROM {self.s}.quality_daily WHERE day BETWEEN $1 AND $2
                GROUP BY unit, dataset""", start, end))

    async def quality_reasons(self, conn: asyncpg.Connection, start: date,
                              end: date) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT q.unit, q.dataset, r.key AS code, sum(r.value::bigint)::bigint AS n
                FROM {self.s}.quality_daily q, jsonb_each_text(q.rejected) r
                WHERE q.day BETWEEN $1 AND $2 GROUP BY 1, 2, 3""", start, end))

    async def quality_ever(self, conn: asyncpg.Connection, end: date) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT DISTINCT unit, dataset FROM {self.s}.quality_daily
                WHERE day <= $1 AND accepted > 0""", end))

    async def rejection_rows(self, conn: asyncpg.Connection, start: date,
                             end: date) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT unit, dataset, code, sum(n)::bigint AS n FROM {self.s}.rejections_daily
                WHERE day BETWEEN $1 AND $2 GROUP BY 1, 2, 3""", start, end))

    async def freshness_rows(self, conn: asyncpg.Connection, start: date,
                             end: date) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT unit, dataset, sum(late)::bigint AS late, sum(recovered)::bigint AS recovered
                FROM {self.s}.freshness_daily WHERE day BETWEEN $1 AND $2 GROUP BY 1, 2""",
            start, end))

    async def indicator_rows(self, conn: asyncpg.Connection, start: date,
                             end: date) -> list[asyncpg.Record]:
        """Per (dataset, commune, unit, indicator): period totals and the latest day's values."""
        return list(await conn.fetch(
            f"""SELECT dataset, commune, unit, indicator, sum(n)::bigint AS n, sum(total) AS total,
                       (array_agg(day ORDER BY day DESC))[1] AS latest_day,
                       (array_agg(total ORDER BY day DESC))[1] AS latest_total,
                       (array_agg(n ORDER BY day DESC))[1] AS latest_n
                FROM {self.s}.indicator_daily WHERE day BETWEEN $1 AND $2 AND n <> 0
                GROUP BY 1, 2, 3, 4""", start, end))

    async def incident_totals(self, conn: asyncpg.Connection, start: date,
                              end: date) -> dict[str, int]:
        """The period's non-zero flow totals (no states, no duration buckets)."""
        row = await conn.fetchrow(
            f"""SELECT {_FLOW_SUMS} FROM {self.s}.incident_counts
                WHERE day BETWEEN $1 AND $2""", start, end)
        return {m: int(n) for m, n in zip(INCIDENT_FLOWS, row, strict=True) if n}

    # --- reports -------------------------------------------------------------------
    async def next_version(self, conn: asyncpg.Connection, period_key: str) -> int:
        # One writer per period at a time: versions are numbered without gaps or races.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.s}:{period_key}")
        return int(await conn.fetchval(
            f"SELECT coalesce(max(version), 0) + 1 FROM {self.s}.reports WHERE period_key = $1",
            period_key))

    async def insert_report(self, conn: asyncpg.Connection, row: dict[str, Any]) -> None:
        await conn.execute(
            f"""INSERT INTO {self.s}.reports (report_id, kind, period_key, period_start, period_end,
                    scope, version, status, figures, files, history)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb, $10::jsonb, $11::jsonb)""",
            row["report_id"], row["kind"], row["period_key"], row["period_start"], row["period_end"],
            _json(row["scope"]), row["version"], row["status"], _json(row["figures"]),
            _json(row["files"]), _json(row["history"]))

    async def load_report(self, conn: asyncpg.Connection, report_id: uuid.UUID, *,
                          for_update: bool = False) -> dict[str, Any] | None:
        row = await conn.fetchrow(
            f"SELECT * FROM {self.s}.reports WHERE report_id = $1"
            + (" FOR UPDATE" if for_update else ""), report_id)
        return _report(row) if row is not None else None

    async def latest_version(self, conn: asyncpg.Connection, period_key: str) -> int:
        return int(await conn.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {self.s}.reports WHERE period_key = $1",
            period_key))

    async def period_status(self, conn: asyncpg.Connection, period_key: str) -> set[str]:
        rows = await conn.fetch(f"SELECT DISTINCT status FROM {self.s}.reports WHERE period_key = $1",
                                period_key)
        return {r["status"] for r in rows}

    async def update_report(self, conn: asyncpg.Connection, report_id: uuid.UUID, *, status: str,
                            history_entry: dict[str, Any], number: str | None = None,
                            number_seq: int | None = None, issued_on: date | None = None,
                            files: dict[str, str] | None = None,
                            figures: dict[str, Any] | None = None) -> None:
        await conn.execute(
            f"""UPDATE {self.s}.reports SET status = $2, history = history || $3::jsonb,
                    number = coalesce($4, number), number_seq = coalesce($5, number_seq),
                    issued_on = coalesce($6, issued_on), files = coalesce($7::jsonb, files),
                    figures = coalesce($8::jsonb, figures), updated_at = now()
                WHERE report_id = $1""",
            report_id, status, _json([history_entry]), number, number_seq, issued_on,
            _json(files) if files is not None else None,
            _json(figures) if figures is not None else None)

    async def allocate_number(self, conn: asyncpg.Connection, year: int, type_: str) -> int:
        return int(await conn.fetchval(
            f"""INSERT INTO {self.s}.report_numbers AS n (year, type, last) VALUES ($1, $2, 1)
                ON CONFLICT (year, type) DO UPDATE SET last = n.last + 1 RETURNING last""",
            year, type_))

    async def list_reports(self, conn: asyncpg.Connection, limit: int = 200) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            f"""SELECT report_id, kind, period_key, period_start, period_end, version, status,
                       number, issued_on, files, created_at, scope
                FROM {self.s}.reports ORDER BY created_at DESC LIMIT $1""", limit)
        return [_report(r) for r in rows]

    # --- commands ------------------------------------------------------------------
    async def claim_command(self, conn: asyncpg.Connection, principal: str,
                            command_id: uuid.UUID, verb: str) -> bool:
        return await conn.fetchval(
            f"""INSERT INTO {self.s}.commands (principal, command_id, verb, status)
                VALUES ($1, $2, $3, 'pending') ON CONFLICT DO NOTHING RETURNING true""",
            principal, command_id, verb) is not None

    async def record_command(self, conn: asyncpg.Connection, principal: str,
                             command_id: uuid.UUID, status: str, reason: str | None) -> None:
        await conn.execute(
            f"UPDATE {self.s}.commands SET status = $3, reason = $4 "
            "WHERE principal = $1 AND command_id = $2", principal, command_id, status, reason)

    async def command_status(self, conn: asyncpg.Connection, principal: str,
                             command_id: uuid.UUID) -> str | None:
        value = await conn.fetchval(
            f"SELECT status FROM {self.s}.commands WHERE principal = $1 AND command_id = $2",
            principal, command_id)
        return str(value) if value is not None else None

    async def claim_events(self, conn: asyncpg.Connection, consumer: str,
                           event_ids: Sequence[uuid.UUID]) -> bool:
        return bool(await self.claim(conn, consumer, event_ids))

    # --- timers --------------------------------------------------------------------
    async def plan_timers(self, conn: asyncpg.Connection,
                          rows: Sequence[tuple[str, str, datetime]]) -> None:
        if not rows:
            return
        await conn.execute(
            f"""INSERT INTO {self.s}.report_timers (period_key, action, due_at)
                SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
                ON CONFLICT DO NOTHING""",
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    async def count_due_timers(self, conn: asyncpg.Connection, now: datetime) -> int:
        """Timers whose time has come and that have not fired (the `ioc_timers_due` gauge)."""
        return int(await conn.fetchval(
            f"SELECT count(*) FROM {self.s}.report_timers WHERE fired_at IS NULL "
            "AND due_at <= $1", now))

    async def due_timers(self, conn: asyncpg.Connection, now: datetime,
                         limit: int) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT period_key, action, due_at FROM {self.s}.report_timers
                WHERE fired_at IS NULL AND due_at <= $1 ORDER BY due_at
                LIMIT $2 FOR UPDATE SKIP LOCKED""", now, limit))

    async def mark_timer(self, conn: asyncpg.Connection, period_key: str, action: str,
                         by: str, outcome: str) -> None:
        await conn.execute(
            f"""UPDATE {self.s}.report_timers SET fired_at = now(), fired_by = $3 || ':' || $4
                WHERE period_key = $1 AND action = $2""", period_key, action, by, outcome)


def _report(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for name in ("figures", "files", "history", "scope"):
        if name in out and isinstance(out[name], str):
            out[name] = orjson.loads(out[name])
    return out


class SyncStatusRepository:
    """SQL of the province-sync rollup (sync-province's status snapshots)."""

    def __init__(self, schema: str) -> None:
        self.s = schema

    async def load_baselines(self, conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
                             ) -> dict[tuple[str, str], tuple[datetime, dict[str, int],
                                                              dict[str, int]]]:
        """(target, stream) -> (occurred_at, counters, positions), rows locked in key order."""
        keys = sorted(set(keys))
        rows = await conn.fetch(
            f"""SELECT b.target, b.stream, b.occurred_at, b.counters, b.positions
                FROM {self.s}.sync_baselines b
                JOIN unnest($1::text[], $2::text[]) AS k(target, stream)
                  ON b.target = k.target AND b.stream = k.stream
                ORDER BY b.target, b.stream FOR UPDATE OF b""",
            [k[0] for k in keys], [k[1] for k in keys])
        return {(r["target"], r["stream"]): (r["occurred_at"], orjson.loads(r["counters"]),
                                             orjson.loads(r["positions"])) for r in rows}

    async def save(self, conn: asyncpg.Connection,
                   baselines: dict[tuple[str, str], tuple[datetime, dict[str, int],
                                                          dict[str, int]]],
                   days: dict[tuple[date, str, str], tuple[int, int, datetime | None]],
                   failures: dict[tuple[date, str, str], int]) -> None:
        """Upsert the baselines; add the day deltas (sent, parked; the latest sync time
        wins) and the failures by reason."""
        b = sorted(baselines)
        if b:
            await conn.execute(
                f"""INSERT INTO {self.s}.sync_baselines AS s
                        (target, stream, occurred_at, counters, positions)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[],
                                         $4::jsonb[], $5::jsonb[])
                    ON CONFLICT (target, stream) DO UPDATE SET occurred_at = EXCLUDED.occurred_at,
                        counters = EXCLUDED.counters, positions = EXCLUDED.positions""",
                [k[0] for k in b], [k[1] for k in b], [baselines[k][0] for k in b],
                [_json(baselines[k][1]) for k in b], [_json(baselines[k][2]) for k in b])
        d = sorted(days)
        if d:
            await conn.execute(
                f"""INSERT INTO {self.s}.sync_daily AS s
                        (day, target, stream, sent, parked, last_synced_at)
                    SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[],
                                         $5::bigint[], $6::timestamptz[])
                    ON CONFLICT (day, target, stream) DO UPDATE SET
                        sent = s.sent + EXCLUDED.sent, parked = s.parked + EXCLUDED.parked,
                        last_synced_at = GREATEST(s.last_synced_at, EXCLUDED.last_synced_at)""",
                [k[0] for k in d], [k[1] for k in d], [k[2] for k in d],
                [days[k][0] for k in d], [days[k][1] for k in d], [days[k][2] for k in d])
        f = sorted(k for k, n in failures.items() if n)
        if f:
            await conn.execute(
                f"""INSERT INTO {self.s}.sync_failures_daily AS s (day, target, reason, n)
                    SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[])
                    ON CONFLICT (day, target, reason) DO UPDATE SET n = s.n + EXCLUDED.n""",
                [k[0] for k in f], [k[1] for k in f], [k[2] for k in f], [failures[k] for k in f])

    async def period_rows(self, conn: asyncpg.Connection, start: date, end: date
                          ) -> list[asyncpg.Record]:
        """Per (stream, target) known by `end`: sent and parked in the period, the latest
        sync time up to `end`."""
        return list(await conn.fetch(
            f"""SELECT stream, target,
                       coalesce(sum(sent) FILTER (WHERE day >= $1), 0)::bigint AS sent,
                       coalesce(sum(parked) FILTER (WHERE day >= $1), 0)::bigint AS parked,
                       max(last_synced_at) AS last_synced_at
                FROM {self.s}.sync_daily WHERE day <= $2
                GROUP BY stream, target ORDER BY stream, target""", start, end))

    async def period_failures(self, conn: asyncpg.Connection, start: date, end: date
                              ) -> list[asyncpg.Record]:
        return list(await conn.fetch(
            f"""SELECT target, reason, sum(n)::bigint AS n FROM {self.s}.sync_failures_daily
                WHERE day BETWEEN $1 AND $2 GROUP BY target, reason ORDER BY target, reason""",
            start, end))


class ScopedTrendRepository:
    """SQL of a thematic report's trend: its scope's incidents per calendar month."""

    def __init__(self, schema: str) -> None:
        self.s = schema

    async def incident_totals_by_month(self, conn: asyncpg.Connection, start: date, end: date,
                                       measures: Iterable[str], *, unit: str | None,
                                       commune: str | None, category: str | None
                                       ) -> list[asyncpg.Record]:
        """As `ReportingRepository.incident_totals_by_month`, from `incident_daily` with
        the filters of `ReportingRepository.incident_rows`."""
        return list(await conn.fetch(
            f"""SELECT date_trunc('month', day)::date AS month, measure, sum(n)::bigint AS n
                FROM {self.s}.incident_daily
                WHERE day BETWEEN date_trunc('month', $1::date) AND $2
                  AND measure = ANY($3::text[])
                  AND ($4::text IS NULL OR unit IN ($4, ''))
                  AND ($5::text IS NULL OR commune IN ($5, ''))
                  AND ($6::text IS NULL OR category IN ($6, ''))
                GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2""",
            start, end, list(measures), unit, commune, category))
