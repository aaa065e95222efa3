"""Figures count only what the producing service published: a unit system that can write
the incident-events or an ingest topic must not be able to forge them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.platform.consumer import Delivery
from reporting.rollups import RollupHandler, producer_of
from reporting.sample import incident_events


class _Pool:
    """Any database use would fail the test: forged events never reach a transaction."""

    def acquire(self) -> Any:
        raise AssertionError("a forged event reached the database")


def _handler() -> RollupHandler:
    handler = object.__new__(RollupHandler)
    handler.pool = cast(Any, _Pool())
    return handler


def _deliveries(producer: bytes | None) -> list[Delivery]:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    headers = () if producer is None else ((H_PRODUCER, producer),)
    return [Delivery("ioc.routing.incident-events.v1", 0, n, key.encode(), value, headers, 0)
            for n, (key, value) in enumerate(incident_events(3, start, end))]


def test_incident_events_are_routings_and_the_rest_ingests() -> None:
    assert producer_of("routing.incident.assigned") == "routing"
    assert producer_of("ingest.quality.counters") == "ingest"


async def test_events_without_or_with_another_producer_are_not_counted() -> None:
    for forged in (None, b"ingest", b"xa-loc-an-system"):
        await _handler().handle(_deliveries(forged))   # returns without a transaction
