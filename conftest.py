"""Clean-up shared by every test tier: the topics this session created are deleted at its end."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
from ioc_shared.testing import delete_topics_of_this_run

# Tests run on the development credentials of the repository.
os.environ.setdefault("IOC_DEV_MODE", "1")
# ... and the local broker in clear text, said explicitly (`scripts/platform.sh env` does too).
os.environ.setdefault("IOC_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Best effort: a unit-only run has no topics (nothing to do), and a broker that is
    # already gone must not turn a passing run into a failing one.
    with contextlib.suppress(Exception):
        asyncio.run(asyncio.wait_for(delete_topics_of_this_run(), 60))
