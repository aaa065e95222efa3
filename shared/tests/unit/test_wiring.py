"""The wiring services repeat around their runtime (ioc_shared.platform.wiring, .relay)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, cast

from ioc_shared.platform.relay import child_env
from ioc_shared.platform.runtime import ServiceRuntime
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.platform.wiring import (
    register_consumers,
    run_until,
    stop_consumers_then_broker,
    stop_on_signals,
)


class _Runtime:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.checks: dict[str, Any] = {}
        self.failed = asyncio.Event()
        self.broker = self

    def add_check(self, name: str, check: Any) -> None:
        self.checks[name] = check

    async def stop(self) -> None:
        self.calls.append("broker.stop")

    async def wait_for_shutdown(self) -> None:
        await self.failed.wait()


class _Consumer:
    def __init__(self, name: str, rt: _Runtime) -> None:
        self.name, self.rt = name, rt

    def register(self, broker: Any) -> None:
        self.rt.calls.append(f"register {self.name}")

    def stop(self) -> None:
        self.rt.calls.append(f"stop {self.name}")

    def health(self) -> tuple[bool, str | None]:
        return True, None


async def test_consumers_are_registered_with_their_checks_and_stopped_before_the_broker() -> None:
    rt = _Runtime()
    consumers: Any = [_Consumer("a", rt), _Consumer("b", rt)]
    register_consumers(cast(ServiceRuntime, rt), consumers)
    assert set(rt.checks) == {"a", "b"}
    await stop_consumers_then_broker(cast(ServiceRuntime, rt), consumers)
    assert rt.calls == ["register a", "register b", "stop a", "stop b", "broker.stop"]


async def test_run_until_returns_on_stop_or_on_a_failed_task() -> None:
    rt, stop = _Runtime(), asyncio.Event()
    stop.set()
    await asyncio.wait_for(run_until(stop, cast(ServiceRuntime, rt)), 5)
    rt.failed.set()
    await asyncio.wait_for(run_until(asyncio.Event(), cast(ServiceRuntime, rt)), 5)


def test_a_relay_child_gets_the_settings_of_its_service_through_its_environment() -> None:
    settings = ServiceSettings(instance_id="relay-test", topic_namespace="ns")
    env = child_env(settings)
    assert env["IOC_INSTANCE_ID"] == "relay-test" and env["IOC_TOPIC_NAMESPACE"] == "ns"
    assert all(isinstance(v, str) for v in env.values())


async def test_sigterm_sets_the_stop_event() -> None:
    loop = asyncio.get_running_loop()
    stop = stop_on_signals()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
