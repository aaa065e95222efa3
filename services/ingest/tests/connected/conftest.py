from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ingest.service import IngestService

from .helpers import drop_schema, isolated_settings


@pytest.fixture(scope="session")
async def service() -> AsyncIterator[IngestService]:
    """One ingest service on the seed registry, isolated by namespace, schema and group."""
    settings = isolated_settings()
    async with IngestService(settings, configure_logs=False) as svc:
        yield svc
    await drop_schema(settings)
