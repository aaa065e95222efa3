"""A first start on an empty broker: every topic reporting reads is declared, and nothing
is logged as an error (reporting may start before routing, ingest and sync-province)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from ioc_shared.contracts.topics import SYNC_PROVINCE_STATUS
from ioc_shared.platform.kafka import make_admin
from ioc_shared.registry import load_registry
from ioc_shared.testing import kafka_bootstrap
from reporting.bootstrap import consumed_specs
from reporting_harness import World

pytestmark = pytest.mark.connected


async def test_a_first_start_declares_what_it_reads_and_logs_no_error(
        rworld: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await rworld.start(timers_enabled=False, render_files=False)

    async def assigned() -> bool:
        # The rollups, commands and province-sync consumers got their partitions (and
        # looked their offsets up: where a too-early start logs NotLeaderForPartition).
        return sum("assigned to partitions" in r.getMessage() for r in caplog.records) >= 3

    await rworld.wait_for(assigned)
    await asyncio.sleep(1.0)
    errors = [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    s = rworld.settings
    registry = load_registry(s.registry_file, s.credentials_file)
    wanted = {t.name for t in consumed_specs(s, registry)} | {s.topic(SYNC_PROVINCE_STATUS).name}
    admin = make_admin(kafka_bootstrap(), client_id="test-reporting-start")
    await admin.start()
    try:
        assert wanted <= set(await admin.list_topics())
    finally:
        await admin.close()
