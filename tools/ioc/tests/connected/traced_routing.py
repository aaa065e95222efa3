"""Run routing in this process with IOC_TRACES_FILE, send it a record and a command that carry
a trace context, and print what came back (one JSON line). Run as a fresh process: the
OpenTelemetry tracer provider can be set only once per process.

    python traced_routing.py TRACES_FILE TRACE_ID
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "services" / "routing" / "tests"
                       / "connected"))
os.environ["IOC_TRACES_FILE"] = sys.argv[1]

import asyncpg
from ioc_shared.testing import database_url, delete_topics_of_this_run, kafka_bootstrap, unique
from opentelemetry import trace
from routing.settings import RoutingSettings
from routing_harness import TopicWatch, World, record

TRACE_ID = sys.argv[2]
SENDER_SPANS = ("00f067aa0ba902b7", "00f067aa0ba902b8")


async def main() -> None:
    tag = unique("rt_trace")
    settings = RoutingSettings(
        topic_namespace=tag.replace("_", "-"), db_schema=tag, consumer_group=f"{tag}-group",
        kafka_bootstrap=kafka_bootstrap(), database_url=database_url(), http_port=0,
        log_level="WARNING", relay_mode="inline")
    world = World(settings, Path(sys.argv[1]).parent)
    watch = None
    try:
        await world.start()
        watch = await TopicWatch(world.topics.results, world.topics.events).start()
        incident = await world.publish_record(
            record("GT-TRACE-1", category="giao-thong", priority="cao", commune="tt-loc-ninh"),
            headers={"traceparent": f"00-{TRACE_ID}-{SENDER_SPANS[0]}-01"})
        await watch.wait(lambda: watch.envelopes(world.topics.events, "routing.incident.received",
                                                 incident))
        command_id = await send_traced_command(world, incident)
        [result] = await watch.wait(lambda: [e for e in watch.envelopes(world.topics.results)
                                             if e.payload["command_id"] == command_id])
        print("RESULT " + json.dumps({"status": result.payload["status"],
                          "result_traceparent": watch.headers(result.event_id)["traceparent"]}), flush=True)
    finally:
        if watch is not None:
            await watch.stop()
        await world.close()
        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        pool = await asyncpg.create_pool(database_url(), min_size=1, max_size=1)
        await pool.execute(f"DROP SCHEMA IF EXISTS {tag} CASCADE")
        await pool.close()
        await delete_topics_of_this_run()


async def send_traced_command(world: World, incident: str) -> str:
    """`World.command`, with a traceparent header (the harness sends none)."""
    import uuid

    from ioc_shared.contracts import Envelope
    from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
    from ioc_shared.registry import sign
    from routing_harness import SECRETS

    command_id = str(uuid.uuid4())
    env = Envelope(type="routing.command.verify", source_unit="ioc-loc-ninh", subject=incident,
                   payload={"command_id": command_id})
    value = env.to_bytes()
    headers = [(H_PRINCIPAL, b"ioc-operator"), (H_SIGNATURE, sign(SECRETS["ioc-operator"], value).encode()),
               ("traceparent", f"00-{TRACE_ID}-{SENDER_SPANS[1]}-01".encode())]
    producer = await world._producer()
    await producer.send_and_wait(world.topics.commands, value, key=incident.encode(), headers=headers)
    return command_id


if __name__ == "__main__":
    asyncio.run(main())
