"""Known slowdowns to inject into the latency suite, to show the gate catches them (tests and the sensitivity note).

- `rows_slower(fraction, keyword)`: a `cee_bench.runtime.row_hook` that busy-waits, at every computed layer, for
  `fraction` of one row's per-layer cost in the benchmark now running, times the rows still computed. It scales with the batch, so it
  slows batch 32 as much as batch 1 (a per-call sleep is amortised away over the batch).
- `twice(sweep)`: a `cee_bench.curve.sweep` that replays every sweep twice (exactly 2× slower).

The row cost is measured in CPU seconds (one run of the suite with pytest-benchmark's timer set to
`time.thread_time`) and the hook waits for CPU seconds, so on a loaded machine the added work stretches exactly as the
code it is added to, and the injected fraction does not depend on the load when calibrated or when slowed.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable

from cee_bench import bench


def spin(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def row_costs(keyword: str | None = None) -> dict[str, float]:
    """CPU seconds per row and computed layer of each early-exit benchmark."""
    figures = bench.run_suite("cpu", keyword=keyword, extra=("--benchmark-timer", "time.thread_time")).figures
    rows_per_round = {"1": bench.B1_INPUTS, "32": bench.NUM_INPUTS}
    costs = {}
    for name, fig in figures.items():
        match = re.fullmatch(r"early_exit\[.+-b(\d+)\]", name)
        if match:
            costs[name] = fig.median_ms / 1000 / (rows_per_round[match.group(1)] * fig.mean_exit_layer)
    return costs


def current_benchmark() -> str:
    """The suite's benchmark now running, from pytest's `PYTEST_CURRENT_TEST` ("…::test_<name> (call)")."""
    return os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].rsplit(" ", 1)[0].removeprefix("test_")


def rows_slower(fraction: float, keyword: str | None = None) -> Callable[[int, int], None]:
    """A row hook making each early-exit benchmark `fraction` slower (see the module docstring)."""
    per_row_s = {name: fraction * cost for name, cost in row_costs(keyword).items()}

    def hook(layer: int, rows: int) -> None:
        spin(rows * per_row_s[current_benchmark()])

    return hook


def twice(sweep: Callable) -> Callable:
    def slowed(*args, **kwargs):
        sweep(*args, **kwargs)
        return sweep(*args, **kwargs)

    return slowed
