"""Kafka entry points: the kit's `DurableConsumer` (ioc_shared.platform.consumer) per door.

Its failure policy is the contract: offsets are committed only after the handler
returned (its PostgreSQL transaction of rollup deltas or report state + processed-event
claims + outbox committed); while PostgreSQL or Kafka is down the same batch is retried;
a record that keeps failing for another reason is parked after the policy's attempts and
the partition goes on. Bad *input* does not get there: the rollups skip records they
cannot use (logged) and every bad command gets a rejected answer. A parked command is
answered too (`internal_error`), so its sender is not left waiting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from ioc_shared.platform.consumer import Delivery, DurableConsumer, FailurePolicy
from prometheus_client import CollectorRegistry

ROLLUP_CONSUMER = "reporting-rollups"
COMMAND_CONSUMER = "reporting-commands"

Handler = Callable[[Sequence[Delivery]], Awaitable[Awaitable[None] | None]]
OnParked = Callable[[Delivery, BaseException], Awaitable[None]]


def reporting_consumers(*, pool: asyncpg.Pool, schema: str, rollups: Handler, commands: Handler,
                        on_parked_command: OnParked, rollup_topics: Sequence[str],
                        commands_topic: str, group: str, max_records: int,
                        batch_timeout_ms: int, metrics: CollectorRegistry | None = None,
                        policy: FailurePolicy | None = None,
                        pipelined: bool = True) -> list[DurableConsumer]:
    """The rollups (a batch per transaction) and the commands (one per transaction).
    `pipelined`: the rollups take the next batch while one's last writes and COMMIT run
    (`RollupHandler.handle` returns that COMMIT; its offsets are committed after it)."""
    return [
        DurableConsumer(ROLLUP_CONSUMER, rollup_topics, f"{group}-rollups", rollups,
                        pool=pool, schema=schema, policy=policy,
                        max_records=max_records, batch_timeout_ms=batch_timeout_ms,
                        metrics=metrics, pipelined=pipelined),
        DurableConsumer(COMMAND_CONSUMER, [commands_topic], f"{group}-commands", commands,
                        pool=pool, schema=schema, policy=policy, batch=False,
                        on_parked=on_parked_command, metrics=metrics),
    ]


PROVINCE_SYNC_CONSUMER = "reporting-province-sync"


def province_sync_consumer(*, pool: asyncpg.Pool, schema: str, handler: Handler, topic: str,
                           group: str, max_records: int, batch_timeout_ms: int,
                           metrics: CollectorRegistry | None = None,
                           policy: FailurePolicy | None = None) -> DurableConsumer:
    """sync-province's status snapshots (a batch per transaction, as the rollups)."""
    return DurableConsumer(PROVINCE_SYNC_CONSUMER, [topic], f"{group}-province-sync", handler,
                           pool=pool, schema=schema, policy=policy, max_records=max_records,
                           batch_timeout_ms=batch_timeout_ms, metrics=metrics)
