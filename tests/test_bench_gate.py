"""The latency gate's contract (issue 6): a slowdown injected into the early-exit path fails it, unchanged code passes
it, and a bad baseline or threshold is one line and exit code 2 before anything is timed.

The timing tests run one small benchmark of the real suite (PABEE at batch 1, a few seconds) in this process, so the
test-only `cee_bench.runtime.layer_hook` they set is the one the suite runs with.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cee_bench import bench, runtime

SUBSET = "early_exit and pabee and b1"
SLOWDOWN_S = 0.01  # per computed layer: several times a layer's own cost on this model


def verdicts(rows: list[bench.Row]) -> dict[str, str]:
    return {row.name: row.verdict for row in rows}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, object]:
    """A baseline saved from one run of the subset, a second unchanged run, and a run with the slowdown injected."""
    path = tmp_path_factory.mktemp("bench") / "baseline.json"
    bench.save_baseline(path, "cpu", bench.run_suite("cpu", keyword=SUBSET))
    unchanged = bench.run_suite("cpu", keyword=SUBSET)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "layer_hook", lambda layer: time.sleep(SLOWDOWN_S))
        slowed = bench.run_suite("cpu", keyword=SUBSET)
    return {"path": path, "unchanged": unchanged, "slowed": slowed}


def test_injected_slowdown_fails_the_gate(measured):
    baseline = bench.load_baseline(measured["path"], "cpu")
    rows = bench.compare(measured["slowed"], baseline, bench.parse_threshold(bench.DEFAULT_THRESHOLD))
    assert verdicts(rows) == {"early_exit[pabee-b1]": "REGRESSED"}
    # the slowdown is in the early-exit path only: the exits and the reference did not move
    assert measured["slowed"]["early_exit[pabee-b1]"].mean_exit_layer == \
        baseline.benchmarks["early_exit[pabee-b1]"].mean_exit_layer


def test_unchanged_code_passes_the_gate(measured):
    baseline = bench.load_baseline(measured["path"], "cpu")
    rows = bench.compare(measured["unchanged"], baseline, bench.parse_threshold(bench.DEFAULT_THRESHOLD))
    assert verdicts(rows) == {"early_exit[pabee-b1]": "ok"}


@pytest.mark.parametrize("run, code", [("unchanged", 0), ("slowed", 1)])
def test_the_command_exits_1_on_a_regression_only(monkeypatch, measured, run, code, cli):
    monkeypatch.setattr(bench, "run_suite", lambda device: measured[run])
    got, out, _ = cli("bench", "--baseline", str(measured["path"]))
    assert got == code
    assert ("regression(s) past 50%" in out) == (code == 1) and "early_exit[pabee-b1]" in out


def test_save_writes_a_baseline_the_gate_accepts(monkeypatch, tmp_path, measured, cli):
    path = tmp_path / "new" / "baseline.json"
    monkeypatch.setattr(bench, "run_suite", lambda device: measured["unchanged"])
    assert cli("bench", "--save", "--baseline", str(path))[0] == 0
    saved = bench.load_baseline(path, "cpu")
    assert saved.backbone == bench.BACKBONE and set(saved.benchmarks) == {"early_exit[pabee-b1]"}
    assert cli("bench", "--baseline", str(path))[0] == 0


def test_compare_marks_new_missing_and_faster_benchmarks():
    def fig(normalised: float) -> bench.Figures:
        return bench.Figures(normalised=normalised, ratio=normalised, median_ms=1.0, reference="r")

    old = bench.Baseline(bench.BACKBONE, "cpu", "here", {"a": fig(1.0), "b": fig(1.0), "gone": fig(1.0)})
    rows = bench.compare({"a": fig(1.2), "b": fig(0.5), "new": fig(1.0)}, old, 0.25)
    assert verdicts(rows) == {"a": "ok", "b": "faster", "gone": "not run", "new": "new"}


def write_baseline(path: Path, **changes: object) -> Path:
    record = {"format": bench.BASELINE_FORMAT, "backbone": bench.BACKBONE, "device": "cpu", "hardware": "x",
              "benchmarks": {"early_exit[pabee-b1]": {"normalised": 1.1, "ratio": 0.5, "median_ms": 3.0,
                                                      "reference": "full forward b1"}}}
    path.write_text(json.dumps({**record, **changes}))
    return path


@pytest.mark.parametrize("setup, message", [
    (lambda p: p, "no baseline at"),
    (lambda p: p.write_text("{not json") and p, "is corrupt"),
    (lambda p: p.write_text("[]") and p, "is corrupt"),
    (lambda p: write_baseline(p, format=99), "is corrupt"),
    (lambda p: write_baseline(p, benchmarks={"x": {"normalised": -1, "ratio": 1, "median_ms": 1, "reference": "r"}}),
     "is corrupt"),
    (lambda p: write_baseline(p, benchmarks={"x": {"nonsense": 1}}), "is corrupt"),
    (lambda p: write_baseline(p, backbone="bert-base-uncased"), "recorded on backbone 'bert-base-uncased'"),
    (lambda p: write_baseline(p, device="cuda"), "recorded on cuda, but this run is on cpu"),
])
def test_bad_baseline_is_one_line_exit_2_before_any_timing(monkeypatch, tmp_path, setup, message, cli):
    monkeypatch.setattr(bench, "run_suite", lambda device: pytest.fail("the suite ran on a bad baseline"))
    path = setup(tmp_path / "baseline.json")
    code, _, err = cli("bench", "--baseline", str(path))
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_baseline_says_how_to_create_it(tmp_path, cli):
    code, _, err = cli("bench", "--baseline", str(tmp_path / "none.json"))
    assert code == 2 and "create one with `cee-bench bench --save`" in err


@pytest.mark.parametrize("args, message", [
    (["--threshold", "0"], "--threshold must be a positive percentage"),
    (["--threshold", "-5"], "--threshold must be a positive percentage"),
    (["--threshold", "abc"], "--threshold must be a positive percentage"),
    (["--threshold", "nan"], "--threshold must be a positive percentage"),
    (["--threshold", "inf%"], "--threshold must be a positive percentage"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_flag_is_one_line_exit_2(monkeypatch, tmp_path, args, message, cli):
    monkeypatch.setattr(bench, "run_suite", lambda device: pytest.fail("the suite ran on a bad flag"))
    code, _, err = cli("bench", *args, "--baseline", str(write_baseline(tmp_path / "b.json")))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_threshold_accepts_a_percent_sign():
    assert bench.parse_threshold("25%") == bench.parse_threshold("25") == 0.25


def test_committed_baseline_matches_the_suite():
    baseline = bench.load_baseline(bench.default_baseline("cpu"), "cpu")
    assert baseline.benchmarks, "the committed baseline is empty"
