"""Kafka entry points. Thin: raw records in, handler call, nothing else.

Ack policy: `DURABLE` (NACK_ON_ERROR, manual commits). Offsets are committed only after
the handler returned, i.e. after its PostgreSQL transaction (rollup deltas + the
processed-event claims) committed. On an unexpected error (database down) the batch is
nacked and redelivered; the claims make the redelivery harmless. Bad input never
raises: handlers skip unusable records and answer every bad command.

Until the kit's `ioc_shared.platform.consumer.DurableConsumer` is on this branch, this
is the FastStream batch subscriber routing uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from ioc_shared.platform.kafka import DURABLE, decode_headers
from ioc_shared.platform.logging import get_logger

log = get_logger(__name__)

RETRY_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class RawDelivery:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]


def _delivery(rec: ConsumerRecord[Any, Any]) -> RawDelivery:
    return RawDelivery(rec.topic, rec.partition, rec.offset, rec.key, rec.value or b"",
                       decode_headers(rec.headers))


async def _raw_batch(msg: StreamMessage[Any]) -> Any:
    return [_delivery(r) for r in msg.raw_message]


async def _raw_one(msg: StreamMessage[Any]) -> Any:
    return _delivery(msg.raw_message)


Handler = Callable[[Sequence[RawDelivery]], Awaitable[None]]


def register_subscribers(broker: KafkaBroker, *, rollups: Handler, commands: Handler | None,
                         rollup_topics: Sequence[str], commands_topic: str, group: str,
                         max_records: int, batch_timeout_ms: int) -> None:
    async def on_rollup_records(records: Any) -> None:
        try:
            await rollups(records)
        except Exception:
            log.exception("rollup batch failed; will be redelivered", records=len(records))
            await asyncio.sleep(RETRY_PAUSE_S)
            raise

    broker.subscriber(*rollup_topics, group_id=f"{group}-rollups", batch=True,
                      max_records=max_records, batch_timeout_ms=batch_timeout_ms,
                      decoder=_raw_batch, title="reporting-rollups", **DURABLE)(on_rollup_records)

    if commands is None:
        return
    command_handler = commands

    async def on_command(record: Any) -> None:
        try:
            await command_handler([record])
        except Exception:
            log.exception("report command failed; will be redelivered", topic=record.topic,
                          partition=record.partition, offset=record.offset)
            await asyncio.sleep(RETRY_PAUSE_S)
            raise

    broker.subscriber(commands_topic, group_id=f"{group}-commands", decoder=_raw_one,
                      title="reporting-commands", **DURABLE)(on_command)
