"""Unit tests of reporting: helpers in `reporting_examples` (a name no other suite uses)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
