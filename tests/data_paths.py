"""Where the tests find real data: `$CEE_BENCH_TEST_DATA` (`make test DATA=...` sets it), else `../shared/data` beside
the checkout. Tests that need it skip, saying so, where it is absent (`cee-bench data glue --to DIR/glue` makes one)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CEE_BENCH_TEST_DATA") or ROOT.parent / "shared" / "data")
GLUE = SHARED_DATA / "glue"
