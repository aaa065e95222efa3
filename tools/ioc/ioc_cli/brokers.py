"""Small Kafka look-ups the commands share."""

from __future__ import annotations

import asyncio

from ioc_shared.platform.kafka import make_admin

from ioc_cli.errors import OperatorError, kafka_unreachable


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The topic's partitions, from the admin API (a consumer's metadata covers only what it
    subscribed to); an operator error when the topic does not exist."""
    admin = make_admin(bootstrap, client_id="ioc-cli", request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 5)
    except Exception as exc:
        raise kafka_unreachable(bootstrap, exc) from None
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(p["partition"] for t in described if not t.get("error_code") for p in t["partitions"])
    if not found:
        raise OperatorError(f"topic {topic} does not exist", where=bootstrap,
                            hint="has the service that declares it run once? is IOC_TOPIC_NAMESPACE right?")
    return found
