"""What ConsistentEE's policy stage (step 3) costs, in units of one backbone pass over the training set.

Because backbone and classifiers are frozen in step 3, `cee_bench.classification.consistentee` computes the training
set's pooled states and per-layer CE once per round and runs every policy epoch and all K trajectories on that cache.
The reference code instead runs K dropout-perturbed backbone passes per batch, every epoch; its cost is extrapolated
here from a few timed K-tiled batches. Goal: cached policy stage <= 1.5x one backbone pass.

    .venv/bin/python benchmarks/policy_stage_cost.py --task rte --data-dir ../shared/data/glue --max-train-samples 400
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from cee_bench.classification.analysis import build_context
from cee_bench.classification.consistentee import alpha_per_layer, collect_states, memorized_layer, train_policy


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@torch.no_grad()
def backbone_pass(model, data, batch_size: int) -> None:
    model.eval()
    for rows in data.batch_rows(batch_size):  # length-bucketed, as the state cache's pass is
        model({k: v.to(model.device) for k, v in data.collate(rows).items()})


@torch.no_grad()
def reference_batches(model, data, batch_size: int, samples: int, batches: int) -> float:
    """Seconds for `batches` reference-style steps: the batch tiled K times, one train-mode (dropout) pass."""
    model.train()
    started = time.perf_counter()
    for rows in data.batch_rows(batch_size, by_length=False)[:batches]:  # training batches: file order
        model({k: v.repeat_interleave(samples, 0).to(model.device) for k, v in data.collate(rows).items()})
    model.eval()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--max-train-samples", type=int, default=400)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--reference-batches", type=int, default=3, help="K-tiled batches timed to extrapolate")
    args = parser.parse_args()
    ctx, _ = build_context(args.task, Path(tempfile.mkdtemp(prefix="cee-policy-cost-")), args.data_dir, args.model,
                           args.preset, None, args.max_train_samples, args.max_seq_length, "mean", 42, True)
    stage = ctx.stages["policy"]
    model, train = ctx.model, ctx.train
    backbone_pass(model, train, ctx.eval_batch_size)  # warm-up
    one_pass = seconds(lambda: backbone_pass(model, train, ctx.eval_batch_size))
    holder = {}
    cache = seconds(lambda: holder.setdefault("states", collect_states(model, train, ctx.eval_batch_size)))
    states = holder["states"]
    memorized = memorized_layer(states.preds, train.labels)
    alpha = alpha_per_layer(1.0, model.num_layers)  # the stage costs the same at any α
    policy = seconds(lambda: train_policy(ctx, states, memorized, alpha, 0))
    steps = math.ceil(len(train) / stage.batch_size)
    timed = min(args.reference_batches, steps)
    reference = reference_batches(model, train, stage.batch_size, stage.samples, timed) / timed * steps * stage.epochs
    print(f"task {args.task}: {len(train)} training instances, {model.num_layers} layers, policy stage "
          f"{stage.epochs:g} epochs x batch {stage.batch_size}, K={stage.samples}")
    print(f"one backbone pass over the training set (eval, no grad): {one_pass:8.2f} s  = 1.00x")
    print(f"cached policy stage: state cache {cache:.2f} s + {stage.epochs:g} policy epochs {policy:.2f} s "
          f"= {(cache + policy) / one_pass:.2f}x  (goal <= 1.5x)")
    print(f"reference-style (K dropout passes per batch, every epoch; extrapolated from {timed} batches): "
          f"{reference:.2f} s = {reference / one_pass:.2f}x")


if __name__ == "__main__":
    main()
