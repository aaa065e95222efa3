"""Every answer and reminder reporting builds matches its model in `reporting.contract`
(the AsyncAPI document's schemas): the documents cannot drift from the code.

The payloads come from the real builders: the scheduler's reminders (`Scheduler._fire`)
and the command handler's answers (`CommandHandler._one`, its database step captured).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.platform.consumer import Delivery
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry, sign
from prometheus_client import CollectorRegistry
from reporting import commands, reports, scheduler
from reporting.commands import CommandHandler
from reporting.config import load_config
from reporting.contract import (
    COMMAND_RESULT,
    DUE_SOON,
    MESSAGES,
    OVERDUE,
    UNAUTHENTICATED_COMMAND,
    check_payload,
)
from reporting.reports import Topics

REGISTRY = load_registry(REPO_ROOT / "config" / "registry.yaml",
                         REPO_ROOT / "config" / "credentials.dev.yaml")
CONFIG = load_config(REPO_ROOT / "config" / "reporting.yaml", REGISTRY)
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
TOPICS = Topics("c", "results", "published", "notifications", "unauthenticated")


def _payloads(messages: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for topic, env, _, _ in messages:
        doc = orjson.loads(env.to_bytes())
        out.append((topic, doc["type"], doc["payload"]))
    return out


def _service(statuses: set[str]) -> Any:
    async def period_status(_: Any, __: str) -> set[str]:
        return statuses

    return SimpleNamespace(config=CONFIG, calendar=CONFIG.calendar(), topics=TOPICS,
                           ioc_unit=REGISTRY.centre.unit, clock=lambda: NOW, registry=REGISTRY,
                           metrics=CollectorRegistry(),
                           repo=SimpleNamespace(period_status=period_status, s="reporting"))


async def test_reminders_match_their_model(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []

    async def enqueue_many(_: Any, __: str, messages: list[Any]) -> None:
        sent.extend(messages)

    monkeypatch.setattr(scheduler, "enqueue_many", enqueue_many)
    for statuses in (set(), {"draft"}):
        worker = scheduler.Scheduler(_service(statuses), instance="t", poll_s=1)
        assert await worker._fire(None, "monthly:2026-11", scheduler.SOON,
                                  datetime(2026, 11, 19, 1, tzinfo=UTC)) == "sent"
        assert await worker._fire(None, "monthly:2026-11", scheduler.LATE, NOW) == "sent"
    found = _payloads(sent)
    assert {t for _, t, _ in found} == {DUE_SOON, OVERDUE} == {reports.DUE_SOON, reports.OVERDUE}
    problems = [p for _, t, payload in found if (p := check_payload(t, payload))]
    assert not problems, "\n".join(problems)
    assert all(topic == TOPICS.notifications and t in MESSAGES["ioc.reporting.notifications.v1"]
               for topic, t, _ in found)


def _command(principal: str, secret: str, verb: str, payload: dict[str, Any]) -> Delivery:
    env = Envelope(type=f"reporting.command.{verb}", source_unit="x", subject="monthly:2026-11",
                   payload=payload)
    value = env.to_bytes()
    headers = (("ioc-principal", principal.encode()), ("ioc-signature", sign(secret, value).encode()))
    return Delivery("c", 0, 7, None, value, headers, 0)


async def test_answers_to_commands_match_their_models(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = CommandHandler(_service(set()))
    answered: list[Any] = []

    async def answer_only(_: uuid.UUID, message: Any) -> None:
        answered.append(message)

    monkeypatch.setattr(handler, "_answer_only", answer_only)
    principal = next(p for p in REGISTRY.principals.values()
                     if REGISTRY.secret_of(p.id) is not None)
    secret = REGISTRY.secret_of(principal.id)
    assert secret is not None
    body = {"command_id": str(uuid.uuid4())}
    await handler._one(_command(principal.id, "wrong", "generate", body))       # unauthenticated
    await handler._one(_command(principal.id, secret.decode(), "teleport", body))  # refused
    await handler._one(_command(principal.id, secret.decode(), "generate", {}))    # malformed
    accepted = handler._answer(
        unit=principal.unit, cause=uuid.uuid4(), status="accepted", reason=None,
        message="Đã ban hành", command_id=uuid.uuid4(), verb="issue", principal=principal.id,
        report={"report_id": uuid.uuid4(), "status": "issued", "number": "12/BC-IOC",
                "period_key": "monthly:2026-11", "version": 2}, duplicate=True)
    found = _payloads([*answered, accepted])
    assert [t for _, t, _ in found] == [UNAUTHENTICATED_COMMAND, COMMAND_RESULT, COMMAND_RESULT,
                                        COMMAND_RESULT]
    assert (commands.RESULT, commands.UNAUTHENTICATED) == (COMMAND_RESULT, UNAUTHENTICATED_COMMAND)
    problems = [p for _, t, payload in found if (p := check_payload(t, payload))]
    assert not problems, "\n".join(problems)


def test_a_payload_that_drifted_is_caught() -> None:
    payload = {"period": "monthly:2026-11", "label": "tháng 11/2026", "due_on": "2026-11-23",
               "unit": "ioc-loc-ninh", "contact_role": "leader", "message": "…", "statuses": []}
    assert check_payload(DUE_SOON, payload) is None
    assert check_payload(DUE_SOON, {**payload, "due_on": 20261123}) is not None
    assert check_payload(DUE_SOON, {k: v for k, v in payload.items() if k != "unit"}) is not None
    assert check_payload(DUE_SOON, {**payload, "extra": True}) is not None
