"""What the service wires: the inbound entry's records and the retention policies."""

from __future__ import annotations

from datetime import timedelta

from ingest.service import retention_policies
from ingest.settings import IngestSettings
from ingest.subscribers import inbound_of
from ioc_shared.platform.consumer import Delivery


def test_a_delivery_becomes_an_inbound_with_its_origin_and_replay_mark() -> None:
    plain = Delivery("in", 3, 42, b"xa-loc-an/PA-1", b"{}", (("ioc-principal", b"p"),), 0)
    replayed = Delivery("in", 3, 43, None, b"{}", (("ioc-replay-id", b"r-1"),), 0)
    inbound = inbound_of(plain)
    assert (inbound.origin, inbound.key, inbound.channel, inbound.replay) == (
        "in:3:42", b"xa-loc-an/PA-1", "kafka", False)
    assert inbound.headers == (("ioc-principal", b"p"),)
    assert inbound_of(replayed).replay is True


def test_retention_keeps_claims_and_published_counters_400_days() -> None:
    settings = IngestSettings(dev_mode=True, retention_accepted_days=400,
                              retention_quality_days=30)
    policies = {p.table: p for p in retention_policies(settings)}
    assert set(policies) >= {"accepted_records", "quality_counters", "consumer_parked",
                             "outbox_parked"}
    accepted, quality = policies["accepted_records"], policies["quality_counters"]
    assert (accepted.timestamp, accepted.keep, accepted.where) == (
        "accepted_at", timedelta(days=400), None)
    # A counter changed since it was last published is kept until it is published.
    assert (quality.timestamp, quality.keep, quality.where) == (
        "updated_at", timedelta(days=30), "published_at >= updated_at")
    assert "freshness" not in policies
