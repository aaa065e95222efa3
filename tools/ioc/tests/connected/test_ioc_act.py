"""`ioc act` and `ioc incidents` against a real routing service started in-process."""

import json
import sys

import pytest
from ioc_shared.platform.settings import REPO_ROOT

from .conftest import base_environment, run_ioc

sys.path.insert(0, str(REPO_ROOT / "services" / "routing" / "tests" / "connected"))
from routing_harness import World, record, world

__all__ = ["world"]
pytestmark = pytest.mark.connected
CREDENTIALS = str(REPO_ROOT / "config" / "credentials.dev.yaml")


async def test_an_operator_verifies_and_a_non_leader_cannot_approve(world: World) -> None:
    await world.start()
    incident = await world.publish_record(
        record("GT-IOC-1", category="giao-thong", priority="cao", commune="tt-loc-ninh"))
    env = base_environment(IOC_TOPIC_NAMESPACE=world.settings.topic_namespace,
                           ROUTING_DB_SCHEMA=world.settings.db_schema)

    async def shown() -> dict:  # type: ignore[type-arg]
        ran = await run_ioc("incidents", "show", incident, "--json", env=env)
        return json.loads(ran.stdout) if ran.code == 0 else {}

    async def received() -> bool:
        return (await shown()).get("incident", {}).get("state") == "received"

    for _ in range(100):  # each look is a process start: ~0.3 s
        if await received():
            break
    else:
        raise AssertionError("routing did not take the incident in")

    verified = await run_ioc("act", "verify", incident, "--as", "ioc-operator",
                             "--credentials", CREDENTIALS, "--json", env=env)
    assert verified.code == 0, verified.stderr
    answer = json.loads(verified.stdout)
    assert (answer["status"], answer["state"], answer["incident_id"]) == ("accepted", "verified", incident)
    assert len(answer["trace_id"]) == 32  # the command's own trace, for `ioc trace`

    refused = await run_ioc("act", "approve", incident, "--as", "ioc-operator",
                            "--credentials", CREDENTIALS, env=env)
    assert refused.code == 1 and "Traceback" not in refused.stderr
    assert "rejected" in refused.stdout

    approved = await run_ioc("act", "approve", incident, "--as", "ioc-leader",
                             "--credentials", CREDENTIALS, "--json", env=env)
    assert json.loads(approved.stdout)["state"] == "approved"

    history = (await shown())["history"]
    assert [h["to_state"] for h in history] == ["received", "verified", "approved"]
    assert history[1]["actor_principal"] == "ioc-operator"
    listed = await run_ioc("incidents", "list", "--state", "approved", "--json", env=env)
    assert [r["id"] for r in json.loads(listed.stdout)] == [incident]
    overdue = await run_ioc("incidents", "overdue", "--json", env=env)
    assert overdue.code == 0 and json.loads(overdue.stdout) == []


async def test_a_forged_signature_gets_no_acceptance(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await world.start()
    incident = await world.publish_record(record("GT-IOC-2", category="giao-thong", commune="tt-loc-ninh"))
    forged = tmp_path / "operator.yaml"
    forged.write_text("principal: ioc-leader\nsecret: not-the-leaders-secret-at-all\n", encoding="utf-8")
    env = base_environment(IOC_TOPIC_NAMESPACE=world.settings.topic_namespace,
                           ROUTING_DB_SCHEMA=world.settings.db_schema,
                           IOC_OPERATOR_CREDENTIALS=str(forged))
    ran = await run_ioc("act", "verify", incident, "--timeout", "8", "--json", env=env)
    assert ran.code == 1 and "Traceback" not in ran.stderr
    answer = json.loads(ran.stdout)  # from the operators' topic, not the claimed unit's feed
    assert (answer["status"], answer["reason_code"]) == ("rejected", "unauthenticated")
