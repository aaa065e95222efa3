"""The Kafka entry point. Thin: raw records in, pipeline call, nothing else.

The inbound consumer is the kit's `DurableConsumer` (ioc_shared.platform.consumer)
on the runtime's FastStream broker; it states the failure policy. Offsets are
committed only after `IngestPipeline.process` returned: every canonical, restricted,
shared, rejected and quarantine message confirmed by the broker (acks=all) and the
claims committed in PostgreSQL. Bad *input* never raises (it becomes a rejection).
While PostgreSQL or Kafka is down the same batch is retried; a record whose effects
keep failing for another reason is parked after the policy's attempts (its raw bytes
in `consumer_parked`, `python -m ingest parked list | replay`), its sender is answered
`internal_error`, and the partition goes on. Ingest scales by partitions: every
process is a member of the consumer group and owns some of the inbound partitions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import asyncpg
from ioc_shared.platform.consumer import Delivery, DurableConsumer, FailurePolicy
from prometheus_client import CollectorRegistry

from ingest.domain import Inbound
from ingest.handlers import IngestPipeline
from ingest.messages import H_REPLAY_ID

INBOUND_CONSUMER = "ingest-inbound"


def inbound_of(d: Delivery) -> Inbound:
    """The submission of a consumed record (raw bytes and headers, where it came from)."""
    headers = d.headers
    replay = False
    for k, _ in headers:   # a loop: a generator expression cost more than the rest
        if k == H_REPLAY_ID:
            replay = True
            break
    return Inbound(d.value, headers, f"{d.topic}:{d.partition}:{d.offset}", d.key, "kafka",
                   replay)


def inbound_consumer(pipeline: IngestPipeline, *, topic: str, group: str, pool: asyncpg.Pool,
                     schema: str, max_records: int, batch_timeout_ms: int,
                     metrics: CollectorRegistry | None = None,
                     policy: FailurePolicy | None = None, fetch_min_bytes: int = 1,
                     fetch_max_wait_ms: int = 500, pipelined: bool = True) -> DurableConsumer:
    async def on_records(batch: Sequence[Delivery]) -> Awaitable[Any]:
        # The confirmations: the consumer takes the next batch while they are on their way.
        return await pipeline.start([inbound_of(d) for d in batch], keep_outcomes=False)

    async def on_parked(delivery: Delivery, error: BaseException) -> None:
        await pipeline.answer_parked(inbound_of(delivery), error)

    return DurableConsumer(INBOUND_CONSUMER, [topic], group, on_records, pool=pool,
                           schema=schema, policy=policy, max_records=max_records,
                           batch_timeout_ms=batch_timeout_ms, on_parked=on_parked,
                           metrics=metrics, fetch_min_bytes=fetch_min_bytes,
                           fetch_max_wait_ms=fetch_max_wait_ms, pipelined=pipelined)
