"""The `cee-bench bench` command: flags checked, then save a run or gate against one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from cee_bench.errors import UserError
from cee_bench.gate import export, saved_run, suite
from cee_bench.gate.compare import (CONFIRMATIONS, DEFAULT_THRESHOLD, SPREAD_FACTOR, Row, allowance, compare, confirm,
                                    machine_mismatch)
from cee_bench.gate.render import render
from cee_bench.gate.saved_run import SavedRun
from cee_bench.gate.workload import BACKBONE
from cee_bench.validation import check_output_file

DEVICES = ("cpu", "cuda")
DEFAULT_RUNS = {"save": 5, "gate": 1}


def parse_threshold(text: str) -> float:
    """`--threshold 25` or `25%` → 0.25; anything but a positive finite percentage is a user error."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise UserError(f"--threshold must be a positive percentage such as 25 or 25%, got '{text}'")
    return value / 100


def parse_runs(text: str | None, save: bool) -> int:
    """`--runs N`: how many suite runs the median is taken over (5 when saving a run, 1 when gating)."""
    if text is None:
        return DEFAULT_RUNS["save" if save else "gate"]
    try:
        runs = int(text)
    except ValueError:
        runs = 0
    if runs < 1:
        raise UserError(f"--runs must be a positive integer such as 5, got '{text}'")
    return runs


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'; choose {' or '.join(DEVICES)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no CUDA device is available")


def bench_command(
    threshold: str = typer.Option(DEFAULT_THRESHOLD, help="Floor of each benchmark's allowance, in percent: fail "
                                                          "when its normalised time rises by more than max(this, "
                                                          f"{SPREAD_FACTOR:g} × its baseline spread)."),
    save: bool = typer.Option(False, "--save", help="Write this machine's baseline from --runs runs (deliberately)."),
    runs: Optional[str] = typer.Option(None, help=f"Suite runs to take the median of (default "
                                                  f"{DEFAULT_RUNS['save']} with --save, {DEFAULT_RUNS['gate']} "
                                                  "otherwise)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (exit 2) a baseline recorded on another machine "
                                                        "instead of gating only its machine-independent ratios."),
    device: str = typer.Option("cpu", help="cpu or cuda; each machine and device has its own baseline."),
    baseline: Optional[Path] = typer.Option(None, help="Baseline file (a saved run); default: "
                                                       "benchmarks/saved_runs/<this machine>.json, else the device's "
                                                       "designated one (benchmarks/saved_runs/defaults.json)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write each benchmark's figure, change, "
                                                                  "allowance and verdict, and the outcome, as JSON."),
    github_benchmark: Optional[Path] = typer.Option(None, help="Also write the figures in github-action-benchmark's "
                                                               "customSmallerIsBetter format."),
) -> None:
    """Run the latency suite, compare with this machine's baseline (its saved run) and fail on a confirmed
    regression. Exit codes: 0 none, 1 regressed, 2 bad input, 3 the suite itself failed."""
    limit = parse_threshold(threshold)
    count = parse_runs(runs, save)
    for path, option in ((json_path, "--json"), (github_benchmark, "--github-benchmark")):
        if path is not None:
            check_output_file(path, option)
    check_device(device)
    suite.check_suite()
    machine = saved_run.this_machine(device)
    path = baseline if baseline is not None else saved_run.default_path(device, machine, save)
    console = Console()
    if not console.is_terminal:  # CI logs: room for every column rather than Rich's 80-character default
        console.width = 180
    notices: list[str] = []

    def finish(rows: list[Row], code: int, error: str | None = None) -> None:
        """The exports, whatever the outcome, then the exit code."""
        export.write(json_path, export.gate_record(rows, code, device=device, machine=str(machine), baseline=path,
                                                   threshold=limit, notices=notices, error=error))
        export.write(github_benchmark, export.github_benchmark(rows))
        if code:
            raise SystemExit(code)

    def notice(line: str) -> None:
        notices.append(line)
        console.print(f"[bold yellow]{escape(line)}[/]", soft_wrap=True)

    try:
        if save:
            entries, last = suite.measure(device, count)
            new = SavedRun(BACKBONE, device, last.machine_info, last.commit_info, entries, runs=count)
            rows = [Row(name, entry.figures, entry, None, allowance(entry, limit), "saved")
                    for name, entry in entries.items()]
            console.print(render(rows, limit, device, new.machine, new))
            saved_run.save(path, new)
            console.print(f"saved {len(entries)} benchmarks ({count} runs) to {path}; commit it with the change that "
                          "explains it")
            return finish(rows, 0)
        old = saved_run.load(path, device, BACKBONE)
        mismatch = machine_mismatch(old, machine, path)
        if mismatch and strict:
            raise UserError(f"{mismatch}; --strict refuses another machine's baseline: record this machine's with "
                            "`cee-bench bench --save`")
        if mismatch:
            skipped = sum(not entry.figures.machine_independent for entry in old.entries.values())
            notice(f"{mismatch}: gating only the machine-independent ratios ({skipped} trace-sweep figures not "
                   "compared); record this machine's baseline with `cee-bench bench --save`")
        versions = saved_run.version_changes(old, saved_run.current_versions())
        if versions:
            notice(versions)
        entries, _ = suite.measure(device, count)
        rows = compare({name: entry.figures for name, entry in entries.items()}, old, limit, mismatch is None)
        rows = confirm(rows, lambda names: suite.rerun(device, names), old, limit, mismatch is None)
    except suite.SuiteFailed as exc:
        Console(stderr=True).print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return finish([], export.SUITE_FAILED, str(exc))
    console.print(render(rows, limit, device, machine, old))
    regressed = [row.name for row in rows if row.verdict == "REGRESSED"]
    cleared = sum(bool(row.reruns) for row in rows)
    if regressed:
        console.print(f"[bold red]{len(regressed)} regression(s) past their allowance, confirmed by "
                      f"{CONFIRMATIONS} reruns:[/] {escape(', '.join(regressed))}")
        return finish(rows, export.REGRESSED)
    console.print(f"no regression past its allowance ({sum(r.verdict.startswith('ok') for r in rows)} benchmarks "
                  f"within it; {cleared} rerun and cleared)")
    return finish(rows, 0)
