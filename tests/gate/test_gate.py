"""The latency gate's contract (issues 6 and 14): injected slowdowns fail it, unchanged code passes it, a benchmark that
looks regressed is rerun before it fails, another machine's saved run gates only what transfers, and bad input is one
line and exit code 2 before anything is timed.

The timing tests run a reduced suite (PABEE's early exit at batch 1 and 32 and its sweep; about a minute on an idle
machine) in this process, so the slowdowns they inject (`benchmarks/slowdown.py`: a 25% slower
early-exit path through `runtime.row_hook`, a sweep replayed twice) are the ones the suite runs with.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import slowdown  # benchmarks/slowdown.py: test-only support beside the suite (tests/gate/conftest.py)

from cee_bench.classification import curve, runtime
from cee_bench.errors import UserError
from cee_bench.gate import command, compare, export, saved_run, suite, workload
from cee_bench.gate.saved_run import Entry, Figures, Machine, SavedRun

SUBSET = "pabee and (early_exit or sweep)"
EARLY_EXIT = {"early_exit[pabee-b1]", "early_exit[pabee-b32]"}
SWEEP = "sweep[pabee]"
SLOWDOWN = 0.25
SAVED_RUNS = 3
# A run's early-exit figures sit up to ±5% from a 3-run saved run's median even on an idle machine, so a 25% slowdown
# against the default 20% floor would be caught or missed by that noise alone (the full suite against the committed
# 5-run saved run, at the default floor, is in the README). The tests gate at a 15% floor, which leaves the noise room,
# and time three times the rounds, as the gate's reruns do.
THRESHOLD = "15"
ROUNDS_SCALE = suite.RERUN_ROUNDS_SCALE
HERE = Machine("AMD EPYC", 2)
ELSEWHERE = Machine("Intel(R) Xeon(R) Processor", 2)


def verdicts(rows: list[compare.Row]) -> dict[str, str]:
    return {row.name: row.verdict for row in rows}


def gate(saved: SavedRun, figures: dict[str, Figures]) -> list[compare.Row]:
    """The gate as `cee-bench bench` runs it: compare, then rerun what looks regressed (under the same hooks)."""
    threshold = command.parse_threshold(THRESHOLD)
    rows = compare.compare(figures, saved, threshold)
    return compare.confirm(rows, lambda names: suite.rerun("cpu", names), saved, threshold, True)


@pytest.fixture(scope="module")
def measured() -> dict[str, object]:
    """A saved run from `SAVED_RUNS` runs of the subset; the gate's rows for an unchanged run and a slowed one."""
    load = os.getloadavg()[0]
    # one untimed run first: the first suite run in a process is slower (imports, allocator, caches), which would put
    # the saved run above every later run and hide part of the slowdown injected below
    suite.run_suite("cpu", keyword=SUBSET)
    entries, last = suite.measure("cpu", SAVED_RUNS, keyword=SUBSET, rounds_scale=ROUNDS_SCALE)
    saved = SavedRun(workload.BACKBONE, "cpu", last.machine_info, last.commit_info, entries, runs=SAVED_RUNS)
    now = suite.run_suite("cpu", keyword=SUBSET, rounds_scale=ROUNDS_SCALE).figures
    unchanged = gate(saved, now)
    # calibrated on the saved run's medians, not on `now` alone: one run's early-exit time strays by up to ±10%,
    # which would inject that much less (or more) than the 25% the assertions are about
    hook = slowdown.rows_slower(SLOWDOWN, calibration={name: entry.figures for name, entry in entries.items()})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "row_hook", hook)
        patch.setattr(curve, "sweep", slowdown.twice(curve.sweep))
        slowed = gate(saved, suite.run_suite("cpu", keyword=SUBSET, rounds_scale=ROUNDS_SCALE).figures)
    return {"saved": saved, "unchanged": unchanged, "slowed": slowed, "load": max(load, os.getloadavg()[0])}


def test_a_quarter_slower_early_exit_fails_at_batch_1_and_32(measured):
    if measured["load"] > os.cpu_count():
        pytest.skip(f"1-minute load average {measured['load']:.1f} on {os.cpu_count()} cores: one run's figures move "
                    "by ±15%, so a 25% slowdown is within their noise here (CI runs on an idle machine)")
    rows = {row.name: row for row in measured["slowed"]}
    assert {name: rows[name].verdict for name in EARLY_EXIT} == dict.fromkeys(EARLY_EXIT, "REGRESSED"), \
        [(row.name, row.change, row.reruns, row.allowance) for row in rows.values()]
    assert all(len(rows[name].reruns) == compare.CONFIRMATIONS for name in EARLY_EXIT)
    # the slowdown is in the early-exit path only: the exits did not move
    assert all(rows[name].now.mean_exit_layer == rows[name].base.figures.mean_exit_layer for name in EARLY_EXIT)


def test_a_twice_slower_sweep_fails(measured):
    row = next(row for row in measured["slowed"] if row.name == SWEEP)
    assert row.verdict == "REGRESSED" and row.change > 0.5, row


def test_unchanged_code_passes(measured):
    assert not [row for row in measured["unchanged"] if row.verdict == "REGRESSED"], measured["unchanged"]
    assert set(verdicts(measured["unchanged"]).values()) <= {"ok", "ok (rerun)", "faster"}


def test_the_saved_run_records_spreads_and_pytest_benchmarks_machine(measured):
    saved = measured["saved"]
    assert set(saved.entries) == EARLY_EXIT | {SWEEP}
    assert all(len(entry.runs) == SAVED_RUNS and entry.spread >= 0 for entry in saved.entries.values())
    assert saved.machine_info["cpu"]["brand_raw"] and saved.machine_info["torch"]
    assert "dirty" in saved.commit_info
    assert saved.machine == saved_run.this_machine("cpu")


# --- the gate's logic on made-up figures (no timing) ---

def fig(normalised: float, independent: bool = True) -> Figures:
    return Figures(normalised=normalised, ratio=normalised, median_ms=1.0, reference="r",
                   machine_independent=independent)


def entry(normalised: float, spread: float = 0.0, independent: bool = True) -> Entry:
    return Entry(fig(normalised, independent), spread=spread, runs=(normalised,))


def saved_run_of(machine: Machine = HERE, **entries: Entry) -> SavedRun:
    info = {"cpu": {"brand_raw": machine.cpu, "count": machine.cores}}
    return SavedRun(workload.BACKBONE, "cpu", info, {"id": "abc", "dirty": False}, entries, runs=5)


def test_entry_is_the_median_run_and_its_median_absolute_deviation():
    got = Entry.of_runs([fig(1.0), fig(1.5), fig(0.9), fig(1.1), fig(1.0)])  # one burst (1.5) does not set the spread
    assert got.figures.normalised == 1.0 and got.spread == pytest.approx(0.1) and len(got.runs) == 5


def test_allowance_is_the_threshold_or_a_multiple_of_the_spread():
    old = saved_run_of(quiet=entry(1.0, 0.02), noisy=entry(1.0, 0.1))
    rows = {row.name: row for row in compare.compare({"quiet": fig(1.25), "noisy": fig(1.25)}, old, 0.2)}
    assert rows["quiet"].allowance == 0.2 and rows["quiet"].verdict == "REGRESSED"
    assert rows["noisy"].allowance == pytest.approx(compare.SPREAD_FACTOR * 0.1) and rows["noisy"].allowance > 0.25
    assert rows["noisy"].verdict == "ok"


def test_compare_marks_new_missing_and_faster_benchmarks():
    old = saved_run_of(a=entry(1.0), b=entry(1.0), gone=entry(1.0))
    rows = compare.compare({"a": fig(1.1), "b": fig(0.5), "new": fig(1.0)}, old, 0.25)
    assert verdicts(rows) == {"a": "ok", "b": "faster", "gone": "not run", "new": "new"}


def test_another_cpu_gates_only_machine_independent_ratios():
    old = saved_run_of(ELSEWHERE, ee=entry(1.0), sweep=entry(1.0, independent=False))
    rows = compare.compare({"ee": fig(2.0), "sweep": fig(2.0, independent=False)}, old, 0.2, same_machine=False)
    assert verdicts(rows) == {"ee": "REGRESSED", "sweep": "other CPU"}


@pytest.mark.parametrize("reruns, verdict", [([1.3, 1.3], "REGRESSED"), ([1.0], "ok (rerun)"),
                                             ([1.3, 1.0], "ok (rerun)")])
def test_a_suspect_is_rerun_alone_and_fails_only_if_every_rerun_regresses(reruns, verdict):
    old = saved_run_of(slow=entry(1.0), fine=entry(1.0))
    asked = []

    def rerun(names: list[str]) -> dict[str, Figures]:
        asked.append(names)
        return {"slow": fig(reruns[len(asked) - 1])}

    rows = compare.confirm(compare.compare({"slow": fig(1.3), "fine": fig(1.0)}, old, 0.2), rerun, old, 0.2, True)
    assert verdicts(rows) == {"slow": verdict, "fine": "ok"}
    assert asked == [["slow"]] * len(reruns)
    assert next(row for row in rows if row.name == "slow").reruns == pytest.approx([r - 1 for r in reruns])


def test_machine_slug_names_the_cpu_and_its_cores():
    assert HERE.slug == "amd-epyc-2cpu" and ELSEWHERE.slug == "intel-xeon-processor-2cpu"
    assert Machine("x", 1, gpu="NVIDIA H200").slug == "nvidia-h200-cuda"


def test_default_saved_run_is_this_machines_else_another_committed_one(monkeypatch, tmp_path):
    monkeypatch.setattr(saved_run, "SAVED_RUNS_DIR", tmp_path)
    assert saved_run.default_path("cpu", HERE, saving=False) == tmp_path / "amd-epyc-2cpu.json"
    (tmp_path / "intel-xeon-processor-2cpu.json").write_text("{}")
    (tmp_path / "nvidia-h200-cuda.json").write_text("{}")
    assert saved_run.default_path("cpu", HERE, saving=False).name == "intel-xeon-processor-2cpu.json"
    assert saved_run.default_path("cpu", HERE, saving=True).name == "amd-epyc-2cpu.json"
    assert saved_run.default_path("cuda", Machine("x", 1, "NVIDIA H200"), saving=False).name == \
        "nvidia-h200-cuda.json"


def test_a_designated_default_wins_over_the_order_of_names_and_several_undesignated_are_refused(monkeypatch,
                                                                                                 tmp_path):
    monkeypatch.setattr(saved_run, "SAVED_RUNS_DIR", tmp_path)
    for name in ("a-first-2cpu.json", "z-runner-4cpu.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(UserError, match="2 of other machines with none designated for cpu: pass --baseline"):
        saved_run.default_path("cpu", HERE, saving=False)
    (tmp_path / saved_run.DEFAULTS_NAME).write_text('{"cpu": "z-runner-4cpu.json"}')
    assert saved_run.default_path("cpu", HERE, saving=False).name == "z-runner-4cpu.json"
    assert saved_run.saved_runs("cpu") == [tmp_path / "a-first-2cpu.json", tmp_path / "z-runner-4cpu.json"]
    (tmp_path / saved_run.DEFAULTS_NAME).write_text('["z-runner-4cpu.json"]')
    with pytest.raises(UserError, match="defaults.json is corrupt"):
        saved_run.default_path("cpu", HERE, saving=False)


def test_a_change_of_python_torch_or_transformers_is_named_in_one_line():
    saved = saved_run_of()
    saved.machine_info.update(python_version="3.11.7", torch="2.13.0+cpu")  # an older run: no transformers
    now = {"python_version": "3.12.1", "torch": "2.13.0+cpu", "transformers": "5.24.0"}
    assert saved_run.version_changes(saved, now) == (
        "versions differ from the baseline's: python 3.11.7 → 3.12.1; a change of speed may come from them, not from "
        "the code")
    assert saved_run.version_changes(saved, {**now, "python_version": "3.11.7"}) is None
    assert set(saved_run.current_versions()) == {"python_version", "torch", "transformers"}


# --- the command, with the suite replaced by canned runs ---

def canned(figures: dict[str, Figures]) -> suite.SuiteRun:
    info = {"cpu": {"brand_raw": HERE.cpu, "count": HERE.cores}, "torch": "x"}
    return suite.SuiteRun(figures, info, {"id": "abc", "dirty": True})


@pytest.fixture
def here(monkeypatch):
    """The command believes it runs on `HERE`."""
    monkeypatch.setattr(saved_run, "this_machine", lambda device: HERE)


def saved(path: Path, machine: Machine = HERE, **entries: Entry) -> Path:
    saved_run.save(path, saved_run_of(machine, **entries))
    return path


@pytest.mark.parametrize("now, reruns, code, message", [
    (1.0, [], 0, "no regression past its allowance"),
    (1.5, [1.0], 0, "1 rerun and cleared"),
    (1.5, [1.5, 1.5], 1, "1 regression(s) past their allowance"),
])
def test_the_command_exits_1_on_a_confirmed_regression_only(monkeypatch, tmp_path, here, cli, now, reruns, code,
                                                            message):
    path = saved(tmp_path / "b.json", ee=entry(1.0, 0.05))
    monkeypatch.setattr(suite, "run_suite", lambda device, keyword=None, names=None, rounds_scale=1:
                        canned({"ee": fig(reruns.pop(0) if names else now)}))
    got, out, _ = cli("bench", "--baseline", str(path))
    assert got == code and message in out and not reruns
    assert "allowance" in out and "20%" in out


def test_json_and_github_benchmark_exports_say_what_the_table_says(monkeypatch, tmp_path, here, cli):
    path = saved(tmp_path / "b.json", ee=entry(1.0, 0.05), gone=entry(1.0))
    saved_run.save(path, replace(saved_run.load(path, "cpu", workload.BACKBONE),
                                 machine_info={"cpu": {"brand_raw": HERE.cpu, "count": HERE.cores}, "torch": "0.1"}))
    reruns = [1.5, 1.5]
    monkeypatch.setattr(suite, "run_suite", lambda device, keyword=None, names=None, rounds_scale=1:
                        canned({"ee": fig(reruns.pop(0) if names else 1.5)}))
    code, out, _ = cli("bench", "--baseline", str(path), "--json", str(tmp_path / "gate.json"),
                       "--github-benchmark", str(tmp_path / "github.json"))
    assert code == export.REGRESSED and "versions differ from the baseline's: torch 0.1 →" in out
    document = json.loads((tmp_path / "gate.json").read_text())
    assert document["outcome"] == "regressed" and document["exit_code"] == 1 and document["threshold"] == 0.2
    assert document["notices"] and document["notices"][0].startswith("versions differ")
    rows = {row["name"]: row for row in document["benchmarks"]}
    assert rows["ee"]["verdict"] == "REGRESSED" and rows["ee"]["change"] == pytest.approx(0.5)
    assert rows["ee"]["allowance"] == pytest.approx(0.2) and rows["ee"]["reruns"] == pytest.approx([0.5, 0.5])
    assert rows["gone"]["verdict"] == "not run" and rows["gone"]["normalised"] is None
    github = json.loads((tmp_path / "github.json").read_text())
    assert github == [{"name": "ee", "unit": export.UNIT, "value": 1.5,
                       "extra": "change +50.0% (allowance 20%); verdict REGRESSED; reference r"}]


def test_a_failing_suite_exits_3_not_1_and_says_so_in_the_json(monkeypatch, tmp_path, here, cli):
    import pytest as real_pytest

    path = saved(tmp_path / "b.json", ee=entry(1.0))
    monkeypatch.setattr(real_pytest, "main", lambda args: real_pytest.ExitCode.TESTS_FAILED)
    code, _, err = cli("bench", "--baseline", str(path), "--json", str(tmp_path / "gate.json"))
    assert code == export.SUITE_FAILED == 3 and "the benchmark suite failed (pytest exit code 1)" in err
    document = json.loads((tmp_path / "gate.json").read_text())
    assert document["outcome"] == "suite failed" and document["benchmarks"] == [] and document["error"]


def test_save_writes_this_machines_saved_run_from_several_runs(monkeypatch, tmp_path, here, cli):
    monkeypatch.setattr(saved_run, "SAVED_RUNS_DIR", tmp_path)
    values = [1.0, 1.1, 0.9]
    monkeypatch.setattr(suite, "run_suite", lambda *_, **__: canned({"ee": fig(values.pop())}))
    assert cli("bench", "--save", "--runs", "3")[0] == 0
    raw = json.loads((tmp_path / "amd-epyc-2cpu.json").read_text())
    assert raw["runs"] == 3 and raw["commit_info"]["dirty"] is True and raw["machine_info"]["torch"] == "x"
    assert raw["benchmarks"]["ee"]["normalised"] == 1.0 and raw["benchmarks"]["ee"]["spread"] == pytest.approx(0.1)
    monkeypatch.setattr(suite, "run_suite", lambda *_, **__: canned({"ee": fig(1.0)}))
    assert cli("bench")[0] == 0


def test_another_machines_saved_run_says_so_in_one_line_and_skips_sweeps(monkeypatch, tmp_path, here, cli):
    path = saved(tmp_path / "b.json", ELSEWHERE, ee=entry(1.0), sweep=entry(1.0, independent=False))
    now = {"ee": fig(1.0), "sweep": fig(3.0, independent=False)}
    monkeypatch.setattr(suite, "run_suite", lambda *_, **__: canned(now))
    code, out, _ = cli("bench", "--baseline", str(path))
    notice = [line for line in out.splitlines() if "was recorded on Intel(R) Xeon(R) Processor (2 cores)" in line]
    assert code == 0 and len(notice) == 1 and "gating only the machine-independent ratios" in notice[0]
    assert "other CPU" in out


def test_strict_refuses_another_machines_saved_run(monkeypatch, tmp_path, here, cli):
    path = saved(tmp_path / "b.json", ELSEWHERE, ee=entry(1.0))
    monkeypatch.setattr(suite, "run_suite", lambda *a, **k: pytest.fail("the suite ran under --strict"))
    code, _, err = cli("bench", "--strict", "--baseline", str(path))
    assert code == 2 and "--strict refuses" in err and len(err.strip().splitlines()) == 1


# --- bad input: one line, exit 2, nothing timed ---

def write_saved_run(path: Path, **changes: object) -> Path:
    record = json.loads(saved(path, ee=entry(1.1, 0.05)).read_text())
    path.write_text(json.dumps({**record, **changes}))
    return path


OLD_FORMAT = {"format": 1, "benchmarks": {"ee": {"normalised": 1.1, "ratio": 0.5, "median_ms": 3.0, "reference": "r"}}}


@pytest.mark.parametrize("setup, message", [
    (lambda p: p, "no baseline at"),
    (lambda p: p.write_text("{not json") and p, "is corrupt"),
    (lambda p: p.write_text("[]") and p, "is corrupt"),
    (lambda p: write_saved_run(p, format=99), "is corrupt"),
    (lambda p: write_saved_run(p, **OLD_FORMAT), "old format without per-benchmark spreads; re-save it"),
    (lambda p: write_saved_run(p, benchmarks={"x": {**vars(fig(-1)), "spread": 0.1, "runs": [1]}}), "is corrupt"),
    (lambda p: write_saved_run(p, benchmarks={"x": {**vars(fig(1)), "runs": [1]}}), "is corrupt"),
    (lambda p: write_saved_run(p, benchmarks={"x": {"nonsense": 1}}), "is corrupt"),
    (lambda p: write_saved_run(p, backbone="bert-base-uncased"), "recorded on backbone 'bert-base-uncased'"),
    (lambda p: write_saved_run(p, device="cuda"), "recorded on cuda, but this run is on cpu"),
])
def test_bad_saved_run_is_one_line_exit_2_before_any_timing(monkeypatch, tmp_path, here, setup, message, cli):
    monkeypatch.setattr(suite, "run_suite", lambda *a, **k: pytest.fail("the suite ran on a bad saved run"))
    path = setup(tmp_path / "baseline.json")
    code, _, err = cli("bench", "--baseline", str(path))
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--threshold", "0"], "--threshold must be a positive percentage"),
    (["--threshold", "-5"], "--threshold must be a positive percentage"),
    (["--threshold", "abc"], "--threshold must be a positive percentage"),
    (["--threshold", "nan"], "--threshold must be a positive percentage"),
    (["--threshold", "inf%"], "--threshold must be a positive percentage"),
    (["--runs", "0"], "--runs must be a positive integer"),
    (["--runs", "-2"], "--runs must be a positive integer"),
    (["--runs", "2.5"], "--runs must be a positive integer"),
    (["--runs", "many", "--save"], "--runs must be a positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_flag_is_one_line_exit_2(monkeypatch, tmp_path, here, args, message, cli):
    monkeypatch.setattr(suite, "run_suite", lambda *a, **k: pytest.fail("the suite ran on a bad flag"))
    code, _, err = cli("bench", *args, "--baseline", str(write_saved_run(tmp_path / "b.json")))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("module", ["pytest_benchmark", "pytest"])
def test_missing_pytest_names_the_extra_to_install(monkeypatch, tmp_path, here, module, cli):
    monkeypatch.setattr(suite, "run_suite", lambda *a, **k: pytest.fail("the suite ran without pytest"))
    real = suite.find_spec
    monkeypatch.setattr(suite, "find_spec", lambda name: None if name == module else real(name))
    code, _, err = cli("bench", "--baseline", str(write_saved_run(tmp_path / "b.json")))
    assert code == 2 and "pip install 'cee-bench[bench]'" in err and len(err.strip().splitlines()) == 1


def test_threshold_accepts_a_percent_sign():
    assert command.parse_threshold("25%") == command.parse_threshold("25") == 0.25


def test_committed_saved_runs_match_the_suite():
    paths = saved_run.saved_runs("cpu") + saved_run.saved_runs("cuda")
    assert paths, "no committed saved run"
    defaults = json.loads((saved_run.SAVED_RUNS_DIR / saved_run.DEFAULTS_NAME).read_text())
    assert all(saved_run.SAVED_RUNS_DIR / name in paths for name in defaults.values()), defaults
    for path in paths:
        saved = saved_run.load(path, "cuda" if path.stem.endswith("-cuda") else "cpu", workload.BACKBONE)
        assert path.stem == saved.machine.slug and saved.runs >= 5 and saved.entries
