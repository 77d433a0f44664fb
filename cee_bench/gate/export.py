"""What the gate hands CI: its verdicts as JSON (`--json`) and its figures in github-action-benchmark's
`customSmallerIsBetter` format (`--github-benchmark`), and the exit codes a workflow can tell apart.

The JSON says, per benchmark, the gated figure now and in the saved run, the change, the allowance and the verdict,
plus the run's outcome and exit code, so a CI step can annotate or comment without parsing the table. The
github-action-benchmark file is a list of {name, unit, value, extra}: the normalised figure (time ÷ its reference
timed in the same round, ÷ E[l]/L for early exit), which is smaller when faster and comparable from one runner to the
next, unlike raw milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from cee_bench.gate.compare import Row
from cee_bench.results import write_json

# Exit codes: 0 no regression; 1 a regression confirmed by its reruns; 2 bad input (the command line's, before
# anything is timed); 3 the benchmark suite itself failed (a crash or an error in a benchmark), so no verdict.
REGRESSED = 1
SUITE_FAILED = 3
UNIT = "× reference (normalised)"


def outcome(code: int) -> str:
    return {0: "ok", REGRESSED: "regressed", SUITE_FAILED: "suite failed"}.get(code, "error")


def _row(row: Row) -> dict[str, Any]:
    return {"name": row.name, "verdict": row.verdict,
            "normalised": row.now.normalised if row.now else None,
            "baseline": row.base.figures.normalised if row.base else None,
            "change": row.change, "allowance": row.allowance, "spread": row.base.spread if row.base else None,
            "reruns": list(row.reruns), "figures": asdict(row.now) if row.now else None}


def gate_record(rows: list[Row], code: int, *, device: str, machine: str, baseline: Path | None, threshold: float,
                notices: list[str], error: str | None = None) -> dict[str, Any]:
    """The `--json` document of one gate run (or `--save`: every verdict is "saved")."""
    return {"format": 1, "outcome": outcome(code), "exit_code": code, "device": device, "machine": machine,
            "baseline": str(baseline) if baseline else None, "threshold": threshold, "notices": notices,
            "error": error, "benchmarks": [_row(row) for row in rows]}


def github_benchmark(rows: list[Row]) -> list[dict[str, Any]]:
    """github-action-benchmark's `customSmallerIsBetter` entries: one per benchmark timed in this run."""
    entries = []
    for row in rows:
        if row.now is None:
            continue
        extra = [f"verdict {row.verdict}", f"reference {row.now.reference}"]
        if row.change is not None:
            extra.insert(0, f"change {row.change:+.1%}" + (f" (allowance {row.allowance:.0%})" if row.allowance else ""))
        entries.append({"name": row.name, "unit": UNIT, "value": round(row.now.normalised, 6),
                        "extra": "; ".join(extra)})
    return entries


def write(path: Path | None, document: Any) -> None:
    if path is not None:
        write_json(path, document)
