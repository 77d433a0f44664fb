"""`cee-bench bench`: the latency regression gate (issue 6).

The pytest-benchmark suite in `benchmarks/test_latency.py` times a fixed, randomly initialised BERT on fixed inputs.
Absolute times say more about the machine than the code (CI runners differ, and a shared machine is slower when its
neighbours are busy), so every benchmark is *normalised* by a reference timed in the same run, round by round just
before it: early exit by the full-model forward at the same batch size, the full-model forward by the backbone's own
Hugging Face forward, the trace sweep by the batch-1 full-model forward, early-exit decoding by the same decoder
without exits. A uniformly slower machine scales both halves and leaves the ratio alone; a method that got slower
relative to the backbone moves it.

Early-exit ratios are further divided by the ratio the layer count predicts (E[l]/L), so the gated figure does not
move when a method merely exits elsewhere: for early exit it is 1 / realised fraction (DESIGN.md, "Numbers").

This module also holds the suite's fixed workload (backbone and inputs), because the baseline check must know which
backbone the suite runs before it spends minutes timing it. Heavy imports stay inside functions so `cee-bench --help`
stays instant.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cee_bench.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from cee_bench.data import Encoded

SUITE_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
SUITE_FILE = SUITE_DIR / "test_latency.py"
BASELINE_FORMAT = 1
DEVICES = ("cpu", "cuda")
# Five full runs on a 2-core machine at load 18-21 spread the normalised figures (max/min - 1 per benchmark) by 2-16%
# for early exit, the full forward and decoding, and by 14-45% for the trace sweeps (many tiny operations, which share
# the machine's load worst with their reference); raw times spread by up to 127%. The default sits above the worst
# normalised spread so unchanged code passes on a busy machine; a dedicated CI runner can pass a tighter one.
DEFAULT_THRESHOLD = "50"

# The fixed workload. Changing any of it changes BACKBONE, so an old baseline is refused rather than misread.
BACKBONE_CONFIG = {"num_hidden_layers": 6, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024,
                   "vocab_size": 8192}
DECODER_CONFIG = {"num_hidden_layers": 6, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 256, "vocab_size": 2048, "max_position_embeddings": 128}
SEED = 0
NUM_INPUTS, MIN_TOKENS, MAX_TOKENS = 32, 8, 20
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

    from cee_bench.data import Encoded

    generator = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(MIN_TOKENS, MAX_TOKENS + 1, (NUM_INPUTS,), generator=generator).tolist()
    ids = [torch.randint(1000, BACKBONE_CONFIG["vocab_size"], (n,), generator=generator).tolist() for n in lengths]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 2, (NUM_INPUTS,), generator=generator))


def paired_ratio(target_s: list[float], reference_s: list[float]) -> float:
    """Median over rounds of target ÷ the reference timed just before it: both halves of a pair share the machine's
    load at that moment, and the median drops the rounds a neighbour's burst hit one half of."""
    return statistics.median(t / r for t, r in zip(target_s, reference_s, strict=True))


@dataclass(frozen=True)
class Figures:
    """One benchmark's normalised result, as compared and as stored in the baseline."""

    normalised: float  # ratio ÷ expected ratio: the gated figure
    ratio: float  # time ÷ reference time
    median_ms: float
    reference: str
    mean_exit_layer: float | None = None
    realised_fraction: float | None = None

    @classmethod
    def from_benchmark(cls, bench: dict[str, Any]) -> "Figures":
        """From one entry of pytest-benchmark's JSON (its `extra_info` is written by the suite)."""
        info = bench["extra_info"]
        return cls(normalised=info["ratio"] / info["expected_ratio"], ratio=info["ratio"],
                   median_ms=bench["stats"]["median"] * 1000, reference=info["reference"],
                   mean_exit_layer=info.get("mean_exit_layer"), realised_fraction=info.get("realised_fraction"))


@dataclass
class Baseline:
    backbone: str
    device: str
    hardware: str
    benchmarks: dict[str, Figures]


@dataclass(frozen=True)
class Row:
    name: str
    now: Figures | None
    base: Figures | None
    change: float | None  # relative change of the normalised figure
    verdict: str  # ok, REGRESSED, faster, new, not run


def parse_threshold(text: str) -> float:
    """`--threshold 25` or `25%` → 0.25; anything but a positive finite percentage is a user error."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise UserError(f"--threshold must be a positive percentage such as 25 or 25%, got '{text}'")
    return value / 100


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'; choose {' or '.join(DEVICES)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no CUDA device is available")


def default_baseline(device: str) -> Path:
    """One committed baseline per device: ratios on a GPU are a different machine's story."""
    return SUITE_DIR / ("baseline.json" if device == "cpu" else f"baseline-{device}.json")


def load_baseline(path: Path, device: str) -> Baseline:
    """The baseline at `path`, refused (one line) when missing, unreadable or recorded on another backbone/device."""
    if not path.is_file():
        raise UserError(f"no baseline at {path}; create one with `cee-bench bench --save"
                        f"{'' if device == 'cpu' else ' --device ' + device}`")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != BASELINE_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {BASELINE_FORMAT}")
        baseline = Baseline(backbone=raw["backbone"], device=raw["device"], hardware=raw.get("hardware", "?"),
                            benchmarks={name: Figures(**fig) for name, fig in raw["benchmarks"].items()})
        bad = [name for name, fig in baseline.benchmarks.items() if not 0 < fig.normalised < math.inf]
        if bad:
            raise ValueError(f"benchmark {bad[0]} has no positive normalised figure")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"baseline {path} is corrupt ({type(exc).__name__}: {exc}); restore it from git or "
                        "re-create it with `cee-bench bench --save`") from None
    if baseline.backbone != BACKBONE:
        raise UserError(f"baseline {path} was recorded on backbone '{baseline.backbone}', but the suite runs "
                        f"'{BACKBONE}'; re-create it with `cee-bench bench --save`")
    if baseline.device != device:
        raise UserError(f"baseline {path} was recorded on {baseline.device}, but this run is on {device}; pass that "
                        f"device's baseline or create one with `cee-bench bench --save --device {device}`")
    return baseline


def save_baseline(path: Path, device: str, results: dict[str, Figures]) -> None:
    """Write the baseline atomically: an interrupted `--save` leaves the old file, never half of a new one."""
    record = {"format": BASELINE_FORMAT, "backbone": BACKBONE, "device": device, "hardware": hardware(device),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "benchmarks": {name: vars(fig) for name, fig in sorted(results.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a committed file private to its writer
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hardware(device: str) -> str:
    """What the numbers ran on, for the table's caption (ratios transfer between machines only approximately)."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def run_suite(device: str, keyword: str | None = None) -> dict[str, Figures]:
    """Run the pytest-benchmark suite in this process and return each benchmark's figures by name.

    In-process, so that the test-only `cee_bench.runtime.layer_hook` a test sets is the one the suite runs with.
    `keyword` is a pytest `-k` expression selecting some benchmarks (the gate's own tests use it to stay short).
    """
    import pytest

    if not SUITE_FILE.is_file():
        raise UserError(f"the benchmark suite is not at {SUITE_FILE}; run `cee-bench bench` from a source checkout")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "benchmarks.json"
        args = [str(SUITE_FILE), f"--bench-device={device}", f"--benchmark-json={report}", "--benchmark-quiet",
                "--benchmark-disable-gc", "-q", "-p", "no:cacheprovider", *(["-k", keyword] if keyword else [])]
        code = pytest.main(args)
        if code != pytest.ExitCode.OK or not report.is_file():
            print(f"the benchmark suite failed (pytest exit code {int(code)}); see its output above", file=sys.stderr)
            raise SystemExit(1)
        benchmarks = json.loads(report.read_text())["benchmarks"]
    return {bench["name"].removeprefix("test_"): Figures.from_benchmark(bench) for bench in benchmarks}


def compare(results: dict[str, Figures], baseline: Baseline | None, threshold: float) -> list[Row]:
    """One row per benchmark run or in the baseline; a regression is a normalised figure up by more than
    `threshold` (relative)."""
    base = baseline.benchmarks if baseline is not None else {}
    rows = []
    for name in sorted(results.keys() | base.keys()):
        now, old = results.get(name), base.get(name)
        if now is None or old is None:
            rows.append(Row(name, now, old, None, "not run" if now is None else "new"))
            continue
        change = now.normalised / old.normalised - 1
        verdict = "REGRESSED" if change > threshold else "faster" if change < -threshold else "ok"
        rows.append(Row(name, now, old, change, verdict))
    return rows


_STYLES = {"REGRESSED": "bold red", "faster": "green", "new": "cyan", "not run": "dim", "ok": ""}


def render(rows: list[Row], threshold: float, device: str, baseline: Baseline | None) -> Table:
    """The Rich table of the changes: gated column is `norm.` (baseline → now), its change and the verdict."""
    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    table = Table(title=f"Latency vs baseline ({BACKBONE}, {device} on {hardware(device)}; "
                        f"gate: norm. up > {threshold:.0%})",
                  caption=escape("norm. = time ÷ reference time ÷ (E[l]/L for early exit); lower is faster. ")
                          + (f"Baseline recorded on {baseline.hardware}." if baseline else "No baseline."))
    for column in ("benchmark", "median ms", "reference", "× ref", "E[l]", "realised", "norm. base", "norm. now",
                   "change", "verdict"):
        table.add_column(escape(column), justify="left" if column in ("benchmark", "reference", "verdict") else "right")
    for row in rows:
        fig = row.now or row.base
        exit_layer = num(fig.mean_exit_layer, ".2f")
        if row.now and row.base and row.now.mean_exit_layer != row.base.mean_exit_layer:
            exit_layer += f" (was {num(row.base.mean_exit_layer, '.2f')})"
        table.add_row(escape(row.name), num(row.now and row.now.median_ms, ".2f"), fig.reference,
                      num(row.now and row.now.ratio, ".3f"), exit_layer,
                      num(row.now and row.now.realised_fraction, ".2f"), num(row.base and row.base.normalised, ".3f"),
                      num(row.now and row.now.normalised, ".3f"), num(row.change, "+.1%"), row.verdict,
                      style=_STYLES[row.verdict])
    return table


def bench_command(
    threshold: str = typer.Option(DEFAULT_THRESHOLD, help="Fail when a benchmark's normalised time rises by more "
                                                          "than this percentage over the baseline."),
    save: bool = typer.Option(False, "--save", help="Write this run's figures as the new baseline (deliberately)."),
    device: str = typer.Option("cpu", help="cpu or cuda; each device has its own baseline."),
    baseline: Optional[Path] = typer.Option(None, help="Baseline file; default: benchmarks/baseline.json "
                                                       "(benchmarks/baseline-cuda.json with --device cuda)."),
) -> None:
    """Run the latency suite, compare with the committed baseline and fail (exit 1) on a regression."""
    limit = parse_threshold(threshold)
    check_device(device)
    path = baseline if baseline is not None else default_baseline(device)
    old = None
    if not save:
        old = load_baseline(path, device)
    elif path.is_file():  # show what the new baseline changes, when the old one is comparable
        try:
            old = load_baseline(path, device)
        except UserError:
            old = None
    results = run_suite(device)
    rows = compare(results, old, limit)
    console = Console()
    if not console.is_terminal:  # CI logs: room for every column rather than Rich's 80-character default
        console.width = 160
    console.print(render(rows, limit, device, old))
    if save:
        save_baseline(path, device, results)
        console.print(f"saved {len(results)} benchmarks to {path}; commit it with the change that explains it")
        return
    regressed = [row.name for row in rows if row.verdict == "REGRESSED"]
    if regressed:
        console.print(f"[bold red]{len(regressed)} regression(s) past {limit:.0%}:[/] {escape(', '.join(regressed))}")
        raise SystemExit(1)
    console.print(f"no regression past {limit:.0%} ({sum(r.verdict == 'ok' for r in rows)} benchmarks within it)")
