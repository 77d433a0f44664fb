"""How well the latency gate separates noise from regressions, against this machine's committed saved run (issue 14).

    python benchmarks/gate_sensitivity.py unchanged 5   # five unchanged gate runs: false alarms, largest change each
    python benchmarks/gate_sensitivity.py slowed        # early exit 25% slower (row hook), every sweep 2x slower

Each gate run is what `cee-bench bench` does (one suite run, then confirmation reruns of what looks regressed); the
slowdowns are `benchmarks/slowdown.py`'s, injected in this process. Prints the load average with every figure.
"""

from __future__ import annotations

import os
import sys

import slowdown
from rich.console import Console

from cee_bench.classification import curve, runtime
from cee_bench.gate import command, compare, render, saved_run, suite, workload

SLOWDOWN = 0.25


def load() -> str:
    return "load %.1f %.1f %.1f" % os.getloadavg()


def gate_run(saved: saved_run.SavedRun) -> list[compare.Row]:
    threshold = command.parse_threshold(compare.DEFAULT_THRESHOLD)
    figures = suite.run_suite("cpu").figures
    rows = compare.compare(figures, saved, threshold)
    return compare.confirm(rows, lambda names: suite.rerun("cpu", names), saved, threshold, True)


def main(mode: str, runs: int = 1) -> None:
    machine = saved_run.this_machine("cpu")
    path = saved_run.default_path("cpu", machine, saving=False)
    saved = saved_run.load(path, "cpu", workload.BACKBONE)
    console = Console(width=200)
    if mode == "slowed":
        calibration = suite.run_suite("cpu", keyword="early_exit").figures
        runtime.row_hook = slowdown.rows_slower(SLOWDOWN, calibration)
        curve.sweep = slowdown.twice(curve.sweep)
    largest: dict[str, float] = {}
    for run in range(runs):
        before = load()
        rows = gate_run(saved)
        console.print(render.render(rows, command.parse_threshold(compare.DEFAULT_THRESHOLD), "cpu", machine, saved))
        alarms = [row.name for row in rows if row.verdict == "REGRESSED"]
        rerun = [row.name for row in rows if row.reruns]
        print(f"run {run + 1} ({before} -> {load()}): {len(alarms)} REGRESSED {alarms}; rerun {rerun}")
        for row in rows:
            if row.change is not None and abs(row.change) > abs(largest.get(row.name, 0)):
                largest[row.name] = row.change
    print(f"largest change per benchmark over {runs} run(s): "
          + ", ".join(f"{name} {change:+.1%}" for name, change in sorted(largest.items())))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
