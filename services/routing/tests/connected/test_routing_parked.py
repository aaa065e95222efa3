"""A command routing fails on (a bug, not bad input) is parked and answered `internal_error`;
the partition goes on; once fixed, `python -m routing parked replay` gets it processed."""

from __future__ import annotations

import asyncio
import json

import pytest
from routing.handlers import CommandHandler
from routing.main import cli
from routing_harness import World, record
from typer.testing import CliRunner

pytestmark = pytest.mark.connected

BUG = "this note trips a bug"


def results_for(watch, command_id: str):  # type: ignore[no-untyped-def]
    return [e.payload for e in watch.envelopes(type="routing.command.result")
            if e.payload["command_id"] == command_id]


async def test_a_failing_command_is_parked_answered_and_replayed(world: World, watch,
                                                                  monkeypatch) -> None:
    execute = CommandHandler._execute
    bug = {"on": True}

    async def buggy(self, cmd, actor, env, *args):  # type: ignore[no-untyped-def]
        if bug["on"] and env.payload.get("note") == BUG:
            raise RuntimeError("a bug in this version")
        return await execute(self, cmd, actor, env, *args)

    monkeypatch.setattr(CommandHandler, "_execute", buggy)
    await world.start()
    w = await watch()
    t = world.topics
    incident = await world.publish_record(record("MT-PARK-1", category="giao-thong",
                                                 commune="tt-loc-ninh"))
    await w.wait(lambda: w.envelopes(t.events, "routing.incident.received", incident))

    parked_cid = await world.command("ioc-operator", "verify", incident, note=BUG)
    (answer,) = await w.wait(lambda: results_for(w, parked_cid))
    assert (answer["status"], answer["reason_code"]) == ("rejected", "internal_error")
    assert (answer["unit"], answer["principal"], answer["command"]) == (
        "ioc-loc-ninh", "ioc-operator", "verify")

    # The same incident's partition goes on with the next command.
    next_cid = await world.command("ioc-leader", "approve", incident)
    (after,) = await w.wait(lambda: results_for(w, next_cid))
    assert after["status"] == "rejected" and after["reason_code"] != "internal_error"

    env = {"ROUTING_DB_SCHEMA": world.settings.db_schema,
           "ROUTING_KAFKA_BOOTSTRAP": world.settings.kafka_bootstrap,
           "ROUTING_DATABASE_URL": world.settings.database_url}
    runner = CliRunner()
    listed = await asyncio.to_thread(runner.invoke, cli, ["parked", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (parked,) = json.loads(listed.output)
    assert parked["consumer"] == "routing-commands" and parked["topic"] == t.commands
    assert BUG not in listed.output, "the list shows no payload"

    bug["on"] = False
    replayed = await asyncio.to_thread(runner.invoke, cli,
                                       ["parked", "replay", "--id", str(parked["id"])], env=env)
    assert replayed.exit_code == 0, replayed.output
    done = await w.wait(lambda: [r for r in results_for(w, parked_cid)
                                 if r["status"] == "accepted"])
    assert done[0]["state"] == "verified"
    still = await asyncio.to_thread(runner.invoke, cli, ["parked", "list", "--json"], env=env)
    assert json.loads(still.output) == []
