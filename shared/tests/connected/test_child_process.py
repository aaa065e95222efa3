"""A service's child process (the outbox relay's) dies with its parent and is reaped."""

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ioc_shared.platform.relay import ChildProcess

pytestmark = pytest.mark.connected


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


PARENT = textwrap.dedent("""
    import asyncio, sys
    from ioc_shared.platform.relay import ChildProcess

    async def main():
        child = ChildProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                             {})
        task = asyncio.create_task(child.run())
        while child.pid is None:
            await asyncio.sleep(0.05)
        print(child.pid, flush=True)
        await task

    asyncio.run(main())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_gets_sigterm_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _state(child) not in (None, "Z")
        parent.kill()                 # no clean-up code runs in the parent
        parent.wait()
        deadline = time.monotonic() + 5
        while _state(child) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(child) in (None, "Z"), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


async def test_stop_ends_the_child_and_reaps_it() -> None:
    child = ChildProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                         dict(os.environ), grace_s=5)
    task = asyncio.create_task(child.run())
    await asyncio.wait_for(child.started.wait(), 10)
    pid = child.pid
    await child.stop()
    await asyncio.wait_for(task, 5)
    assert _state(pid) is None, "the child is still there (or a zombie)"


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    child = ChildProcess("stubborn", [sys.executable, "-c", stubborn], dict(os.environ),
                         grace_s=0.5)
    task = asyncio.create_task(child.run())
    await asyncio.wait_for(child.started.wait(), 10)
    await asyncio.sleep(0.3)           # the child has set its handler
    pid = child.pid
    started = time.monotonic()
    await child.stop()
    await asyncio.wait_for(task, 5)
    assert _state(pid) is None
    assert time.monotonic() - started >= 0.5   # SIGTERM was ignored: killed after the grace
