"""The reference every service benchmark is compared with.

A raw aiokafka loop: consume JSON messages, validate them into a pydantic
model, produce valid ones to an output topic and invalid ones to a rejected
topic with acks=all, and commit offsets only after every send of the batch is
confirmed. It is the floor of what a service doing real work can reach on the
same broker, messages and machine.
"""

from __future__ import annotations

import asyncio
import time

from ioc_shared.platform.kafka import make_consumer, make_producer
from pydantic import BaseModel, ValidationError

from bench.harness import RAW_CLIENT
from bench.workload import Submission


async def reference_loop(bootstrap: str, source: str, sink: str, rejected: str, expected: int,
                         group: str, model: type[BaseModel] = Submission) -> float:
    """Process `expected` messages from `source`; returns messages per second."""
    consumer = make_consumer(source, bootstrap=bootstrap, group_id=group,
                             auto_offset_reset="earliest",
                             max_poll_records=1000, fetch_max_bytes=16 * 1024 * 1024,
                             **RAW_CLIENT)
    producer = make_producer(bootstrap, client_id="bench-reference", acks="all",
                             enable_idempotence=True, linger_ms=2, max_batch_size=256 * 1024,
                             **RAW_CLIENT)
    await consumer.start()
    await producer.start()
    done = 0
    started: float | None = None
    try:
        while done < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            futures = []
            for records in batch.values():
                for rec in records:
                    try:
                        model.model_validate_json(rec.value)
                        topic = sink
                    except ValidationError:
                        topic = rejected
                    futures.append(await producer.send(topic, rec.value, key=rec.key))
                    done += 1
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
    assert started is not None
    return expected / (time.perf_counter() - started)
