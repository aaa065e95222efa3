"""Ingest settings: `INGEST_*` environment variables, falling back to `IOC_*`."""

from __future__ import annotations

import os
from typing import ClassVar

from ioc_shared.platform.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    service_prefix: ClassVar[str] = "INGEST_"
    service_name: ClassVar[str] = "ingest"

    db_schema: str = "ingest"
    consumer_group: str = "ioc-ingest"
    # Hot path: records per batch and how long an empty poll waits.
    batch_max_records: int = 1000
    batch_timeout_ms: int = 100
    # Fetches: the broker answers once `fetch_min_bytes` are there or after `fetch_max_wait_ms`.
    # Under load the first holds at once; at a trickle, a fetch (and a pass of the consume
    # loop) every few ms instead of one per record or two, for at most that much latency.
    fetch_min_bytes: int = 64 * 1024
    fetch_max_wait_ms: int = 5
    # At most one offset commit per interval (the offsets of batches worked meanwhile are
    # merged; each is still committed only once its effects are durable).
    commit_interval_ms: int = 20
    # A batch is worked in chunks so database and broker waits overlap with work.
    chunk_records: int = 500
    # Child processes that decide submissions while the service process consumes, joins
    # the messages, records and produces (`ingest.decider`); 0: decide in-process.
    # None: one per core but one, at most 4 (one on 2 cores, for ~46 MB more memory);
    # none on a single core.
    decision_workers: int | None = None
    # With decision workers: batches taken from the fetched records ahead of the one being
    # worked, their decisions asked for at once (the workers go on meanwhile).
    decision_lookahead: int = 2
    # Smaller chunks (a trickle: a fetch every few ms brings a few records) are decided in
    # the service process: the round trip to a worker costs more CPU than deciding them.
    decision_worker_min_records: int = 32

    def decision_worker_count(self) -> int:
        if self.decision_workers is not None:
            return max(0, self.decision_workers)
        return max(0, min(4, (os.cpu_count() or 1) - 1))
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
    # Pause before a failed batch is redelivered (broker or database down), to not spin.
    retry_backoff_s: float = 1.0
