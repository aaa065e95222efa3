"""Fixtures of the routing connected tests; helpers live in `routing_harness` (a name no
other suite uses, so tests of several services can run in one pytest session)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_harness import watch, world

__all__ = ["watch", "world"]
