"""Fault tier: ingest, routing, reporting and sync-province, as real processes, ride out
broker and database faults.

A private Kafka broker and PostgreSQL server (free ports, temporary run dir; the shared
platform is never touched) are started for this test and stopped at its end, also when
it fails (`bench.reliability.PrivatePlatform`: a context manager, `atexit`, and a
detached reaper for a test process that is killed). One short round of each fault,
mid-stream; `make chaos` runs longer ones, repeatedly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.reliability import FAULTS, SERVICES, FaultResult, run_faults

pytestmark = pytest.mark.faults

RECORDS = 600
RATE = 200.0
DOWN_S = 3.0
# Per service and fault: a handful of lines per outage is the aim; far below the
# ~130,000 lines a 25 s outage cost before.
MAX_LOG_LINES = 150


async def test_services_ride_out_broker_and_database_faults(tmp_path: Path) -> None:
    report = await run_faults(rounds=1, records=RECORDS, rate=RATE, down_s=DOWN_S,
                              settle_timeout_s=60.0, log_dir=tmp_path)
    results = [FaultResult(**r) for r in report["results"]]
    assert [r.fault for r in results] == list(FAULTS)
    problems = {r.fault: p for r in results if (p := r.problems(max_log_lines=MAX_LOG_LINES))}
    logs = "\n".join(f"--- {name}.log (tail)\n{(tmp_path / f'{name}.log').read_text()[-4000:]}"
                     for name in SERVICES)
    assert not problems, f"{problems}\n{report}\n{logs}"
    for r in results:
        assert r.caught_up_s is not None, f"{r.fault}: not every input got through\n{logs}"
    # SIGTERM ends each service within its grace period (10 s) and a little, even with
    # the broker down (it is killed before the services are stopped).
    assert all(took < 12.0 for took in report["shutdown_s"].values()), report["shutdown_s"]
    assert report["exit_codes"] == dict.fromkeys(SERVICES, 0), f"{report}\n{logs}"
    print({"shutdown_s": report["shutdown_s"],
           **{r.fault: {"down_s": r.down_s, "recovery_s": r.recovery_s,
                        "caught_up_s": r.caught_up_s, "log_lines": r.log_lines,
                        "lost/duplicate reported": (r.lost_reported, r.duplicate_reported),
                        "lost/duplicate province": (r.lost_province, r.duplicate_province)}
              for r in results}})
