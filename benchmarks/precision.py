"""fp32 against bf16 (`--dtype`, issue 21 items 1-2), measured in one process with the two dtypes interleaved.

1. Training speed: optimiser steps per second of the plain fine-tune (`full`'s stage: every parameter, batch 16) on
   SST-2 rows at length 64, fp32 and bf16 in alternating rounds of one epoch over `--speed-rows` rows each; a round's
   s/step is the median gap between its steps after the first (`stage_steps.StepClock`), on the process's CPU clock
   (`--clock cpu`, one thread: what a step costs on an idle core) or the wall clock. Goal on this CPU: bf16 ≥ 2.5×.
2. Inference latency: the full model's forward (`MultiExitModel.full_forward`) at batch 1 and 32 on the first SST-2
   dev rows, fp32 and bf16 side by side (`early_exit_overhead.side_by_side`): per-dtype p50 per batch and the speed
   ratio with its 95% interval (`cee_bench.timing.speedup_interval`).
3. Quality (`--quality`; hours at the issue's size, so not by default): for each seed and dtype, `cee-bench run` of
   `--methods` on SST-2 with `--rows` training rows and the `cpu` preset's stages, records under
   `--output-dir`/<dtype>; then per method and operating point the dev score and saved layers, mean over seeds with
   a 95% interval over dev examples (paired bootstrap, `cee_bench.intervals`: the same resamples for both dtypes and
   every seed; the seeds' sd beside it, since the interval does not cover seed variance), and bf16 − fp32 with its
   paired interval ("within noise" when it holds 0).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision.py                       # 1 and 2: a few minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision.py --quality --rows 2000 --seeds 42,43,44 \\
        --methods pabee --quality-threads 2 --output-dir runs/precision              # the issue's measurement
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision.py --quality --rows 200 --seeds 42   # 3, tiny: it works
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cee_bench.classification.data import encode, load_splits
from cee_bench.classification.fit import FitContext
from cee_bench.classification.method import build_model, resolve_stages
from cee_bench.classification.multiexit import load_backbone
from cee_bench.classification.recipe import EVAL_BATCH_SIZE
from cee_bench.intervals import PairedBootstrap, interval, metric_samples, saved_layer_samples
from cee_bench.options import RunOptions
from cee_bench.precision import cpu_bf16_native
from cee_bench.registry import get_method
from cee_bench.runner import run
from cee_bench.tasks import get_task
from cee_bench.timing import Clock, latency_stats, speedup, speedup_interval
from early_exit_overhead import side_by_side
from stage_steps import StepClock, seconds_per_step

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("fp32", "bf16")
TASK = get_task("sst2")
SEED = 42


def training_speed(data_dir: Path, *, rows: int, rounds: int, max_seq_length: int, clock: Any) -> dict[str, Any]:
    """(1): s/step per dtype and round, fp32 and bf16 alternating which goes first."""
    encoder, tokenizer, _ = load_backbone(None)
    splits = load_splits(TASK, data_dir, max_train=rows, max_eval=rows, seed=SEED)
    train, heldout = (encode(tokenizer, getattr(splits, s), max_seq_length) for s in ("train", "heldout"))
    method = get_method("full")
    stages = {name: replace(stage, epochs=1) for name, stage in
              resolve_stages(method, RunOptions(task=TASK.name, methods="full", preset="cpu")).items()}
    per_step: dict[str, list[float]] = {dtype: [] for dtype in DTYPES}
    for r in range(rounds):
        for dtype in DTYPES if r % 2 == 0 else DTYPES[::-1]:
            model = build_model(method, encoder, TASK, "mean", SEED, dtype)
            steps = StepClock(clock)
            method.fit(FitContext(model, train, heldout, stages, seed=SEED, device="cpu", progress=steps,
                                  eval_batch_size=EVAL_BATCH_SIZE))
            per_step[dtype].append(seconds_per_step(next(t for d, t in steps.steps.items() if d.startswith("train"))))
    ratios = [f / b for f, b in zip(per_step["fp32"], per_step["bf16"])]
    return {"s_per_step": {d: statistics.median(v) for d, v in per_step.items()}, "ratio": statistics.median(ratios),
            "ratios": ratios, "batch_size": stages["train"].batch_size, "rounds": rounds}


def inference_latency(data_dir: Path, *, examples: dict[int, int], rounds: int,
                      max_seq_length: int) -> dict[int, dict[str, Any]]:
    """(2): per batch size, the full forward's per-batch p50 per dtype and fp32 time ÷ bf16 time."""
    encoder, tokenizer, _ = load_backbone(None)
    model = build_model(get_method("full"), encoder, TASK, "mean", SEED).eval()
    dev = encode(tokenizer, load_splits(TASK, data_dir, max_train=1, max_eval=max(examples.values()), seed=SEED).dev,
                 max_seq_length)

    def at(dtype: str):
        def forward(batch: dict) -> torch.Tensor:
            model.precision = dtype
            return model.full_forward(batch)
        return forward

    out = {}
    with torch.no_grad():
        for batch_size, n in examples.items():
            batches = [{k: v for k, v in dev.collate(r).items() if k in ("input_ids", "attention_mask")}
                       for r in dev.batch_rows(batch_size, range(min(n, len(dev))))]
            times = side_by_side({dtype: at(dtype) for dtype in DTYPES}, batches, rounds, Clock(torch.device("cpu")))
            out[batch_size] = {"p50_ms": {d: latency_stats(np.median(times[d], axis=0))["p50"] for d in DTYPES},
                               "ratio": speedup(times["fp32"], times["bf16"]),
                               "ci": speedup_interval(times["fp32"], times["bf16"], f"precision-b{batch_size}"),
                               "batches": len(batches)}
    return out


def quality_runs(data_dir: Path, out: Path, *, rows: int, seeds: list[int], methods: str, max_seq_length: int) -> None:
    """(3)'s runs: every seed at both dtypes, the dtypes alternating which goes first (a record already there with
    the same settings is reused, so an interrupted measurement resumes)."""
    for i, seed in enumerate(seeds):
        for dtype in DTYPES if i % 2 == 0 else DTYPES[::-1]:
            started = time.perf_counter()
            run(RunOptions(task=TASK.name, methods=methods, data_dir=data_dir, output_dir=out / dtype, preset="cpu",
                           seed=seed, dtype=dtype, device="cpu", max_train_samples=rows, max_seq_length=max_seq_length,
                           quiet=True))
            print(f"  seed {seed} {dtype}: {time.perf_counter() - started:.0f} s", flush=True)


def quality_table(out: Path, *, seeds: list[int], methods: str) -> list[dict[str, Any]]:
    """(3)'s rows: per method and operating point, score and saved layers per dtype and their bf16 − fp32."""
    rows = []
    for name in methods.split(","):
        records = {d: [json.loads((out / d / TASK.name / f"{name}__seed{s}.json").read_text()) for s in seeds]
                   for d in DTYPES}
        first = records["fp32"][0]
        labels = np.asarray(first["per_example"]["labels"])
        boot = PairedBootstrap(f"precision:{TASK.name}", len(labels))
        for point in first["operating_points"]:
            samples, means = {}, {}
            for dtype, recs in records.items():
                logged = [r["per_example"]["points"][point] for r in recs]
                preds = np.array([p["predictions"] for p in logged])
                exits = np.array([p["exit_layers"] for p in logged])
                samples[dtype] = {"score": metric_samples(boot, first["metric"], preds, labels).mean(0),
                                  "saved": saved_layer_samples(boot, exits, first["num_layers"]).mean(0)}
                means[dtype] = {"score": [r["operating_points"][point]["score"] for r in recs],
                                "saved": [r["operating_points"][point]["saved_layers"] for r in recs]}
            row: dict[str, Any] = {"method": name, "point": point}
            for figure in ("score", "saved"):
                for dtype in DTYPES:
                    values = means[dtype][figure]
                    row[f"{dtype}_{figure}"] = (statistics.fmean(values), interval(samples[dtype][figure]),
                                                statistics.stdev(values) if len(values) > 1 else None)
                diff = samples["bf16"][figure] - samples["fp32"][figure]
                row[f"diff_{figure}"] = (statistics.fmean(means["bf16"][figure]) -
                                         statistics.fmean(means["fp32"][figure]), interval(diff))
            rows.append(row)
    return rows


def _level(mean: float, ci: tuple[float, float], sd: float | None) -> str:
    return f"{100 * mean:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" + ("" if sd is None else f" sd {100 * sd:.1f}")


def _difference(mean: float, ci: tuple[float, float]) -> str:
    return f"{100 * mean:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" + (" within noise" if ci[0] <= 0 <= ci[1]
                                                                         else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    parser.add_argument("--speed-rows", type=int, default=96, help="(1): training rows per round (batch 16)")
    parser.add_argument("--rounds", type=int, default=3, help="(1), (2): interleaved rounds")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="(1)'s clock")
    parser.add_argument("--examples-b1", type=int, default=100)
    parser.add_argument("--examples-b32", type=int, default=320)
    parser.add_argument("--quality", action="store_true", help="also (3): train every seed at both dtypes")
    parser.add_argument("--rows", type=int, default=2000, help="(3): training rows")
    parser.add_argument("--seeds", default="42,43,44", help="(3): comma-separated seeds")
    parser.add_argument("--methods", default="full,pabee,deebert,pcee-bert", help="(3): methods run")
    parser.add_argument("--output-dir", type=Path, default=None, help="(3): where the records go (default: temp)")
    parser.add_argument("--threads", type=int, default=1, help="(1), (2): torch threads")
    parser.add_argument("--quality-threads", type=int, default=None, help="(3): torch threads (default: --threads)")
    args = parser.parse_args()
    if not cpu_bf16_native():
        sys.exit("this CPU has no native bf16 (AVX-512 BF16 / AMX): nothing to compare")
    torch.set_num_threads(args.threads)
    print(f"fp32 vs bf16, SST-2, length {args.max_seq_length}, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    speed = training_speed(args.data_dir, rows=args.speed_rows, rounds=args.rounds,
                           max_seq_length=args.max_seq_length,
                           clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    print(f"(1) training, batch {speed['batch_size']}, {args.clock} clock, median of {speed['rounds']} rounds: "
          + ", ".join(f"{d} {1 / s:.2f} steps/s ({s:.3f} s/step)" for d, s in speed["s_per_step"].items())
          + f"; bf16 ÷ fp32 speed {speed['ratio']:.2f}x (rounds: "
          + ", ".join(f"{r:.2f}" for r in speed["ratios"]) + ") (goal >= 2.5)", flush=True)

    latency = inference_latency(args.data_dir, examples={1: args.examples_b1, 32: args.examples_b32},
                                rounds=args.rounds, max_seq_length=args.max_seq_length)
    for batch_size, figures in latency.items():
        low, high = figures["ci"]
        print(f"(2) inference b{batch_size} ({figures['batches']} batches): "
              + ", ".join(f"{d} p50 {ms:.2f} ms" for d, ms in figures["p50_ms"].items())
              + f"; bf16 ÷ fp32 speed {figures['ratio']:.2f}x [{low:.2f}, {high:.2f}]", flush=True)

    if not args.quality:
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.quality_threads or args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        print(f"(3) {len(seeds)} seed(s) × {DTYPES}, {args.rows} training rows, cpu preset, records in {out}",
              flush=True)
        quality_runs(args.data_dir, out, rows=args.rows, seeds=seeds, methods=args.methods,
                     max_seq_length=args.max_seq_length)
        rows = quality_table(out, seeds=seeds, methods=args.methods)
    print(f"(3) dev {TASK.main_metric} and saved layers (%), mean over {len(seeds)} seed(s) [95% interval over dev "
          "examples] (sd over seeds); bf16 − fp32 [paired interval]")
    print(" | ".join(("method", "point", "fp32 score", "bf16 score", "bf16 − fp32", "fp32 saved", "bf16 saved",
                      "bf16 − fp32")))
    for row in rows:
        print(" | ".join([row["method"], row["point"], _level(*row["fp32_score"]), _level(*row["bf16_score"]),
                          _difference(*row["diff_score"]), _level(*row["fp32_saved"]), _level(*row["bf16_saved"]),
                          _difference(*row["diff_saved"])]))


if __name__ == "__main__":
    main()
