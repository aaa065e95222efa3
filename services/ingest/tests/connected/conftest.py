from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ingest.service import IngestService

from .helpers import drop_schema, isolated_settings


@pytest.fixture(scope="session")
async def service() -> AsyncIterator[IngestService]:
    """One ingest service on the seed registry, isolated by namespace, schema and group.

    It decides in a decision worker process (`ingest.decider`, the default on more than
    one core), even the tests' small batches (which the default leaves to the service
    process); the grant and freshness tests decide in the service process."""
    settings = isolated_settings(decision_workers=1, decision_worker_min_records=0)
    async with IngestService(settings, configure_logs=False) as svc:
        yield svc
    await drop_schema(settings)
