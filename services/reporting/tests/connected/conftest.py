"""Fixtures of the reporting connected tests; helpers live in `reporting_harness` (a name no
other suite uses, so tests of several services can run in one pytest session)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reporting_harness import rworld

__all__ = ["rworld"]
