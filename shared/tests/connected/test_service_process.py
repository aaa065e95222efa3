"""The test kit's ServiceProcess: a service that never becomes healthy is not left running."""

import os
import sys
from pathlib import Path

import pytest
from ioc_shared.testing import ServiceProcess

pytestmark = pytest.mark.connected   # it starts a process


async def test_a_service_that_never_becomes_healthy_is_killed_before_the_error(tmp_path: Path
                                                                              ) -> None:
    # A stand-in "service" that runs but never answers /health.
    (tmp_path / "never_healthy.py").write_text("import time\ntime.sleep(600)\n")
    service = ServiceProcess("never-healthy", {**os.environ, "PYTHONPATH": str(tmp_path)},
                             tmp_path / "service.log", tmp_path)
    with pytest.raises(RuntimeError, match="did not become healthy"):
        await service.start(timeout=1.5)
    assert service._proc is None
    started = [pid for pid in os.listdir("/proc") if pid.isdigit()
               and _cmdline(pid).startswith(f"{sys.executable}\0-m\0never_healthy")]
    assert not started, "the process was left running"


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""
