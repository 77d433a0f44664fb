"""`cee-bench bench`: the latency regression gate (issues 6 and 14).

The pytest-benchmark suite in `benchmarks/test_latency.py` times a fixed, randomly initialised BERT on fixed inputs.
Absolute times say more about the machine than the code (CI runners differ, and a shared machine is slower when its
neighbours are busy), so every benchmark is *normalised* by a reference timed in the same run, round by round just
before it: early exit by the full-model forward at the same batch size, the full-model forward by the backbone's own
Hugging Face forward, the trace sweep by the batch-1 full-model forward, early-exit decoding by the same decoder
without exits. A uniformly slower machine scales both halves and leaves the ratio alone; a method that got slower
relative to the backbone moves it.

Early-exit ratios are further divided by the ratio the layer count predicts (E[l]/L), so the gated figure does not
move when a method merely exits elsewhere: for early exit it is 1 / realised fraction (DESIGN.md, "Numbers").

Each benchmark is gated against its own noise: the baseline (`cee_bench.bench_baseline`) stores the median of several
runs and their spread, a benchmark regresses when its change exceeds max(threshold, `SPREAD_FACTOR` × spread), and a
benchmark that looks regressed is rerun alone before it fails the gate, so one burst of a neighbour's load is not a
regression. A baseline from another CPU gates only the machine-independent ratios, and says so.

This module also holds the suite's fixed workload (backbone and inputs), because the baseline check must know which
backbone the suite runs before it spends minutes timing it. Heavy imports stay inside functions so `cee-bench --help`
stays instant.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cee_bench import bench_baseline
from cee_bench.bench_baseline import Baseline, Entry, Figures, Machine
from cee_bench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from cee_bench.classification.data import Encoded

SUITE_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
SUITE_FILE = SUITE_DIR / "test_latency.py"
DEVICES = ("cpu", "cuda")
# The floor of every benchmark's allowance. A 25% slowdown of early exit must fail; five unchanged runs on this
# 2-core machine, with four other jobs loading it, moved early exit by at most ~10% (README, "Latency regression gate").
DEFAULT_THRESHOLD = "20"
# Allowance = max(threshold, SPREAD_FACTOR × spread), the spread being the baseline runs' median absolute deviation
# (relative). On a shared machine the noise is a narrow core (a few %) plus rare bursts of ±15-30% from a neighbour's
# load; the MAD measures the core without one burst inflating it, 3 × MAD is about 2 standard deviations of that core,
# and the bursts are what the confirmation reruns are for.
SPREAD_FACTOR = 3.0
DEFAULT_RUNS = {"save": 5, "gate": 1}
CONFIRMATIONS = 2  # reruns of a benchmark that looks regressed; it fails only if every one regresses
# The reruns time a few benchmarks only, so they can afford more rounds: their median is the steadier for it, which
# keeps a real 25% slowdown from slipping under the threshold on one unlucky rerun.
RERUN_ROUNDS_SCALE = 3
BENCH_EXTRA = "pip install 'cee-bench[bench]'"

# The fixed workload. Changing any of it changes BACKBONE, so an old baseline is refused rather than misread.
BACKBONE_CONFIG = {"num_hidden_layers": 6, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024,
                   "vocab_size": 8192}
DECODER_CONFIG = {"num_hidden_layers": 6, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 256, "vocab_size": 2048, "max_position_embeddings": 128}
SEED = 0
NUM_INPUTS, MIN_TOKENS, MAX_TOKENS = 32, 8, 20
B1_INPUTS = 4  # the first inputs, run one by one in each batch-1 round (all of them form the batch of 32)
BACKBONE = (f"bert-L{BACKBONE_CONFIG['num_hidden_layers']}-H{BACKBONE_CONFIG['hidden_size']}"
            f"-A{BACKBONE_CONFIG['num_attention_heads']}-I{BACKBONE_CONFIG['intermediate_size']} and "
            f"llama-L{DECODER_CONFIG['num_hidden_layers']}-H{DECODER_CONFIG['hidden_size']}, random seed {SEED}; "
            f"{NUM_INPUTS} inputs of {MIN_TOKENS}-{MAX_TOKENS} tokens")


def build_backbone() -> nn.Module:
    """The suite's encoder: a BERT built from config with a fixed seed (no download, same weights every run)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    return BertModel(BertConfig(**BACKBONE_CONFIG)).eval()


def build_decoder() -> nn.Module:
    """The decode-step benchmark's model: a small Llama built from config with a fixed seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    return LlamaForCausalLM(LlamaConfig(**DECODER_CONFIG, bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()


def fixed_inputs() -> Encoded:
    """`NUM_INPUTS` seeded random token sequences of mixed lengths, with seeded labels, in the harness's own type."""
    import torch

    from cee_bench.classification.data import Encoded

    generator = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(MIN_TOKENS, MAX_TOKENS + 1, (NUM_INPUTS,), generator=generator).tolist()
    ids = [torch.randint(1000, BACKBONE_CONFIG["vocab_size"], (n,), generator=generator).tolist() for n in lengths]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 2, (NUM_INPUTS,), generator=generator))


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


@dataclass(frozen=True)
class SuiteRun:
    """One run of the suite as pytest-benchmark reported it."""

    figures: dict[str, Figures]
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]


@dataclass(frozen=True)
class Row:
    name: str
    now: Figures | None
    base: Entry | None
    change: float | None  # relative change of the normalised figure
    allowance: float | None  # the change this benchmark may show before it counts as regressed
    verdict: str  # ok, REGRESSED, faster, new, not run, other CPU, saved
    reruns: tuple[float, ...] = ()  # changes of the confirmation reruns, in order


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
    """`--runs N`: how many suite runs the median is taken over (5 when saving a baseline, 1 when gating)."""
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
            print(f"the benchmark suite failed (pytest exit code {int(code)}); see its output above", file=sys.stderr)
            raise SystemExit(1)
        raw = json.loads(report.read_text())
    figures = {bench["name"].removeprefix("test_"): figures_of(bench) for bench in raw["benchmarks"]}
    return SuiteRun(figures, raw["machine_info"], raw["commit_info"])


def measure(device: str, runs: int, keyword: str | None = None, rounds_scale: int = 1) -> tuple[dict[str, Entry],
                                                                                                SuiteRun]:
    """The suite run `runs` times: each benchmark's median and spread, and the last run (for its machine record)."""
    done = [run_suite(device, keyword, rounds_scale=rounds_scale) for _ in range(runs)]
    names = sorted(set.intersection(*(set(run.figures) for run in done)))
    return {name: Entry.of_runs([run.figures[name] for run in done]) for name in names}, done[-1]


def machine_mismatch(baseline: Baseline, machine: Machine, path: Path) -> str | None:
    """What differs when the baseline was recorded on another CPU model, core count or GPU; None on the same one."""
    if baseline.machine == machine:
        return None
    return f"baseline {path.name} was recorded on {baseline.machine}, this run is on {machine}"


def allowance(entry: Entry, threshold: float) -> float:
    return max(threshold, SPREAD_FACTOR * entry.spread)


def judge(name: str, now: Figures | None, baseline: Baseline | None, threshold: float, same_machine: bool) -> Row:
    """One benchmark's row: regressed when its normalised figure rose by more than its allowance."""
    entry = baseline.entries.get(name) if baseline is not None else None
    if now is None or entry is None:
        return Row(name, now, entry, None, None, "not run" if now is None else "new")
    change = now.normalised / entry.figures.normalised - 1
    limit = allowance(entry, threshold)
    if not same_machine and not entry.figures.machine_independent:
        return Row(name, now, entry, change, None, "other CPU")
    verdict = "REGRESSED" if change > limit else "faster" if change < -limit else "ok"
    return Row(name, now, entry, change, limit, verdict)


def compare(results: dict[str, Figures], baseline: Baseline | None, threshold: float,
            same_machine: bool = True) -> list[Row]:
    """One row per benchmark run or in the baseline."""
    names = results.keys() | (baseline.entries.keys() if baseline is not None else set())
    return [judge(name, results.get(name), baseline, threshold, same_machine) for name in sorted(names)]


def rerun(device: str, names: list[str]) -> dict[str, Figures]:
    """A confirmation rerun: the named benchmarks alone, with `RERUN_ROUNDS_SCALE` times the rounds."""
    return run_suite(device, names=names, rounds_scale=RERUN_ROUNDS_SCALE).figures


def confirm(rows: list[Row], rerun: Callable[[list[str]], dict[str, Figures]], baseline: Baseline, threshold: float,
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
            row, second = rows[name], judge(name, again.get(name), baseline, threshold, same_machine)
            verdict = "ok (rerun)" if second.verdict in ("ok", "faster") else "REGRESSED"
            rows[name] = replace(row, verdict=verdict, reruns=(*row.reruns, second.change))
    return list(rows.values())


_STYLES = {"REGRESSED": "bold red", "faster": "green", "new": "cyan", "not run": "dim", "other CPU": "dim",
           "ok": "", "ok (rerun)": "yellow", "saved": ""}


def render(rows: list[Row], threshold: float, device: str, machine: Machine, baseline: Baseline | None) -> Table:
    """The Rich table: the gated column is `norm.` (baseline → now), its change, its allowance and the verdict."""
    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    where = f"baseline of {baseline.machine}, {baseline.runs} runs" if baseline else "no baseline"
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
    baseline: Optional[Path] = typer.Option(None, help="Baseline file; default: benchmarks/baselines/<this "
                                                       "machine>.json, else the device's committed one."),
) -> None:
    """Run the latency suite, compare with this machine's baseline and fail (exit 1) on a confirmed regression."""
    limit = parse_threshold(threshold)
    count = parse_runs(runs, save)
    check_device(device)
    check_suite()
    machine = bench_baseline.this_machine(device)
    path = baseline if baseline is not None else bench_baseline.default_path(device, machine, save)
    console = Console()
    if not console.is_terminal:  # CI logs: room for every column rather than Rich's 80-character default
        console.width = 180
    if save:
        entries, last = measure(device, count)
        new = Baseline(BACKBONE, device, last.machine_info, last.commit_info, entries, runs=count)
        rows = [Row(name, entry.figures, entry, None, allowance(entry, limit), "saved")
                for name, entry in entries.items()]
        console.print(render(rows, limit, device, new.machine, new))
        bench_baseline.save(path, new)
        console.print(f"saved {len(entries)} benchmarks ({count} runs) to {path}; commit it with the change that "
                      "explains it")
        return
    old = bench_baseline.load(path, device, BACKBONE)
    mismatch = machine_mismatch(old, machine, path)
    if mismatch and strict:
        raise UserError(f"{mismatch}; --strict refuses another machine's baseline: record this machine's with "
                        "`cee-bench bench --save`")
    if mismatch:
        skipped = sum(not entry.figures.machine_independent for entry in old.entries.values())
        console.print(f"[bold yellow]{escape(mismatch)}: gating only the machine-independent ratios ({skipped} "
                      "trace-sweep figures not compared); record this machine's baseline with `cee-bench bench "
                      "--save`[/]", soft_wrap=True)
    entries, _ = measure(device, count)
    rows = compare({name: entry.figures for name, entry in entries.items()}, old, limit, mismatch is None)
    rows = confirm(rows, lambda names: rerun(device, names), old, limit, mismatch is None)
    console.print(render(rows, limit, device, machine, old))
    regressed = [row.name for row in rows if row.verdict == "REGRESSED"]
    cleared = sum(bool(row.reruns) for row in rows)
    if regressed:
        console.print(f"[bold red]{len(regressed)} regression(s) past their allowance, confirmed by "
                      f"{CONFIRMATIONS} reruns:[/] {escape(', '.join(regressed))}")
        raise SystemExit(1)
    console.print(f"no regression past its allowance ({sum(r.verdict.startswith('ok') for r in rows)} benchmarks "
                  f"within it; {cleared} rerun and cleared)")
