"""The `ioc` command against the real broker and database: run as operators run it, a process."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.testing import database_url, kafka_bootstrap

IOC = Path(sys.executable).with_name("ioc")


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


def base_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOC_", "INGEST_", "ROUTING_"))}
    env.update(IOC_KAFKA_BOOTSTRAP=kafka_bootstrap(), IOC_DATABASE_URL=database_url(),
               IOC_REGISTRY_FILE=str(REPO_ROOT / "config" / "registry.yaml"), COLUMNS="200",
               IOC_DEV_MODE="1")
    env.update(extra)
    return env


async def run_ioc(*args: str, env: dict[str, str], timeout: float = 60) -> Ran:
    process = await asyncio.create_subprocess_exec(
        str(IOC), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())
