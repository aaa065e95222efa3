"""The inbound batch subscriber: Kafka records in -> pipeline -> acknowledged.

Ack policy: NACK_ON_ERROR without auto-commit (`DURABLE`). The offsets of a
batch are committed only after `IngestPipeline.process` returned, i.e. after
every canonical, rejected and quarantine message was confirmed by the broker
(acks=all) and PostgreSQL committed. Bad *input* never raises (it becomes a
rejection); an infrastructure failure raises, the batch is sought back and
redelivered after a pause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from ioc_shared.platform.kafka import DURABLE
from ioc_shared.platform.logging import get_logger

from ingest.domain import Inbound
from ingest.handlers import IngestPipeline
from ingest.outgoing import H_REPLAY_ID
from ingest.settings import IngestSettings

log = get_logger(__name__)


def inbound_from_record(record: ConsumerRecord[Any, Any]) -> Inbound:
    headers = tuple((k, v if isinstance(v, bytes) else bytes(v or b"")) for k, v in record.headers or ())
    return Inbound(
        value=record.value, headers=headers, key=record.key,
        origin=f"{record.topic}:{record.partition}:{record.offset}", channel="kafka",
        replay=any(k == H_REPLAY_ID for k, _ in headers))


def _decodable_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    headers = [(k, v.decode("utf-8", "replace").encode()) for k, v in record.headers or ()]
    return ConsumerRecord(record.topic, record.partition, record.offset, record.timestamp,
                          record.timestamp_type, record.key, record.value, record.checksum,
                          record.serialized_key_size, record.serialized_value_size, headers)


async def tolerant_batch_parser(
        records: tuple[ConsumerRecord[Any, Any], ...],
        original: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's parser decodes every header as UTF-8 and would fail the whole batch on one
    bad header, forever. Parse a sanitized copy instead, but keep the exact records (bytes for
    quarantine, offsets for nack)."""
    try:
        return await original(records)
    except UnicodeDecodeError:
        message = await original(tuple(_decodable_headers(r) for r in records))
        message.raw_message = records
        return message


async def no_body(_: StreamMessage[Any]) -> None:
    """The handler reads the raw records; skip FastStream's per-message JSON decoding."""
    return None


def register_subscribers(broker: KafkaBroker, settings: IngestSettings, inbound_topic: str,
                         pipeline: IngestPipeline) -> None:
    @broker.subscriber(
        inbound_topic, batch=True, group_id=settings.consumer_group,
        max_records=settings.batch_max_records, batch_timeout_ms=settings.batch_timeout_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024, parser=tolerant_batch_parser, decoder=no_body,
        **DURABLE)
    async def on_inbound_batch(message: KafkaMessage) -> None:
        records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message  # type: ignore[assignment]
        if not records:
            return
        try:
            await pipeline.process([inbound_from_record(r) for r in records])
        except Exception as exc:
            log.error("inbound batch failed; it will be redelivered", error=repr(exc),
                      records=len(records))
            await asyncio.sleep(settings.retry_backoff_s)
            raise
