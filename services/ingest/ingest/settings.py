"""Ingest settings: `INGEST_*` environment variables, falling back to `IOC_*`."""

from __future__ import annotations

from typing import ClassVar

from ioc_shared.platform.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    service_prefix: ClassVar[str] = "INGEST_"
    service_name: ClassVar[str] = "ingest"

    db_schema: str = "ingest"
    consumer_group: str = "ioc-ingest"
    # Hot path: records per batch and how long an empty poll waits. FastStream sleeps as
    # long again after an empty poll, so this bounds the latency a trickle can get.
    batch_max_records: int = 1000
    batch_timeout_ms: int = 10
    # Fetches: the broker answers once `fetch_min_bytes` are there or after
    # `fetch_max_wait_ms`. Under load the first holds at once; at a trickle a batch every few
    # ms instead of one per record or two (each batch is a claim, produce requests and a
    # commit), for at most that much latency.
    fetch_min_bytes: int = 64 * 1024
    fetch_max_wait_ms: int = 5
    # A batch is worked in chunks, so that the waits for PostgreSQL and the broker overlap
    # with deciding the next chunk (docs/perf/ingest.md).
    chunk_records: int = 250
    # The next batch is taken while the previous one's confirmations are on their way (the
    # kit consumer's pipelined mode; its offsets are committed once they are in).
    pipelined: bool = True
    # Retention (ioc_shared.platform.retention; deploy/README.md "Retention"). The interval
    # also reads the common IOC_RETENTION_INTERVAL_S.
    retention_interval_s: float = 3600.0
    retention_slice_rows: int = 1000
    # Claims of accepted records (dedupe keys and their first delivery): a unit re-sending
    # a record later than this is accepted again.
    retention_accepted_days: float = 400.0
    # Daily quality counters, once published.
    retention_quality_days: float = 400.0
    retention_parked_days: float = 90.0
    # Larger inbound messages are rejected as too_large before parsing.
    max_message_bytes: int = 1024 * 1024
    # Timestamps: how far in the future an event time may lie (clock skew).
    future_tolerance_s: float = 300.0
    geo_margin_deg: float = 0.05
    # Freshness: continuous datasets are late after this silence (plus grace);
    # calendar cadences get `freshness_grace_s` after the end of the next period.
    freshness_continuous_s: float = 3600.0
    freshness_grace_s: float = 2 * 3600.0
    freshness_check_interval_s: float = 60.0
    quality_publish_interval_s: float = 60.0
    # HTTP intake limits.
    http_max_body_bytes: int = 8 * 1024 * 1024
    http_max_records: int = 5000
