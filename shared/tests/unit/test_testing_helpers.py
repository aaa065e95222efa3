"""The connected tiers' helpers that run a service in the test's event loop and sign commands."""

from __future__ import annotations

import asyncio

import pytest
from ioc_shared.commands import verified_sender
from ioc_shared.contracts import Envelope
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from ioc_shared.testing import InLoopServices, signed_command, signed_headers, start_in_loop


async def _service(stop: asyncio.Event, ready: asyncio.Event) -> None:
    ready.set()
    await stop.wait()


async def _broken(stop: asyncio.Event, ready: asyncio.Event) -> None:
    raise RuntimeError("no database")


async def test_a_started_service_is_ready_and_stops_when_asked() -> None:
    services = InLoopServices("svc")
    await services.start(_service)
    task = services.instances[0][0]
    assert not task.done()
    await services.stop()
    assert task.done() and task.exception() is None and services.instances == []


async def test_a_service_that_fails_to_start_raises_its_error() -> None:
    with pytest.raises(RuntimeError, match="no database"):
        await start_in_loop("svc", _broken)


def test_signed_headers_verify_as_the_principal() -> None:
    registry = load_registry(REPO_ROOT / "config" / "registry.yaml",
                             REPO_ROOT / "config" / "credentials.dev.yaml")
    value = b'{"type": "reporting.command.generate"}'
    headers = dict(signed_headers("xa-loc-an-system", "dev-secret-xa-loc-an-0001", value))
    principal = verified_sender(registry, headers["ioc-principal"].decode(),
                                headers["ioc-signature"].decode(), value)
    assert principal is not None and principal.id == "xa-loc-an-system"


def test_a_signed_command_is_an_envelope_signed_as_the_principal() -> None:
    value, headers = signed_command("routing.command.verify", "inc-1", {"command_id": "c-1"},
                                    principal="p", secret="s")
    env = Envelope.from_bytes(value)
    assert (env.type, env.subject, env.payload) == ("routing.command.verify", "inc-1",
                                                    {"command_id": "c-1"})
    assert headers == signed_headers("p", "s", value)
