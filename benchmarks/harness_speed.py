"""Issue 2's speed figures, measured in one process (a benchmark that prints, not a timed test):

(a) the cost of tracing the evaluation split once and replaying a 20-threshold sweep, relative to one plain
    full-model evaluation pass over the same split (goal ≤ 1.1×);
(b) PABEE at its ≤1% operating point (chosen on held-out train): measured speed-up at batch 1 ÷ layer speed-up
    (goal ≥ 0.9 on CPU);
(c) the same batched at 32 (goal ≥ 0.8).

    python benchmarks/harness_speed.py --task sst2 --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cee_bench.classification.curve import choose_operating_points, evaluate_rule, per_layer_scores, sweep
from cee_bench.classification.exits import EntropyBelow
from cee_bench.classification.fit import FitContext
from cee_bench.classification.method import build_model
from cee_bench.classification.recipe import ClassificationRecipe
from cee_bench.classification.runtime import measure_latency
from cee_bench.classification.trace import compute_trace
from cee_bench.options import RunOptions
from cee_bench.progress import Progress
from cee_bench.registry import get_method
from cee_bench.runner import check_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--max-train-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--latency-examples", type=int, default=200)
    args = parser.parse_args()

    method = get_method("pabee")
    opts = RunOptions(task=args.task, methods="pabee", epochs=args.epochs, data_dir=args.data_dir,
                      max_train_samples=args.max_train_samples, max_seq_length=128, device="cpu")
    check_options(opts)
    recipe = ClassificationRecipe(opts, Progress(), [method])
    task, data = recipe.task, recipe.data
    model = build_model(method, recipe.encoder, task, "mean", 42)
    method.fit(FitContext(model, data["train"], data["heldout"], recipe.stages[method.name], seed=42, device="cpu",
                          progress=recipe.progress, eval_batch_size=32))
    model.eval()

    # (a) one plain evaluation pass vs trace + 20-threshold sweep
    with torch.no_grad():
        started = time.perf_counter()
        for rows in data["dev"].batch_rows(32):  # length-bucketed, as the trace's batches are
            model.full_forward(data["dev"].collate(rows))
        plain = time.perf_counter() - started
    started = time.perf_counter()
    trace = compute_trace(model, data["dev"], split="dev", batch_size=32)
    traced = time.perf_counter() - started
    grid = [i * 0.7 / 19 for i in range(20)]
    started = time.perf_counter()
    sweep(grid, lambda s: (trace, EntropyBelow(s)), task)
    swept = time.perf_counter() - started
    print(f"(a) plain eval pass {plain:.2f}s; trace {traced:.2f}s + 20-threshold sweep {swept:.3f}s "
          f"= {(traced + swept) / plain:.2f}x one pass (goal <= 1.1x)")

    # (b), (c) PABEE at its <=1% operating point
    held = compute_trace(model, data["heldout"], split="heldout", batch_size=32)
    curve = sweep(method.grid(model.num_layers), lambda t: (held, method.rule(model, t)), task)
    choice = choose_operating_points(curve, per_layer_scores(held, task)[-1])["le1_loss"]
    rule = method.rule(model, choice["threshold"])
    point, _ = evaluate_rule(trace, rule, task)
    print(f"PABEE <=1% loss: patience {choice['threshold']}, dev {task.main_metric} {point['score']:.4f}, "
          f"saved layers {point['saved_layers']:.1%} (simulated on the whole dev split)")
    for label, batch_size, goal in (("(b)", 1, 0.9), ("(c)", 32, 0.8)):
        lat = measure_latency(model, rule, data["dev"], batch_size=batch_size, max_examples=args.latency_examples)
        print(f"{label} batch {batch_size}: measured speed-up {lat['speedup_wall']:.2f}x, layer speed-up "
              f"{model.num_layers / lat['mean_exit_layer']:.2f}x on the {lat['examples']} timed examples, "
              f"realised fraction {lat['realised_fraction']:.2f} (goal >= {goal})")


if __name__ == "__main__":
    main()
