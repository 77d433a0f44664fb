"""ConsistentEE's two policy estimators measured through `cee-bench run` (issue 20, "Show"): does the policy trace a
curve, and does ConsistentEE beat DeeBERT and PABEE at ≤1% loss?

For each estimator (`on-policy`, the reference's `greedy-epsilon`) it runs `full, consistentee, consistentee-pi` on
each task and seed with the `cpu` preset, into `<output-dir>/<estimator>/` — the records `cee-bench run` writes when
the preset's policy stage uses that estimator — and `pabee, deebert` once, in the first estimator's folder. Every
folder's model store is a link to `<output-dir>/models`, so the shared trainings (step 1 = PABEE's training, the full
model) train once for both estimators, and a second invocation reuses every record and model. Timing is not the
point here: `--latency-examples` is small.

Prints, per estimator, task, seed and α: the held-out exit histogram of the last round, how many layers receive ≥ 5%
of the rows, π's undecided share (in (0.1, 0.9)) per deciding layer over the rows that reach it, and whether the
round collapsed or converged; per estimator, task and seed: the distinct operating points on held-out (saved layers
to 0.1 point), the span of saved layers on dev, and the ≤1% loss point (dev saved layers and score, chosen on
held-out) of the α curve, the π sweep, DeeBERT and PABEE; then, across seeds, the ≤1% saved layers with their 95%
t-interval and ConsistentEE's paired difference to the better baseline: yes / no / inconclusive. Writes
`<output-dir>/policy_estimators_<task>.png` (rows: estimators, columns: seeds; dev curves) and
`<output-dir>/policy_estimators.json`.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/policy_estimators.py --rows 2000 --seeds 42,43,44 \
        --tasks sst2,mrpc [--alphas 0,0.4,0.9] [--dtype bf16] [--output-dir runs/policy_estimators]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cee_bench.classification.consistentee import MEMORIZED_RULES, ConsistentEE
from cee_bench.classification.estimators import ESTIMATORS
from cee_bench.classification.policy_diagnostics import layers_with
from cee_bench.options import RunOptions, parse_grid, parse_seeds
from cee_bench.precision import DEFAULT_DTYPE, DTYPES
from cee_bench.results import result_path
from cee_bench.runner import run

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
METHODS = ("full", "consistentee", "consistentee-pi")  # per estimator (full: the reference of its operating points)
BASELINES = ("pabee", "deebert")  # once
CURVES = {"consistentee": "ConsistentEE (α curve)", "consistentee-pi": "ConsistentEE (π sweep)",
          "deebert": "DeeBERT", "pabee": "PABEE"}
SEQ_LENGTH = {"sst2": 64}  # every other task: the preset's


@contextlib.contextmanager
def policy_settings(**changes: Any) -> Iterator[None]:
    """Every preset's ConsistentEE policy stage with `changes` (e.g. its estimator) while the block runs: the runs
    inside are the runs of a preset that had made those choices (its records and training keys say so)."""
    saved = ConsistentEE.stages
    ConsistentEE.stages = {preset: {**stages, "policy": replace(stages["policy"], **changes)}
                           for preset, stages in saved.items()}
    try:
        yield
    finally:
        ConsistentEE.stages = saved


def options(args: argparse.Namespace, task: str, folder: Path, methods: tuple[str, ...]) -> RunOptions:
    grids = {name: list(args.alphas) for name in ("consistentee", "consistentee-pi")} if args.alphas else {}
    return RunOptions(task=task, methods=",".join(methods), data_dir=args.data_dir, output_dir=folder, preset="cpu",
                      seeds=list(args.seeds), max_train_samples=args.rows, max_eval_samples=args.max_eval_samples,
                      max_seq_length=args.max_seq_length or SEQ_LENGTH.get(task),
                      latency_examples=args.latency_examples, grids=grids, dtype=args.dtype, quiet=args.quiet)


def shared_store(out: Path, folder: Path) -> None:
    """`folder/models` → `out/models`: the estimators' runs share one model store."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "models"
    if not link.exists():
        link.symlink_to(os.path.relpath(out / "models", folder), target_is_directory=True)


def load(folder: Path, task: str, method: str, seed: int) -> dict[str, Any]:
    return json.loads(result_path(folder, task, method, seed).read_text())


def distinct(curve: list[dict[str, Any]]) -> int:
    """Distinct operating points of a curve: distinct saved layers to 0.1 point."""
    return len({round(1000 * p["saved_layers"]) for p in curve})


def le1(record: dict[str, Any]) -> dict[str, Any]:
    point = record["operating_points"]["le1_loss"]
    return {"saved_layers": point["saved_layers"] if point["met_on_selection"] else None,
            "score": point["score"], "threshold": point["threshold"], "met_on_selection": point["met_on_selection"]}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean over seeds (no width with one seed)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def seed_figures(folder: Path, baselines: Path, task: str, seed: int) -> dict[str, Any]:
    """What one estimator's run of one task and seed shows (module docstring); the baselines' records are in
    `baselines`."""
    cee = load(folder, task, "consistentee", seed)
    meta = cee["method_meta"]
    alphas = {}
    for alpha, rounds in meta["log"]["rounds"].items():
        last = rounds[-1]
        alphas[alpha] = {"rounds": len(rounds), "exit_histogram": last["exit_histogram"],
                         "layers_5pct": layers_with(last["exit_histogram"]),
                         "pi_mid_share_reached": last["pi_mid_share_reached"], "score": last["score"],
                         "collapsed": last["collapsed"], "converged": last["converged"]}
    curves = {}
    for method in CURVES:
        record = load(baselines if method in BASELINES else folder, task, method, seed)
        dev = [p["saved_layers"] for p in record["curve"]]
        curves[method] = {"distinct_heldout": distinct(record["selection_curve"]),
                          "span_dev": max(dev) - min(dev), "le1": le1(record),
                          "curve": [(p["saved_layers"], p["score"], p["threshold"]) for p in record["curve"]]}
    full = load(folder, task, "full", seed)
    return {"estimator": meta["estimator"], "alpha_grid": meta["alpha_grid"]["values"], "alphas": alphas,
            "curves": curves, "full_dev": full["curve"][0]["score"], "metric": cee["metric"]}


def fmt(values: list[float | None], scale: float = 100, digits: int = 0) -> str:
    return " ".join("–" if v is None else f"{scale * v:.{digits}f}" for v in values)


def report(summary: dict[str, Any]) -> None:
    for estimator, tasks in summary.items():
        for task, seeds in tasks.items():
            for seed, fig in seeds.items():
                print(f"\n[{estimator}] {task} seed {seed} (α_depth grid {fig['alpha_grid']}; full model dev "
                      f"{fig['metric']} {fig['full_dev']:.4f})")
                for alpha, a in fig["alphas"].items():
                    flags = "collapsed" if a["collapsed"] else "converged" if a["converged"] else "not converged"
                    print(f"  α_depth {alpha:>6}: held-out exits % [{fmt(a['exit_histogram'])}], layers ≥5%: "
                          f"{a['layers_5pct']}, π undecided (reached) [{fmt(a['pi_mid_share_reached'], 1, 2)}], "
                          f"score {a['score']:.4f}, {a['rounds']} round(s), {flags}")
                for method, c in fig["curves"].items():
                    point = c["le1"]
                    saving = "not reached" if point["saved_layers"] is None else f"{100 * point['saved_layers']:.1f}%"
                    print(f"  {CURVES[method]:<24} distinct points (held-out) {c['distinct_heldout']:>3}, span of "
                          f"saved layers (dev) {100 * c['span_dev']:5.1f}, ≤1% loss: saved {saving} at "
                          f"{point['threshold']} (dev score {point['score']:.4f})")
    print("\n≤1% loss saved layers on dev across seeds (mean, 95% t-interval; a seed that missed the target counts 0):")
    for estimator, tasks in summary.items():
        for task, seeds in tasks.items():
            saved = {m: [s["curves"][m]["le1"]["saved_layers"] or 0.0 for s in seeds.values()] for m in CURVES}
            line = ", ".join(f"{CURVES[m]} {100 * t_interval(v)[0]:.1f} [{100 * t_interval(v)[1]:.1f}, "
                             f"{100 * t_interval(v)[2]:.1f}]" for m, v in saved.items())
            print(f"[{estimator}] {task}: {line}")
            best = max(("deebert", "pabee"), key=lambda m: np.mean(saved[m]))
            for method in ("consistentee", "consistentee-pi"):
                diff = [a - b for a, b in zip(saved[method], saved[best])]
                mean, low, high = t_interval(diff)
                verdict = ("inconclusive" if math.isnan(low) or low <= 0 <= high else "yes" if low > 0 else "no")
                print(f"  {CURVES[method]} − {CURVES[best]} (the better baseline here): {100 * mean:+.1f} "
                      f"[{100 * low:.1f}, {100 * high:.1f}] points: beats it? {verdict}")


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"consistentee": ("o-", "tab:red"), "deebert": ("s-", "tab:blue"), "pabee": ("^-", "tab:green")}
    written = []
    tasks = sorted({task for tasks in summary.values() for task in tasks})
    for task in tasks:
        estimators = [e for e in summary if task in summary[e]]
        seeds = sorted({seed for e in estimators for seed in summary[e][task]})
        fig, axes = plt.subplots(len(estimators), len(seeds), figsize=(4.5 * len(seeds), 3.6 * len(estimators)),
                                 squeeze=False)
        for row, estimator in zip(axes, estimators):
            for ax, seed in zip(row, seeds):
                figure = summary[estimator][task][seed]
                for method, curve in figure["curves"].items():
                    points = sorted(curve["curve"])
                    if method == "consistentee-pi":
                        ax.scatter([100 * x for x, _, _ in points], [100 * y for _, y, _ in points], s=9,
                                   color="tab:orange", alpha=0.6, zorder=2, label=CURVES[method])
                        continue
                    style, colour = styles[method]
                    ax.plot([100 * x for x, _, _ in points], [100 * y for _, y, _ in points], style, ms=4,
                            color=colour, zorder=3 if method == "consistentee" else 1, label=CURVES[method])
                ax.axhline(100 * figure["full_dev"], color="black", lw=1, label="full model")
                ax.axhline(99 * figure["full_dev"], color="black", lw=0.8, ls=":", label="99% of full")
                ax.set(title=f"{estimator}, seed {seed}", xlabel="saved layers (%, dev)",
                       ylabel=f"{figure['metric']} (%, dev)")
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{task}: ConsistentEE's α curve and π sweep\nbeside DeeBERT and PABEE (simulated, dev)",
                     fontsize=10)
        written.append(out / f"policy_estimators_{task}.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="training rows (--max-train-samples)")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("42,43,44"))
    parser.add_argument("--tasks", default="sst2,mrpc")
    parser.add_argument("--alphas", type=parse_grid, default=None,
                        help="α_depth grid (default: the cpu preset's, chosen on held-out after step 1)")
    parser.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE, help="`cee-bench run --dtype`")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--memorized-layers", choices=MEMORIZED_RULES, default="every")
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: 64 on SST-2, else the preset's")
    parser.add_argument("--latency-examples", type=int, default=16)
    parser.add_argument("--data-dir", type=Path, default=GLUE)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "policy_estimators")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    out = args.output_dir
    summary: dict[str, Any] = {}
    baselines = None
    for estimator in args.estimators.split(","):
        folder = out / (estimator if args.memorized_layers == "every" else f"{estimator}+{args.memorized_layers}")
        shared_store(out, folder)
        with policy_settings(estimator=estimator, memorized_layers=args.memorized_layers):
            for task in args.tasks.split(","):
                run(options(args, task, folder, METHODS if baselines else METHODS + BASELINES))
                summary.setdefault(folder.name, {})[task] = {seed: seed_figures(folder, baselines or folder, task,
                                                                                seed)
                                                              for seed in args.seeds}
        baselines = baselines or folder
    report(summary)
    (out / "policy_estimators.json").write_text(json.dumps(summary, indent=1))
    for path in plot(summary, out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
