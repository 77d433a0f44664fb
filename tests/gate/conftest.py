"""The latency suite's test-only support (`benchmarks/slowdown.py`) lives beside the suite it slows, outside the
package: these tests import it from there."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
