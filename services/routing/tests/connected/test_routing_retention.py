"""Routing's retention on the real PostgreSQL: what goes after how long, what stays."""

from datetime import timedelta

import pytest
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.retention import RetentionJob
from ioc_shared.testing import database_url, unique
from routing.bootstrap import MIGRATIONS, retention_policies
from routing.settings import RoutingSettings

pytestmark = pytest.mark.connected

DATASET = "phan-anh-hien-truong"


def test_processed_events_outlive_the_longest_consumed_topic() -> None:
    policies = {p.table: p for p in retention_policies(RoutingSettings(), [DATASET])}
    # Canonical topics keep 400 days, commands 30: 400 + 7 days margin.
    assert policies["processed_events"].keep == timedelta(days=407)
    assert policies["commands"].keep == timedelta(days=400)
    assert policies["due_work"].keep == timedelta(days=90)
    assert {"incidents", "transitions", "survey_answers"}.isdisjoint(policies)
    with pytest.raises(ValueError, match="less than"):
        retention_policies(RoutingSettings(retention_processed_events_days=100), [DATASET])


async def test_one_round_deletes_only_what_routing_no_longer_needs() -> None:
    schema = unique("t_routing_ret")
    pool = await create_pool(database_url(), max_size=4)
    try:
        await migrate(pool, schema, MIGRATIONS)
        s = schema
        for incident, state in (("closed-1", "closed"), ("open-1", "received")):
            await pool.execute(
                f"INSERT INTO {s}.incidents (id, dataset, record_id, source_unit, category, "
                "priority, commune, reported_at, state, created_at, updated_at) VALUES "
                "($1, $2, $1, 'u', 'c', 'normal', 'loc-ninh', now(), $3, now(), now())",
                incident, DATASET, state)

        async def due(incident: str, step: int, fired_days: float | None,
                      skipped_days: float | None = None) -> None:
            await pool.execute(
                f"INSERT INTO {s}.due_work (incident_id, assignment_no, kind, deadline, step, "
                "due_at, fired_at, skipped_at) VALUES ($1, 1, 'reminder', 'acknowledge', $2, "
                "now() - interval '200 days', now() - make_interval(days => $3), "
                "now() - make_interval(days => $4))", incident, step, fired_days, skipped_days)

        await due("closed-1", 1, fired_days=100)                       # goes
        await due("closed-1", 2, None, skipped_days=95)                # goes
        await due("closed-1", 3, fired_days=10)                        # recent: stays
        await due("closed-1", 4, None)                                 # pending: stays
        await due("open-1", 1, fired_days=100)                         # still waiting: stays
        await pool.execute(
            f"INSERT INTO {s}.commands (principal, command_id, status, received_at) "
            "VALUES ('p', gen_random_uuid(), 'accepted', now() - interval '401 days'), "
            "('p', gen_random_uuid(), 'accepted', now() - interval '399 days')")
        await pool.execute(
            f"INSERT INTO {s}.processed_events (consumer, event_id, processed_at) VALUES "
            "('routing-intake', gen_random_uuid(), now() - interval '408 days'), "
            "('routing-intake', gen_random_uuid(), now() - interval '300 days')")

        job = RetentionJob(pool, s, retention_policies(RoutingSettings(), [DATASET]),
                           slice_rows=1)
        assert await job.prune_once() == {"processed_events": 1, "consumer_parked": 0,
                                          "outbox_parked": 0, "due_work": 2, "commands": 1}
        left = await pool.fetch(f"SELECT incident_id, step FROM {s}.due_work ORDER BY 1, 2")
        assert [(r["incident_id"], r["step"]) for r in left] == [
            ("closed-1", 3), ("closed-1", 4), ("open-1", 1)]
        assert await pool.fetchval(f"SELECT count(*) FROM {s}.commands") == 1
        assert await pool.fetchval(f"SELECT count(*) FROM {s}.processed_events") == 1
        assert await pool.fetchval(f"SELECT count(*) FROM {s}.incidents") == 2
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()


def test_the_interval_reads_the_common_setting_and_routing_s_own_wins(monkeypatch) -> None:
    monkeypatch.setenv("IOC_RETENTION_INTERVAL_S", "120")
    assert RoutingSettings().retention_interval_s == 120
    monkeypatch.setenv("ROUTING_RETENTION_INTERVAL_S", "600")
    assert RoutingSettings().retention_interval_s == 600
