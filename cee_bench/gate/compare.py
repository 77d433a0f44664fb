"""The gate's verdicts: each benchmark's normalised figure now against the saved run's, within its allowance, and the
confirmation reruns of what looks regressed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from cee_bench.gate.saved_run import Entry, Figures, Machine, SavedRun

# The floor of every benchmark's allowance. A 25% slowdown of early exit must fail; five unchanged runs on this
# 2-core machine, with four other jobs loading it, moved early exit by at most ~10% (README, "Latency regression gate").
DEFAULT_THRESHOLD = "20"
# Allowance = max(threshold, SPREAD_FACTOR × spread), the spread being the saved runs' median absolute deviation
# (relative). On a shared machine the noise is a narrow core (a few %) plus rare bursts of ±15-30% from a neighbour's
# load; the MAD measures the core without one burst inflating it, 3 × MAD is about 2 standard deviations of that core,
# and the bursts are what the confirmation reruns are for.
SPREAD_FACTOR = 3.0
CONFIRMATIONS = 2  # reruns of a benchmark that looks regressed; it fails only if every one regresses


@dataclass(frozen=True)
class Row:
    name: str
    now: Figures | None
    base: Entry | None
    change: float | None  # relative change of the normalised figure
    allowance: float | None  # the change this benchmark may show before it counts as regressed
    verdict: str  # ok, REGRESSED, faster, new, not run, other CPU, saved
    reruns: tuple[float, ...] = ()  # changes of the confirmation reruns, in order


def machine_mismatch(saved: SavedRun, machine: Machine, path: Path) -> str | None:
    """What differs when the saved run was recorded on another CPU model, core count or GPU; None on the same one."""
    if saved.machine == machine:
        return None
    return f"baseline {path.name} was recorded on {saved.machine}, this run is on {machine}"


def allowance(entry: Entry, threshold: float) -> float:
    return max(threshold, SPREAD_FACTOR * entry.spread)


def judge(name: str, now: Figures | None, saved: SavedRun | None, threshold: float, same_machine: bool) -> Row:
    """One benchmark's row: regressed when its normalised figure rose by more than its allowance."""
    entry = saved.entries.get(name) if saved is not None else None
    if now is None or entry is None:
        return Row(name, now, entry, None, None, "not run" if now is None else "new")
    change = now.normalised / entry.figures.normalised - 1
    limit = allowance(entry, threshold)
    if not same_machine and not entry.figures.machine_independent:
        return Row(name, now, entry, change, None, "other CPU")
    verdict = "REGRESSED" if change > limit else "faster" if change < -limit else "ok"
    return Row(name, now, entry, change, limit, verdict)


def compare(results: dict[str, Figures], saved: SavedRun | None, threshold: float,
            same_machine: bool = True) -> list[Row]:
    """One row per benchmark run or in the saved run."""
    names = results.keys() | (saved.entries.keys() if saved is not None else set())
    return [judge(name, results.get(name), saved, threshold, same_machine) for name in sorted(names)]


def confirm(rows: list[Row], rerun: Callable[[list[str]], dict[str, Figures]], saved: SavedRun, threshold: float,
            same_machine: bool, times: int = CONFIRMATIONS) -> list[Row]:
    """Rerun what looks regressed, alone, up to `times` times: a benchmark stays REGRESSED only if every rerun
    regresses too; one that recovers reads `ok (rerun)`. The reruns' changes are kept on the row for the table."""
    rows = {row.name: row for row in rows}
    for _ in range(times):
        suspects = [name for name, row in rows.items() if row.verdict == "REGRESSED"]
        if not suspects:
            break
        again = rerun(suspects)
        for name in suspects:
            row, second = rows[name], judge(name, again.get(name), saved, threshold, same_machine)
            verdict = "ok (rerun)" if second.verdict in ("ok", "faster") else "REGRESSED"
            rows[name] = replace(row, verdict=verdict, reruns=(*row.reruns, second.change))
    return list(rows.values())
