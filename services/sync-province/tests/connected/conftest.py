"""Fixtures of the sync-province connected tests; helpers live in `sync_harness` (a name no
other suite uses, so tests of several services can run in one pytest session)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_harness import link

__all__ = ["link"]
