"""Settings of the routing service (environment `ROUTING_*`, falling back to `IOC_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from ioc_shared.platform.settings import REPO_ROOT, ServiceSettings
from pydantic_settings import SettingsConfigDict


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTING_", extra="ignore")

    service_prefix: ClassVar[str] = "ROUTING_"
    service_name: ClassVar[str] = "routing"

    routing_config: Path = REPO_ROOT / "config" / "routing.yaml"
    db_schema: str = "routing"
    consumer_group: str = "ioc-routing"
    # Incident intake is a batch consumer: one PostgreSQL transaction per batch.
    batch_max_records: int = 500
    # aiokafka returns at once when records are buffered; this bounds the idle wait only.
    batch_timeout_ms: int = 10
    relay_batch_size: int = 2000
    # "process": the outbox relay runs as a child process on another core; "inline": a task.
    relay_mode: Literal["process", "inline"] = "process"
    timer_poll_s: float = 1.0
    timer_batch: int = 200
    # Retention (ioc_shared.platform.retention; deploy/README.md "Retention"). The interval
    # also reads the common IOC_RETENTION_INTERVAL_S.
    retention_interval_s: float = 3600.0
    retention_slice_rows: int = 1000
    # None: the longest retention of the consumed topics + 7 days (a shorter one is refused).
    retention_processed_events_days: float | None = None
    retention_parked_days: float = 90.0
    # Fired or skipped reminders and escalation steps of incidents no longer waiting.
    retention_due_work_days: float = 90.0
    # The answer given to each command (its idempotency key and audit trail).
    retention_commands_days: float = 400.0
