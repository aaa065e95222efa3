"""Kafka entry points. Thin: raw records in, handler call, nothing else.

Ack policy (both subscribers): `DURABLE` = NACK_ON_ERROR with manual commits.
The offset is committed only after the handler returned, i.e. after its
PostgreSQL transaction (state + processed-event claim + outbox) committed.
On an unexpected error (database down) the handler raises, the records are
nacked (seek back) and redelivered; the processed-event claim makes the
redelivery harmless. Bad *input* never raises: the intake skips records it
cannot use (logged) and every bad command gets a rejected answer, so one
poison message cannot block a partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from ioc_shared.platform.kafka import DURABLE, decode_headers
from ioc_shared.platform.logging import get_logger

from routing.handlers import CommandHandler, Inbound, IntakeHandler

log = get_logger(__name__)

# Back off before a failed batch is redelivered, so an outage is not a hot loop.
RETRY_PAUSE_S = 1.0


def _inbound(rec: ConsumerRecord[Any, Any]) -> Inbound:
    return Inbound(rec.topic, rec.partition, rec.offset, rec.value or b"",
                   decode_headers(rec.headers))


async def _raw_batch(msg: StreamMessage[Any]) -> Any:
    """Skip JSON decoding: handlers parse envelopes themselves (and need the raw bytes)."""
    return [_inbound(r) for r in msg.raw_message]


async def _raw_one(msg: StreamMessage[Any]) -> Any:
    return _inbound(msg.raw_message)


def register_subscribers(broker: KafkaBroker, *, intake: IntakeHandler, commands: CommandHandler,
                         incident_topics: Sequence[str], commands_topic: str, group: str,
                         max_records: int, batch_timeout_ms: int, intake_consumers: int) -> None:
    async def on_incident_records(records: Any) -> None:
        try:
            await intake.handle_batch(records)
        except Exception:
            log.exception("intake batch failed; will be redelivered", records=len(records))
            await asyncio.sleep(RETRY_PAUSE_S)
            raise

    # Several consumers of one group in one process (ROUTING_INTAKE_CONSUMERS) share the
    # partitions: while one waits for PostgreSQL, another decides its batch.
    for i in range(intake_consumers):
        broker.subscriber(*incident_topics, group_id=f"{group}-intake", batch=True,
                          max_records=max_records, batch_timeout_ms=batch_timeout_ms,
                          decoder=_raw_batch, title=f"routing-intake-{i}",
                          **DURABLE)(on_incident_records)

    @broker.subscriber(commands_topic, group_id=f"{group}-commands", decoder=_raw_one, **DURABLE)  # type: ignore[untyped-decorator]
    async def on_command(record: Any) -> None:
        try:
            await commands.handle(record)
        except Exception:
            log.exception("command failed; will be redelivered", topic=record.topic,
                          partition=record.partition, offset=record.offset)
            await asyncio.sleep(RETRY_PAUSE_S)
            raise
