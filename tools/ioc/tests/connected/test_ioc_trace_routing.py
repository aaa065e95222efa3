"""A trace through routing, written by the service to IOC_TRACES_FILE, read by `ioc trace`."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from .conftest import base_environment, run_ioc

pytestmark = pytest.mark.connected
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_the_hops_of_a_record_and_a_command_form_one_readable_trace(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("traced_routing.py")), str(traces), TRACE_ID,
        env=base_environment(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-3000:]
    [line] = [x for x in out.decode().splitlines() if x.startswith("RESULT ")]
    sent = json.loads(line.removeprefix("RESULT "))
    assert sent["status"] == "accepted"
    assert sent["result_traceparent"].split("-")[1] == TRACE_ID  # the answer stays in the trace

    shown = await run_ioc("trace", TRACE_ID, "--file", str(traces), "--json", env=base_environment())
    assert shown.code == 0, shown.stderr
    roots = json.loads(shown.stdout)["roots"]
    by_parent = {r["parent_span_id"]: r for r in roots}  # the sender's spans are not in the file
    intake = by_parent["00f067aa0ba902b7"]
    assert (intake["service"], intake["name"]) == ("routing", "routing.intake")
    command = by_parent["00f067aa0ba902b8"]
    assert command["name"].endswith("ioc.routing.commands.v1 process")
    assert command["attributes"]["messaging.kafka.message.offset"] == 0
    # The decision is in the incident's trace, under its intake (here the same trace id).
    [decided] = [c for c in intake["children"] if c["name"] == "routing.command verify"]
    queries = [c["name"] for c in decided["children"] if c["name"].startswith("postgresql")]
    assert queries[0] == "postgresql BEGIN" and queries[-1] == "postgresql COMMIT"
    # ... and its events are published (the outbox relay) as its children.
    assert any(c["name"].endswith("incident-events.v1 publish") for c in decided["children"])
    assert "postgresql UPDATE" in queries  # the incident's new state

    tree = await run_ioc("trace", TRACE_ID, "--file", str(traces), env=base_environment())
    assert "routing.intake" in tree.stdout and "commands.v1 process" in tree.stdout
