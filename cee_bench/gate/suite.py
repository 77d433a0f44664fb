"""Running the latency suite (`benchmarks/test_latency.py`, pytest-benchmark) in this process and reading its figures:
each benchmark's median over rounds of its time ÷ the reference timed just before it."""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from cee_bench.errors import UserError
from cee_bench.gate.saved_run import Entry, Figures

SUITE_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
SUITE_FILE = SUITE_DIR / "test_latency.py"
# The reruns time a few benchmarks only, so they can afford more rounds: their median is the steadier for it, which
# keeps a real 25% slowdown from slipping under the threshold on one unlucky rerun.
RERUN_ROUNDS_SCALE = 3
BENCH_EXTRA = "pip install 'cee-bench[bench]'"


def paired_ratio(target_s: list[float], reference_s: list[float]) -> float:
    """Median over rounds of target ÷ the reference timed just before it: both halves of a pair share the machine's
    load at that moment, and the median drops the rounds a neighbour's burst hit one half of."""
    return statistics.median(t / r for t, r in zip(target_s, reference_s, strict=True))


def figures_of(bench: dict[str, Any]) -> Figures:
    """One entry of pytest-benchmark's JSON output: its per-round `stats.data` paired with the reference times the
    suite put in `extra_info`."""
    info = bench["extra_info"]
    ratio = paired_ratio(bench["stats"]["data"], info["reference_s"])
    normalised = ratio / info["expected_ratio"]
    return Figures(normalised=normalised, ratio=ratio, median_ms=bench["stats"]["median"] * 1000,
                   reference=info["reference"], machine_independent=info["machine_independent"],
                   mean_exit_layer=info.get("mean_exit_layer"),
                   realised_fraction=1 / normalised if info.get("exits") else None)


class SuiteFailed(Exception):
    """The suite crashed or a benchmark errored: no figures, so no verdict (the command's own exit code, not a
    regression's)."""


@dataclass(frozen=True)
class SuiteRun:
    """One run of the suite as pytest-benchmark reported it."""

    figures: dict[str, Figures]
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]


def check_suite() -> None:
    """The gate needs pytest, pytest-benchmark and the suite file; say which is missing before anything runs.

    They are an extra (`cee-bench[bench]`), not dependencies: only a source checkout has the suite to run."""
    missing = [name for name in ("pytest", "pytest_benchmark", "cpuinfo") if find_spec(name) is None]
    if missing:
        raise UserError(f"`cee-bench bench` needs pytest and pytest-benchmark ({', '.join(missing)} not installed); "
                        f"install them with `{BENCH_EXTRA}`")
    if not SUITE_FILE.is_file():
        raise UserError(f"the benchmark suite is not at {SUITE_FILE}; run `cee-bench bench` from a source checkout")


def run_suite(device: str, keyword: str | None = None, names: list[str] | None = None,
              rounds_scale: int = 1) -> SuiteRun:
    """Run the pytest-benchmark suite in this process and read its JSON report.

    In-process, so that the test-only hook a test sets (`cee_bench.classification.runtime.row_hook`) is the one the
    suite runs with. `keyword` is a pytest `-k` expression; `names` selects benchmarks by name (the reruns);
    `rounds_scale` multiplies every benchmark's rounds.
    """
    import pytest

    targets = [f"{SUITE_FILE}::test_{name}" for name in names] if names else [str(SUITE_FILE)]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "benchmarks.json"
        args = [*targets, f"--bench-device={device}", f"--bench-rounds-scale={rounds_scale}",
                f"--benchmark-json={report}", "--benchmark-quiet",
                "--benchmark-disable-gc", "-q", "-p", "no:cacheprovider", *(["-k", keyword] if keyword else [])]
        code = pytest.main(args)
        if code != pytest.ExitCode.OK or not report.is_file():
            raise SuiteFailed(f"the benchmark suite failed (pytest exit code {int(code)}); see its output above")
        raw = json.loads(report.read_text())
    figures = {bench["name"].removeprefix("test_"): figures_of(bench) for bench in raw["benchmarks"]}
    return SuiteRun(figures, raw["machine_info"], raw["commit_info"])


def measure(device: str, runs: int, keyword: str | None = None, rounds_scale: int = 1) -> tuple[dict[str, Entry],
                                                                                                SuiteRun]:
    """The suite run `runs` times: each benchmark's median and spread, and the last run (for its machine record)."""
    done = [run_suite(device, keyword, rounds_scale=rounds_scale) for _ in range(runs)]
    names = sorted(set.intersection(*(set(run.figures) for run in done)))
    return {name: Entry.of_runs([run.figures[name] for run in done]) for name in names}, done[-1]


def rerun(device: str, names: list[str]) -> dict[str, Figures]:
    """A confirmation rerun: the named benchmarks alone, with `RERUN_ROUNDS_SCALE` times the rounds."""
    return run_suite(device, names=names, rounds_scale=RERUN_ROUNDS_SCALE).figures
