"""How many training rows make early layers learn: the per-layer held-out score of the full model and of PABEE against
the number of training rows, beside the best constant predictor, each with its paired-bootstrap interval.

Why: the reference table is only worth running at a budget where exit layers are above chance; otherwise every method
"saves" layers by answering the majority class. The budget is chosen here on held-out rows (never on dev): the
smallest number of rows at which layer 3 of PABEE is clearly above the constant predictor (the interval of the
difference excludes 0) and the full model is clearly above it too.

Each size is an ordinary `cee-bench run` (methods full and PABEE, the `cpu` stages, records and models in
`--output-dir`, one folder per size, so an interrupted measurement resumes), then the stored models are traced on
the held-out rows. Writes `budget_<task>.json` and `budget_<task>.png` into `--out`:

    .venv/bin/python benchmarks/budget.py --task sst2 --rows 500,1000,2000 --out docs/budget
    .venv/bin/python benchmarks/budget.py --task mrpc --rows 1000,2000,3302 --out docs/budget
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cee_bench.classification.metrics import METRICS
from cee_bench.classification.recipe import ClassificationRecipe
from cee_bench.classification.store import load_model
from cee_bench.classification.trace import compute_trace
from cee_bench.intervals import PairedBootstrap, interval, metric_samples
from cee_bench.options import RunOptions
from cee_bench.progress import Progress
from cee_bench.runner import check_options, run

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = {"sst2": 64, "mrpc": 128}
METHODS = ("full", "pabee")


def constant_predictions(labels: np.ndarray, metric: str) -> np.ndarray:
    """The best constant predictor for `metric`: all-positive for F1 (it scores F1 > 0), else the majority class."""
    if metric == "f1":
        return np.ones_like(labels)
    return np.full_like(labels, np.bincount(labels).argmax())


def measure(task: str, rows: int, args: argparse.Namespace) -> dict:
    output_dir = args.output_dir / f"{task}-{rows}"  # one folder per size: its records are another configuration
    opts = RunOptions(task=task, methods=",".join(METHODS), data_dir=args.data_dir, output_dir=output_dir,
                      preset="cpu", seed=args.seed, dtype=args.dtype, max_train_samples=rows,
                      max_seq_length=args.length or LENGTHS.get(task), latency_examples=args.latency_examples,
                      quiet=True)
    check_options(opts)
    paths = run(opts)
    recipe = ClassificationRecipe(opts, Progress.quiet())
    heldout = recipe.data["heldout"]
    labels = heldout.labels.numpy()
    metric = recipe.task.main_metric
    boot = PairedBootstrap(f"budget:{task}", len(labels), args.bootstrap)
    constant = constant_predictions(labels, metric)
    constant_samples = metric_samples(boot, metric, constant, labels)
    out = {"rows": rows, "train_rows": len(recipe.data["train"]), "heldout_rows": len(labels), "metric": metric,
           "constant": METRICS[metric](constant, labels), "methods": {}}
    for path in paths:
        record = json.loads(Path(path).read_text())
        store = record["model_store"]
        model = load_model(output_dir / store["path"] / next(iter(store["files"].values())))
        trace = compute_trace(model, heldout, split="heldout", batch_size=32)
        preds = trace.signals["logits"].argmax(-1).numpy().T  # [L, N]
        samples = metric_samples(boot, metric, preds, labels)  # [L, resamples]
        out["methods"][record["method"]] = [
            {"layer": layer + 1, "score": METRICS[metric](preds[layer], labels),
             "ci": interval(samples[layer]), "vs_constant": METRICS[metric](preds[layer], labels) - out["constant"],
             "vs_constant_ci": interval(samples[layer] - constant_samples),
             "train_seconds": record["train_seconds"]}
            for layer in range(len(preds))]
    return out


def choose(results: list[dict], layer: int = 3) -> int | None:
    """The smallest budget at which PABEE's `layer` and the full model's top layer are clearly above the constant."""
    for r in sorted(results, key=lambda r: r["rows"]):
        pabee, full = r["methods"]["pabee"][layer - 1], r["methods"]["full"][-1]
        if pabee["vs_constant_ci"][0] > 0 and full["vs_constant_ci"][0] > 0:
            return r["rows"]
    return None


def plot(task: str, results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(5 * len(METHODS), 4), sharey=True)
    rows = [r["rows"] for r in results]
    for ax, method in zip(axes, METHODS):
        layers = len(results[0]["methods"][method])
        for layer in range(layers):
            score = [r["methods"][method][layer]["score"] for r in results]
            low = [r["methods"][method][layer]["ci"][0] for r in results]
            high = [r["methods"][method][layer]["ci"][1] for r in results]
            ax.plot(rows, score, marker="o", label=f"layer {layer + 1}")
            ax.fill_between(rows, low, high, alpha=0.15)
        ax.plot(rows, [r["constant"] for r in results], "k--", label="constant predictor")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(rows, [str(r) for r in rows])
        ax.set_xlabel("training rows")
        ax.set_title(f"{task}: {method}, held-out {results[0]['metric']} per exit layer")
    axes[0].set_ylabel(f"held-out {results[0]['metric']} (95% bootstrap interval)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--rows", default="500,1000,2000,4000")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--latency-examples", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path, default=(ROOT.parent / "shared" / "data" / "glue").resolve())
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "budget")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "budget")
    args = parser.parse_args()
    results = [measure(args.task, int(n), args) for n in args.rows.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = choose(results)
    summary = {"task": args.task, "seed": args.seed, "dtype": args.dtype, "preset": "cpu",
               "length": args.length or LENGTHS.get(args.task), "chosen_rows": chosen,
               "rule": "smallest budget with PABEE layer 3 and the full model's top layer above the constant "
                       "predictor on held-out (95% paired-bootstrap interval of the difference excludes 0)",
               "results": results}
    (args.out / f"budget_{args.task}.json").write_text(json.dumps(summary, indent=1))
    plot(args.task, results, args.out / f"budget_{args.task}.png")
    print(f"{args.task}: held-out {results[0]['metric']} per layer (constant predictor "
          f"{results[0]['constant']:.3f}), dtype {args.dtype}, seed {args.seed}")
    for r in results:
        for method in METHODS:
            cells = ", ".join(f"{x['score']:.3f}" for x in r["methods"][method])
            print(f"  {r['rows']:>5} rows  {method:<6} {cells}   (layer 3 − constant: "
                  f"{r['methods'][method][2]['vs_constant']:+.3f} [{r['methods'][method][2]['vs_constant_ci'][0]:+.3f}, "
                  f"{r['methods'][method][2]['vs_constant_ci'][1]:+.3f}])")
    print(f"chosen budget: {chosen} rows" if chosen else "no budget in the list is clearly above the constant")


if __name__ == "__main__":
    main()
