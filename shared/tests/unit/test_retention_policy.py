"""Retention policies: the SQL of a slice, and the keep periods computed from topic specs."""

from datetime import timedelta

import pytest
from ioc_shared.contracts.topics import DAY_MS, TopicSpec
from ioc_shared.platform.retention import (
    PROCESSED_EVENTS_MARGIN,
    RetentionJob,
    RetentionPolicy,
    platform_policies,
    processed_events_keep,
    topic_retention,
)


def spec(days: float, **kwargs: object) -> TopicSpec:
    return TopicSpec(f"t{days}", 3, int(days * DAY_MS), **kwargs)  # type: ignore[arg-type]


def test_a_slice_deletes_a_limited_set_of_expired_rows_by_physical_address() -> None:
    sql = RetentionPolicy("processed_events", "processed_at", timedelta(days=3)).slice_sql("svc")
    assert sql == ("DELETE FROM svc.processed_events WHERE ctid = ANY(ARRAY("
                   "SELECT t.ctid FROM svc.processed_events t "
                   "WHERE (processed_at) < now() - $1::interval LIMIT $2))")
    assert "ORDER BY" not in sql   # a BRIN index gives no order: no sort of all that expired


def test_the_extra_condition_is_and_ed_and_may_name_the_schema() -> None:
    policy = RetentionPolicy("due_work", "coalesce(fired_at, skipped_at)", timedelta(days=90),
                             where="EXISTS (SELECT 1 FROM {schema}.incidents i "
                                   "WHERE i.id = t.incident_id)")
    sql = policy.slice_sql("routing_x")
    assert ("WHERE (coalesce(fired_at, skipped_at)) < now() - $1::interval AND "
            "(EXISTS (SELECT 1 FROM routing_x.incidents i WHERE i.id = t.incident_id)) "
            "LIMIT $2") in sql
    assert sql.startswith("DELETE FROM routing_x.due_work ")


@pytest.mark.parametrize("table", ["Bad", "x;drop table y", "", "a.b"])
def test_a_table_name_that_is_not_a_plain_identifier_is_refused(table: str) -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(table, "ts", timedelta(days=1))


def test_a_bad_schema_or_a_keep_period_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError):
        RetentionPolicy("outbox_parked", "ts", timedelta(0))
    with pytest.raises(ValueError):
        RetentionPolicy("outbox_parked", "ts", timedelta(days=1)).slice_sql("a; b")


def test_topic_retention_is_the_effective_retention_ms() -> None:
    assert topic_retention(spec(7)) == timedelta(days=7)
    overridden = spec(7, extra_config={"retention.ms": str(30 * DAY_MS)})
    assert topic_retention(overridden) == timedelta(days=30)
    assert topic_retention(spec(7, extra_config={"retention.ms": "-1"})) is None
    assert topic_retention(spec(7, extra_config={"cleanup.policy": "compact"})) is None
    assert topic_retention(spec(7, compacted=True)) == timedelta(days=7)  # compact,delete


def test_processed_events_are_kept_longer_than_the_longest_consumed_topic() -> None:
    assert processed_events_keep([spec(30), spec(400), spec(7)]) == (
        timedelta(days=400) + PROCESSED_EVENTS_MARGIN)
    assert processed_events_keep([spec(7)], margin=timedelta(days=1)) == timedelta(days=8)
    # Forever when a topic keeps records forever, or when nothing says how long.
    assert processed_events_keep([spec(7), spec(1, extra_config={"retention.ms": "-1"})]) is None
    assert processed_events_keep([]) is None


def test_platform_policies_cover_processed_events_and_the_handled_parked_rows() -> None:
    by_table = {p.table: p for p in platform_policies([spec(30)])}
    assert set(by_table) == {"processed_events", "consumer_parked", "outbox_parked"}
    assert by_table["processed_events"].keep == timedelta(days=37)
    assert by_table["consumer_parked"].timestamp == "replayed_at"   # waiting rows: NULL, kept
    assert by_table["outbox_parked"].timestamp == "coalesce(republished_at, dropped_at)"
    assert by_table["consumer_parked"].keep == by_table["outbox_parked"].keep == timedelta(days=90)
    # Nothing consumed (or kept forever): processed events are never deleted.
    assert "processed_events" not in {p.table for p in platform_policies([])}


def test_the_processed_events_override_may_not_be_shorter_than_the_topics_need() -> None:
    longer = platform_policies([spec(30)], processed_events=timedelta(days=60))
    assert longer[0].keep == timedelta(days=60)
    with pytest.raises(ValueError, match="less than"):
        platform_policies([spec(30)], processed_events=timedelta(days=31))
    # With nothing consumed the override is the only word.
    assert platform_policies([], processed_events=timedelta(days=5))[0].keep == timedelta(days=5)


def test_a_job_takes_one_policy_per_table() -> None:
    p = RetentionPolicy("commands", "received_at", timedelta(days=400))
    with pytest.raises(ValueError, match="one policy per table"):
        RetentionJob(None, "svc", [p, p])  # type: ignore[arg-type]


def test_the_wait_between_rounds_is_jittered_within_bounds() -> None:
    job = RetentionJob(None, "svc", [], interval_s=3600, jitter=0.1)  # type: ignore[arg-type]
    waits = {job._jittered(3600) for _ in range(200)}
    assert all(3240 <= w <= 3960 for w in waits) and len(waits) > 100
