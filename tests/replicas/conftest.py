"""The replica tests reuse the fault-injection harness (tests/faults) and need PostgreSQL
(the pg_url fixture of tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))
