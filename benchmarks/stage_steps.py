"""Seconds per training step of every method's stages, and seconds per row of an evaluation pass, from a few steps
each (a benchmark that prints, not a timed test): what the `cpu` preset's minutes per method and the demo's size are
estimated from.

    OMP_NUM_THREADS=1 python benchmarks/stage_steps.py --task sst2 --data-dir ../shared/data/glue

Each method trains with the chosen preset's stages (batch size and lr) for `--epochs` (default 1) on `--rows`
training rows, so each stage runs a few steps; ConsistentEE on one α. A stage's s/step is the median interval
between its steps after the first (the first pays the optimiser's set-up), on the process's CPU clock by default
(`--clock cpu`: with one thread, what the step costs on an idle core, whatever else the machine runs) or on the wall
clock (`--clock wall`: what it cost under the load of the moment). `estimate` turns the figures into the training
seconds of a run on N rows with the preset's own epochs and grid.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cee_bench.classification.data import encode, load_splits
from cee_bench.classification.fit import FitContext
from cee_bench.classification.method import build_model, resolve_stages
from cee_bench.classification.multiexit import load_backbone
from cee_bench.classification.recipe import EVAL_BATCH_SIZE
from cee_bench.classification.trace import compute_trace
from cee_bench.options import RunOptions
from cee_bench.progress import Progress
from cee_bench.registry import get_method
from cee_bench.tasks import get_task

METHODS = ("full", "pabee", "deebert", "berxit", "right-tool", "pcee-bert", "consistentee")
SEED = 42
HELDOUT_ALPHAS = 5  # the size of ConsistentEE's held-out α grid on SST-2 at 2,000 rows (it depends on the data)


class StepClock(Progress):
    """A silent Progress that keeps, per task description, the times of its steps on `clock`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(quiet=True)
        self.clock = clock
        self.steps: dict[str, list[float]] = {}

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        times = self.steps.setdefault(description, [])
        times.append(self.clock())
        yield lambda *args, **kwargs: times.append(self.clock())


def seconds_per_step(times: list[float]) -> float:
    gaps = [b - a for a, b in zip(times[1:], times[2:])] or [times[-1] - times[0]]
    return statistics.median(gaps)


def measure(task: str, data_dir: Path, *, methods: Sequence[str] = METHODS, rows: int = 96, epochs: float = 1,
            preset: str = "cpu", max_seq_length: int = 128, clock: Callable[[], float] = time.process_time
            ) -> dict[str, Any]:
    """{method: {stage: s/step}}, plus `eval_s_per_row` (one eval-mode pass, length-bucketed at batch 32)."""
    encoder, tokenizer, _ = load_backbone(None)
    splits = load_splits(get_task(task), data_dir, max_train=rows, max_eval=rows, seed=SEED)
    train, heldout = (encode(tokenizer, getattr(splits, s), max_seq_length) for s in ("train", "heldout"))
    out: dict[str, Any] = {}
    for name in methods:
        method = get_method(name)
        stages = resolve_stages(method, RunOptions(task=task, methods=name, preset=preset, epochs=epochs))
        if "policy" in stages:
            stages["policy"] = replace(stages["policy"], alphas=(1.0,), max_rounds=1)  # a step costs the same at any α
        model = build_model(method, encoder, get_task(task), "mean", SEED)
        steps = StepClock(clock)
        started = clock()
        method.fit(FitContext(model, train, heldout, stages, seed=SEED, device="cpu", progress=steps,
                              eval_batch_size=EVAL_BATCH_SIZE))
        out[name] = {"fit_s": clock() - started,
                     **{d.removeprefix("train "): seconds_per_step(t) for d, t in steps.steps.items()
                        if d.startswith("train ")}}
    started = clock()
    compute_trace(model, train, split="train", batch_size=EVAL_BATCH_SIZE)
    out["eval_s_per_row"] = (clock() - started) / len(train)
    return out


def estimate(figures: dict[str, Any], rows: int, *, preset: str = "cpu", task: str = "sst2",
             alphas: int | None = None) -> dict[str, float]:
    """Training seconds per method on `rows` rows with the preset's stages: steps × s/step, plus the eval-mode
    passes over the training set ConsistentEE makes each round (`alphas` α, each up to `max_rounds` rounds)."""
    totals = {}
    for name, per_stage in figures.items():
        if name == "eval_s_per_row":
            continue
        stages = resolve_stages(get_method(name), RunOptions(task=task, methods=name, preset=preset))
        steps = {s: math.ceil(stages[s].epochs * math.ceil(rows / stages[s].batch_size)) for s in stages}
        seconds = {s: steps[s] * per_stage[s] for s in stages}
        if "policy" in stages:
            grid = stages["policy"].alphas
            rounds = (alphas or (HELDOUT_ALPHAS if isinstance(grid, str) else len(grid))) * stages["policy"].max_rounds
            seconds = seconds["init"] + rounds * (seconds["policy"] + seconds["refine"]
                                                  + rows * figures["eval_s_per_row"])
            totals[name] = seconds
        else:
            totals[name] = sum(seconds.values())
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rows", type=int, default=96, help="training rows (batch 16: 6 steps per epoch)")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--estimate-rows", default="4000", help="comma-separated training-set sizes to estimate")
    parser.add_argument("--alphas", type=int, default=None,
                        help=f"ConsistentEE's α count (default: the preset's; {HELDOUT_ALPHAS} for a held-out grid)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    figures = measure(args.task, args.data_dir, methods=args.methods.split(","), rows=args.rows,
                      max_seq_length=args.max_seq_length,
                      clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    print(f"{args.task}, length {args.max_seq_length}, {args.clock} clock:")
    for name, per_stage in figures.items():
        if name != "eval_s_per_row":
            print(f"{name}: " + ", ".join(f"{s} {v:.3f} s/step" for s, v in per_stage.items() if s != "fit_s")
                  + f" (fit on {args.rows} rows, 1 epoch per stage: {per_stage['fit_s']:.1f} s)")
    print(f"eval pass: {1000 * figures['eval_s_per_row']:.1f} ms/row")
    for rows in (int(r) for r in args.estimate_rows.split(",")):
        totals = estimate(figures, rows, task=args.task, alphas=args.alphas)
        print(f"estimated training at {rows} rows (cpu preset stages): " +
              ", ".join(f"{n} {s / 60:.1f} min" for n, s in totals.items()) + f"; total {sum(totals.values()) / 60:.1f} min")


if __name__ == "__main__":
    main()
