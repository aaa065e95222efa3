"""CPU time spent by each part of the system during a benchmark phase (Linux /proc).

Rates on a shared 2-core machine swing with whatever else runs; CPU seconds per
message do not, much. They also say where a cost lies: the service itself, its
helper processes, PostgreSQL or the broker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ioc_shared.testing import process_tree

_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[1]


def _cpu_of(pid: int) -> float:
    """User + system seconds of one live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


@dataclass
class CpuMeter:
    """Snapshot CPU seconds of the service tree, PostgreSQL and Kafka; `since()` the deltas.

    A PostgreSQL backend that exits between two snapshots takes its time with it, so the
    service's pool connections must stay open over the measured phase (they do).
    """

    service_pid: int

    def snapshot(self) -> dict[str, float]:
        service = process_tree(self.service_pid)
        parts = {"service": _cpu_of(self.service_pid),
                 "helpers": sum(_cpu_of(p) for p in service[1:])}
        # The platform's own run dir (a git worktree's bench measures the main checkout's).
        run = Path(os.environ.get("IOC_PLATFORM_RUN_DIR") or REPO / ".run")
        postmaster = _pid_file(run / "pg" / "data" / "postmaster.pid")
        parts["postgres"] = sum(_cpu_of(p) for p in process_tree(postmaster)) if postmaster else 0.0
        kafka = _pid_file(run / "kafka" / "kafka.pid")
        parts["kafka"] = _cpu_of(kafka) if kafka else 0.0
        return parts

    def per_message_us(self, before: dict[str, float], after: dict[str, float],
                       messages: int) -> dict[str, float]:
        """Microseconds of CPU per message in each part, and their total."""
        out = {k: (after[k] - before[k]) * 1e6 / messages for k in before}
        out["total"] = sum(out.values())
        return out
