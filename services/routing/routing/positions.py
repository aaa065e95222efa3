"""Reading one Kafka record at a named position (a disputed canonical record).

A short-lived consumer per read: assign, seek, getone with a timeout. No group, no
commit: it only looks. Disputes are rare; a consumer kept open would hold a connection
and metadata for every topic for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from ioc_shared.platform.kafka import decode_headers, make_consumer


@dataclass(frozen=True, slots=True)
class RecordAt:
    value: bytes
    headers: dict[str, str]


class PositionReader:
    def __init__(self, bootstrap: str, *, timeout_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s

    async def read(self, topic: str, partition: int, offset: int) -> RecordAt | None:
        """The record at (topic, partition, offset); None if there is none there (no such
        partition, offset outside what the topic keeps, or not a data record). Raises if
        Kafka cannot be reached, so the command is retried rather than refused."""
        consumer = make_consumer(bootstrap=self.bootstrap, group_id=None, auto_offset_reset="none",
                                 request_timeout_ms=int(self.timeout_s * 1000),
                                 client_id="routing-position-reader")
        await consumer.start()
        try:
            if partition not in await self._partitions(consumer, topic):
                return None
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            first = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if not first <= offset < end:
                return None
            consumer.seek(tp, offset)
            try:
                found = await asyncio.wait_for(consumer.getone(tp), self.timeout_s)
            except TimeoutError:
                return None   # e.g. a transaction marker: no data record at that offset
            if found.offset != offset or found.value is None:
                return None   # removed (compaction) or a marker: the next record is another
            return RecordAt(found.value, decode_headers(found.headers))
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    @staticmethod
    async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        """The topic's partitions (none if there is no such topic). Assigning a partition
        makes the client load the topic's metadata; its first offset waits for it."""
        first = TopicPartition(topic, 0)
        consumer.assign([first])
        try:
            await consumer.beginning_offsets([first])
        except KafkaTimeoutError:
            return set()   # no such topic (an existing topic answers at once)
        return set(consumer.partitions_for_topic(topic) or ())
