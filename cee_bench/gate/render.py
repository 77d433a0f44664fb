"""The gate's table: per benchmark its figures now and saved, the change, its allowance and the verdict."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from cee_bench.gate.compare import SPREAD_FACTOR, Row
from cee_bench.gate.saved_run import Machine, SavedRun
from cee_bench.gate.suite import RERUN_ROUNDS_SCALE
from cee_bench.gate.workload import BACKBONE

_STYLES = {"REGRESSED": "bold red", "faster": "green", "new": "cyan", "not run": "dim", "other CPU": "dim",
           "ok": "", "ok (rerun)": "yellow", "saved": ""}


def render(rows: list[Row], threshold: float, device: str, machine: Machine, saved: SavedRun | None) -> Table:
    """The Rich table: the gated column is `norm.` (saved run → now), its change, its allowance and the verdict."""
    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    where = f"baseline of {saved.machine}, {saved.runs} runs" if saved else "no baseline"
    table = Table(title=f"Latency vs baseline ({BACKBONE}, {device} on {machine}; {where}; "
                        f"gate: norm. up > max({threshold:.0%}, {SPREAD_FACTOR:g} × spread))",
                  caption=escape("norm. = time ÷ reference time ÷ (E[l]/L for early exit); lower is faster. "
                                 "spread = the baseline runs' median absolute deviation; allowance = the change that "
                                 "fails the gate; reruns = changes of the confirmation reruns (alone, "
                                 f"{RERUN_ROUNDS_SCALE}× rounds)."))
    for column in ("benchmark", "median ms", "reference", "× ref", "E[l]", "realised", "norm. base", "norm. now",
                   "change", "spread", "allowance", "reruns", "verdict"):
        table.add_column(escape(column), justify="left" if column in ("benchmark", "reference", "verdict") else "right")
    for row in rows:
        fig = row.now or row.base.figures
        base = row.base.figures if row.base else None
        exit_layer = num(fig.mean_exit_layer, ".2f")
        if row.now and base and row.now.mean_exit_layer != base.mean_exit_layer:
            exit_layer += f" (was {num(base.mean_exit_layer, '.2f')})"
        table.add_row(escape(row.name), num(row.now and row.now.median_ms, ".2f"), fig.reference,
                      num(row.now and row.now.ratio, ".3f"), exit_layer,
                      num(row.now and row.now.realised_fraction, ".2f"), num(base and base.normalised, ".3f"),
                      num(row.now and row.now.normalised, ".3f"), num(row.change, "+.1%"),
                      num(row.base and row.base.spread, ".1%"), num(row.allowance, ".0%"),
                      ", ".join(num(change, "+.1%") or "not run" for change in row.reruns),
                      row.verdict, style=_STYLES[row.verdict])
    return table
