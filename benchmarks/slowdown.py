"""Known slowdowns to inject into the latency suite, to show the gate catches them: test-only support, beside the suite
it slows (`tests/gate/` and `gate_sensitivity.py` import it), not part of the package.

- `rows_slower(fraction, calibration)`: a `cee_bench.classification.runtime.row_hook` that busy-waits, at every
  computed layer, for `fraction` of one row's per-layer cost in the benchmark now running (as timed in
  `calibration`, a run just before), times the rows still computed. It scales with the batch, so it slows batch 32
  as much as batch 1 (a per-call sleep is amortised away over the batch).
- `twice(sweep)`: a `cee_bench.classification.curve.sweep` that replays every sweep twice (exactly 2× slower).

Busy-waiting (not sleeping) keeps the added time on the CPU, as slower code would be.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable

from cee_bench.gate.saved_run import Figures
from cee_bench.gate.workload import B1_INPUTS, NUM_INPUTS


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def row_costs(figures: dict[str, Figures]) -> dict[str, float]:
    """Seconds per row and computed layer of each early-exit benchmark in a run of the suite."""
    rows_per_round = {"1": B1_INPUTS, "32": NUM_INPUTS}
    costs = {}
    for name, fig in figures.items():
        match = re.fullmatch(r"early_exit\[.+-b(\d+)\]", name)
        if match:
            costs[name] = fig.median_ms / 1000 / (rows_per_round[match.group(1)] * fig.mean_exit_layer)
    return costs


def current_benchmark() -> str:
    """The suite's benchmark now running, from pytest's `PYTEST_CURRENT_TEST` ("…::test_<name> (call)")."""
    return os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].rsplit(" ", 1)[0].removeprefix("test_")


def rows_slower(fraction: float, calibration: dict[str, Figures]) -> Callable[[int, int], None]:
    """A row hook making each early-exit benchmark `fraction` slower than it ran in `calibration` (a run just
    before, so on a shared machine the load it was timed under is close to the load the slowed run sees)."""
    per_row_s = {name: fraction * cost for name, cost in row_costs(calibration).items()}

    def hook(layer: int, rows: int) -> None:
        spin(rows * per_row_s[current_benchmark()])

    return hook


def twice(sweep: Callable) -> Callable:
    def slowed(*args, **kwargs):
        sweep(*args, **kwargs)
        return sweep(*args, **kwargs)

    return slowed
