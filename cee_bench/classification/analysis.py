"""The ConsistentEE paper's analyses as commands (`cee-bench analyze hardness|layers|reward`): each prints a table and
writes a PNG (plus the numbers as JSON) into `<output-dir>/<task>/analysis/`, beside the run records (a subfolder, so
the results store's `<task>/*.json` records stay the only JSON files it reads).

- `hardness` (Table 1): Spearman ρ between the memorized layer and the per-instance loss, and between the memorized
  layer and the number of forgetting events counted across the epochs of step 1 (the weighted-CE initialisation).
- `layers` (Figure 2): per-layer training loss and accuracy under the weighted-CE objective (every instance at every
  layer) and under the ConsistentEE objective (each instance only at its exit layer; blank where none exits).
- `reward` (Figure 4): score and layer speed-up of the vanilla and the hardness-guided reward over the α grid, read
  from the `consistentee` and `consistentee-vanilla` records of `cee-bench run`.
- `policy` (not in the paper; issue 20): what ConsistentEE's policy did, α by α and round by round — held-out exit
  histogram, π per deciding layer, per-layer training CE, the histogram of the memorized layer — read from a record.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from cee_bench.errors import UserError

if TYPE_CHECKING:  # torch is imported inside the commands, so `cee-bench --help` stays instant
    import torch

analyze_app = typer.Typer(add_completion=False,
                          help="The paper's analyses: Table 1 (hardness), Figure 2 (layers), Figure 4 (reward); and "
                               "ConsistentEE's policy over its training rounds (policy).")
console = Console()  # the analyses' tables: data, on stdout
messages = Console(stderr=True)  # "wrote ..." lines
PAPER_TABLE1 = {"rte": (0.76, 0.59), "mrpc": (0.84, 0.43), "sst2": (0.66, 0.32)}

TASK = typer.Option(..., help="Task: rte, mrpc, sst2, ...")
OUTPUT_DIR = typer.Option(Path("results"), help="Results folder; figures go to <output-dir>/<task>/analysis/.")
DATA_DIR = typer.Option(None, envvar="CEE_BENCH_DATA_DIR", help="GLUE-layout folder; default: the hub.")
MODEL = typer.Option(None, help="Hub id or local path; default: the packaged all-MiniLM-L6-v2.")
PRESET = typer.Option("cpu", help="smoke, cpu or paper: ConsistentEE's stages and data limits.")
EPOCHS = typer.Option(None, help="Override the epochs of every stage (more step-1 epochs = finer forgetting counts).")
MAX_TRAIN = typer.Option(None, help="Train on at most this many examples.")
MAX_LEN = typer.Option(None, help="Truncate inputs to this many word pieces.")
POOLING = typer.Option("mean", help="Exit-head input: 'cls' or 'mean'.")
SEED = typer.Option(42, help="Random seed.")
QUIET = typer.Option(False, "--quiet", help="No progress output.")


def _inputs(task_name: str, output_dir: Path, data_dir: Path | None, model: str | None, preset: str,
            epochs: float | None, max_train: int | None, max_len: int | None, pooling: str, seed: int, quiet: bool):
    """(options, task, encoder, encoded train/held-out data, ConsistentEE's stages, progress): what `cee-bench run`
    would train ConsistentEE on with the same flags."""
    from cee_bench.classification.consistentee import METHOD
    from cee_bench.classification.recipe import ClassificationRecipe
    from cee_bench.options import RunOptions
    from cee_bench.progress import Progress

    opts = RunOptions(task=task_name, methods=METHOD.name, model=model, data_dir=data_dir, preset=preset, seed=seed,
                      pooling=pooling, epochs=epochs, max_train_samples=max_train, max_seq_length=max_len,
                      quiet=quiet, output_dir=output_dir)
    opts.validate()
    ClassificationRecipe.check(opts)
    analysis_dir(output_dir, opts.task.lower())
    recipe = ClassificationRecipe(opts, Progress(quiet=quiet), [METHOD])
    return opts, recipe.task, recipe.encoder, recipe.data, recipe.stages[METHOD.name], recipe.progress


def build_context(*args: Any):
    """(FitContext around a fresh ConsistentEE model, task): the same data, heads and stages `cee-bench run` uses."""
    from cee_bench.classification.consistentee import METHOD
    from cee_bench.classification.fit import FitContext
    from cee_bench.classification.method import build_model
    from cee_bench.classification.recipe import EVAL_BATCH_SIZE

    opts, task, encoder, data, stages, progress = _inputs(*args)
    net = build_model(METHOD, encoder, task, opts.pooling, opts.seed)
    ctx = FitContext(net, data["train"], data["heldout"], stages, seed=opts.seed, device=opts.resolved_device,
                     progress=progress, eval_batch_size=EVAL_BATCH_SIZE)
    return ctx, task


def _train_trace(model, data, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Per-layer logits and exit probabilities of the training set, eval mode."""
    from cee_bench.classification.trace import compute_trace

    return compute_trace(model, data, split="train", batch_size=batch_size).signals


def forgetting_events(correct_by_epoch: torch.Tensor) -> torch.Tensor:
    """Toneva et al.: times an instance goes from correct (epoch t−1) to wrong (epoch t). [E, N] bool → [N]."""
    return (correct_by_epoch[:-1] & ~correct_by_epoch[1:]).sum(0)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman ρ; NaN when either side is constant (e.g. no forgetting event at all)."""
    from scipy.stats import spearmanr

    if a.unique().numel() < 2 or b.unique().numel() < 2:
        return float("nan")
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def analysis_dir(output_dir: Path, task: str) -> Path:
    """`<output-dir>/<task>/analysis`, checked before any work so a file in its way fails at once, not after
    training."""
    from cee_bench.validation import check_output_folder

    return check_output_folder(output_dir, task, "analysis") / task / "analysis"


def _write(out_dir: Path, name: str, numbers: dict[str, Any], fig) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, data = out_dir / f"analysis_{name}.png", out_dir / f"analysis_{name}.json"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    data.write_text(json.dumps(numbers, indent=1))
    return [png, data]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@analyze_app.command()
def hardness(task: str = TASK, output_dir: Path = OUTPUT_DIR, data_dir: Optional[Path] = DATA_DIR,
             model: Optional[str] = MODEL, preset: str = PRESET, epochs: Optional[float] = EPOCHS,
             max_train_samples: Optional[int] = MAX_TRAIN, max_seq_length: Optional[int] = MAX_LEN,
             pooling: str = POOLING, seed: int = SEED,
             quiet: bool = QUIET) -> None:
    """Table 1: Spearman ρ of the memorized layer with the loss and with forgetting events (training set)."""
    import torch

    from cee_bench.classification.consistentee import memorized_layer, train_init
    from cee_bench.classification.fit import per_layer_ce

    ctx, task_ = build_context(task, output_dir, data_dir, model, preset, epochs, max_train_samples, max_seq_length,
                               pooling, seed, quiet)
    labels = ctx.train.labels
    correct_by_epoch: list[torch.Tensor] = []

    def record(epoch: int) -> None:
        correct_by_epoch.append(_train_trace(ctx.model, ctx.train)["logits"][:, -1].argmax(-1) == labels)
        ctx.model.train()  # the stage goes on training after this callback

    train_init(ctx, on_epoch_end=record)  # the per-epoch hook needs a training here, not a stored model
    logits = _train_trace(ctx.model, ctx.train)["logits"]
    memorized = memorized_layer(logits.argmax(-1), labels)
    loss = per_layer_ce(logits, labels)[:, -1]
    forgets = forgetting_events(torch.stack(correct_by_epoch))
    rho_loss, rho_forget = spearman(memorized, loss), spearman(memorized, forgets)
    paper = PAPER_TABLE1.get(task_.name)
    table = Table(title=f"Table 1 ({task_.name}, {len(labels)} training instances, {len(correct_by_epoch)} epochs)")
    for column in ("Spearman ρ", "loss", "forgetting events"):
        table.add_column(column)
    table.add_row("ours", f"{rho_loss:.2f}", f"{rho_forget:.2f}")
    if paper:
        table.add_row("paper (BERT-base)", f"{paper[0]:.2f}", f"{paper[1]:.2f}")
    console.print(table)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    layers = list(range(1, logits.shape[1] + 1))
    for ax, values, name in ((axes[0], loss, "top-layer loss"), (axes[1], forgets.float(), "forgetting events")):
        ax.boxplot([values[memorized == m].numpy() for m in layers], positions=layers)
        ax.set_xlabel("memorized layer")
        ax.set_ylabel(name)
    axes[0].set_title(f"ρ = {rho_loss:.2f}")
    axes[1].set_title(f"ρ = {rho_forget:.2f}")
    numbers = {"task": task_.name, "rho_loss": rho_loss, "rho_forgetting": rho_forget, "paper": paper,
               "instances": len(labels), "epochs": len(correct_by_epoch),
               "memorized_histogram": torch.bincount(memorized, minlength=len(layers) + 1)[1:].tolist(),
               "forgetting_histogram": torch.bincount(forgets).tolist()}
    for path in _write(analysis_dir(output_dir, task_.name), "hardness", numbers, fig):
        messages.print(f"wrote {path}")


def per_layer_figures(logits: torch.Tensor, labels: torch.Tensor, exits: torch.Tensor | None
                      ) -> tuple[list[float], list[float]]:
    """Mean CE and accuracy per layer: over every instance (`exits` None, the weighted-CE view) or only over the
    instances whose 0-based exit layer it is (the ConsistentEE view; NaN where none exits)."""
    import torch

    from cee_bench.classification.fit import per_layer_ce

    ce, correct = per_layer_ce(logits, labels), (logits.argmax(-1) == labels.unsqueeze(1)).float()
    losses, accuracies = [], []
    for layer in range(logits.shape[1]):
        rows = torch.ones(len(labels), dtype=torch.bool) if exits is None else exits == layer
        losses.append(float(ce[rows, layer].mean()) if rows.any() else math.nan)
        accuracies.append(float(correct[rows, layer].mean()) if rows.any() else math.nan)
    return losses, accuracies


@analyze_app.command()
def layers(task: str = TASK, output_dir: Path = OUTPUT_DIR, data_dir: Optional[Path] = DATA_DIR,
           model: Optional[str] = MODEL, preset: str = PRESET, epochs: Optional[float] = EPOCHS,
           max_train_samples: Optional[int] = MAX_TRAIN, max_seq_length: Optional[int] = MAX_LEN,
           pooling: str = POOLING, seed: int = SEED,
           alpha: Optional[float] = typer.Option(None, help="α of the ConsistentEE model; default: the middle of "
                                                            "the preset's grid (required where the preset chooses "
                                                            "its grid on held-out)."),
           quiet: bool = QUIET) -> None:
    """Figure 2: per-layer training loss and accuracy, weighted-CE objective vs ConsistentEE objective. The models
    are `cee-bench run`'s (the step-1 model and the α model, from the model store of `--output-dir` when there,
    trained and stored otherwise)."""
    from cee_bench.classification.consistentee import METHOD, check_alpha
    from cee_bench.classification.policy_diagnostics import exit_layers
    from cee_bench.classification.recipe import EVAL_BATCH_SIZE
    from cee_bench.classification.sharing import MethodTrainer
    from cee_bench.classification.store import load_model
    from cee_bench.store import store_root

    if alpha is not None:
        check_alpha(alpha)
    opts, task_, encoder, data, stages, progress = _inputs(task, output_dir, data_dir, model, preset, epochs,
                                                           max_train_samples, max_seq_length, pooling, seed, quiet)
    grid = stages["policy"].alphas
    if alpha is None and isinstance(grid, str):
        raise UserError(f"the '{preset}' preset chooses its alpha grid on held-out after step 1: give --alpha")
    alpha = grid[len(grid) // 2] if alpha is None else alpha
    labels = data["train"].labels
    trained = MethodTrainer(METHOD, task_, encoder, data, METHOD.with_grid(stages, [alpha]), opts, progress,
                            EVAL_BATCH_SIZE).run()
    step1 = load_model(store_root(output_dir, task_.name) / trained.stage_keys["init"])
    weighted = per_layer_figures(_train_trace(step1, data["train"])["logits"], labels, None)
    rounds = trained.log["rounds"][f"{float(alpha):g}"]
    signals = _train_trace(next(iter(trained.variants.values())), data["train"])
    consistent = per_layer_figures(signals["logits"], labels, exit_layers(signals))
    num_layers = signals["logits"].shape[1]
    table = Table(title=f"Figure 2 ({task_.name}, training set; ConsistentEE α={alpha:g}, {len(rounds)} round(s))")
    for column in ("layer", "loss weighted-CE", "loss ConsistentEE", "acc weighted-CE", "acc ConsistentEE"):
        table.add_column(column)
    fmt = lambda x: "–" if math.isnan(x) else f"{x:.3f}"  # noqa: E731
    for i in range(num_layers):
        table.add_row(str(i + 1), fmt(weighted[0][i]), fmt(consistent[0][i]), fmt(weighted[1][i]),
                      fmt(consistent[1][i]))
    console.print(table)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    xs = list(range(1, num_layers + 1))
    for ax, index, name in ((axes[0], 0, "training loss"), (axes[1], 1, "training accuracy")):
        ax.plot(xs, weighted[index], "o-", label="weighted CE (Eq. 1)")
        ax.plot(xs, consistent[index], "s-", label="ConsistentEE (at exit layer)")
        ax.set_xlabel("layer")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    numbers = {"task": task_.name, "alpha": alpha, "weighted_ce": {"loss": weighted[0], "accuracy": weighted[1]},
               "consistentee": {"loss": consistent[0], "accuracy": consistent[1]}, "rounds": rounds}
    for path in _write(analysis_dir(output_dir, task_.name), "layers", numbers, fig):
        messages.print(f"wrote {path}")


def reward_curves(records: list[dict[str, Any]], task: str) -> dict[str, list[dict[str, Any]]]:
    """method → its α curve (dev, simulated per trained model) from the run records of `task`."""
    curves = {r["method"]: sorted(r["curve"], key=lambda p: p["threshold"]) for r in records
              if r.get("task") == task and r.get("method") in ("consistentee", "consistentee-vanilla")}
    missing = [m for m in ("consistentee", "consistentee-vanilla") if m not in curves]
    if missing:
        raise UserError(f"no {' or '.join(missing)} record for task {task}; run `cee-bench run --task {task} "
                        f"--methods consistentee,consistentee-vanilla` first")
    return curves


@analyze_app.command()
def reward(task: str = TASK, output_dir: Path = OUTPUT_DIR) -> None:
    """Figure 4: score and speed-up of the vanilla vs hardness-guided reward over the α grid (from run records)."""
    from cee_bench.results import load_results
    from cee_bench.tasks import get_task

    task = get_task(task).name
    out_dir = analysis_dir(output_dir, task)
    curves = reward_curves(load_results(output_dir), task)
    table = Table(title=f"Figure 4 ({task}, dev; one trained model per α)")
    for column in ("reward", "α", "score", "saved layers", "layer speed-up"):
        table.add_column(column)
    names = {"consistentee": "hardness-guided (Eq. 4)", "consistentee-vanilla": "vanilla (Eq. 3)"}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, curve in curves.items():
        for p in curve:
            table.add_row(names[method], f"{p['threshold']:g}", f"{p['score']:.4f}", f"{p['saved_layers']:.1%}",
                          f"{p['layer_speedup']:.2f}x")
        pts = sorted((p["layer_speedup"], p["score"]) for p in curve)
        ax.plot([x for x, _ in pts], [100 * y for _, y in pts], "o-", label=names[method])
    console.print(table)
    ax.set_xlabel("layer speed-up L/E[l]")
    ax.set_ylabel("score (%)")
    ax.set_title(f"{task}: reward ablation over α")
    ax.legend(fontsize=8)
    for path in _write(out_dir, "reward", {"task": task, "curves": curves}, fig):
        messages.print(f"wrote {path}")


POLICY_METHODS = ("consistentee", "consistentee-vanilla", "consistentee-pi")
POLICY_PANELS = ("held-out exits (share of rows)", "π per deciding layer: mean —, undecided share - -",
                 "training CE per layer (round start)", "memorized layer M (share of rows)")


def policy_rounds(record: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """α → the record's round rows, checked to carry the policy diagnostics (records before issue 20 do not)."""
    rounds = ((record.get("method_meta") or {}).get("log") or {}).get("rounds")
    if not isinstance(rounds, dict) or not rounds:
        raise UserError(f"{record.get('_path', 'the record')} has no ConsistentEE rounds")
    if any("pi_mean" not in row for rows in rounds.values() for row in rows):
        raise UserError(f"{record.get('_path', 'the record')} predates the policy diagnostics; run it again "
                        "(cee-bench run --force)")
    return dict(sorted(rounds.items(), key=lambda item: float(item[0])))


def _policy_row(ax_row, alpha: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """One α's four panels, one colour per round (light → dark)."""
    import numpy as np
    from matplotlib import colormaps

    colours = colormaps["Blues"](np.linspace(0.45, 1.0, len(rows)))
    width = 0.8 / len(rows)
    for i, (row, colour) in enumerate(zip(rows, colours)):
        label = f"round {row['round']}"
        layers = np.arange(1, len(row["exit_histogram"]) + 1)
        ax_row[0].bar(layers + (i - (len(rows) - 1) / 2) * width, row["exit_histogram"], width, color=colour,
                      label=label)
        deciding = np.arange(1, len(row["pi_mean"]) + 1)
        ax_row[1].plot(deciding, row["pi_mean"], "o-", color=colour, label=label)
        ax_row[1].plot(deciding, row["pi_mid_share"], "s--", color=colour)
        ax_row[2].plot(layers, row["train_layer_ce"], "o-", color=colour, label=label)
        ax_row[3].bar(layers + (i - (len(rows) - 1) / 2) * width, row["memorized_histogram"], width, color=colour,
                      label=label)
    flags = [name for name, table in (("converged", meta.get("converged")), ("collapsed", meta.get("collapsed")))
             if isinstance(table, dict) and table.get(alpha)]
    ax_row[0].set_ylabel(f"α_depth {alpha}" + (f"\n({', '.join(flags)})" if flags else ""))
    ax_row[1].set_ylim(-0.05, 1.05)
    for ax in ax_row:
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)


@analyze_app.command()
def policy(task: str = TASK, output_dir: Path = OUTPUT_DIR,
           method: str = typer.Option("consistentee", help="Whose rounds: " + ", ".join(POLICY_METHODS) + "."),
           seed: int = typer.Option(42, help="The record's seed.")) -> None:
    """ConsistentEE's policy over its rounds, per α: held-out exit histogram, π per deciding layer (mean and share in
    (0.1, 0.9)), per-layer training CE and the histogram of the memorized layer (from a run record)."""
    from cee_bench.classification.policy_diagnostics import layers_with
    from cee_bench.results import result_path
    from cee_bench.tasks import get_task
    from cee_bench.validation import check_numbers

    task = get_task(task).name
    if method not in POLICY_METHODS:
        raise UserError(f"unknown method '{method}' for the policy analysis; choose one of {', '.join(POLICY_METHODS)}")
    check_numbers({"seed": seed})
    out_dir = analysis_dir(output_dir, task)
    path = result_path(output_dir, task, method, seed)
    if not path.is_file():
        raise UserError(f"no {method} record for task {task}, seed {seed} ({path}); run `cee-bench run --task {task} "
                        f"--methods {method} --seed {seed}` first")
    try:
        record = {**json.loads(path.read_text()), "_path": str(path)}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read results file {path}: {exc}") from None
    rounds = policy_rounds(record)
    meta = record["method_meta"]
    estimator = meta.get("estimator", "?")
    table = Table(title=f"ConsistentEE's policy ({task}, {method}, seed {seed}, estimator {estimator}; held-out)")
    for column in ("α_depth", "round", "score", "exit histogram (%)", "layers ≥ 5%", "π undecided (reached)",
                   "M histogram (%)", "collapsed", "converged"):
        table.add_column(column)
    percent = lambda values: " ".join(f"{100 * v:.0f}" for v in values)  # noqa: E731
    for alpha, rows in rounds.items():
        for row in rows:
            table.add_row(alpha, str(row["round"]), f"{row['score']:.4f}", percent(row["exit_histogram"]),
                          str(layers_with(row["exit_histogram"])),
                          " ".join("–" if v is None else f"{v:.2f}" for v in row["pi_mid_share_reached"]),
                          percent(row["memorized_histogram"]), str(row["collapsed"]), str(row["converged"]))
    console.print(table)
    plt = _pyplot()
    fig, axes = plt.subplots(len(rounds), len(POLICY_PANELS), figsize=(4 * len(POLICY_PANELS), 2.6 * len(rounds)),
                             squeeze=False)
    for ax_row, (alpha, rows) in zip(axes, rounds.items()):
        _policy_row(ax_row, alpha, rows, meta)
    for ax, title in zip(axes[0], POLICY_PANELS):
        ax.set_title(title, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{task}: {record.get('method_display', method)}, seed {seed}, estimator {estimator}", fontsize=10)
    numbers = {"task": task, "method": method, "seed": seed, "estimator": estimator,
               "alpha_grid": meta.get("alpha_grid"), "converged": meta.get("converged"),
               "collapsed": meta.get("collapsed"),
               "rounds": {alpha: [{k: v for k, v in row.items() if k not in ("policy_loss", "refine_loss")}
                                  for row in rows] for alpha, rows in rounds.items()}}
    for written in _write(out_dir, f"policy_{method}_seed{seed}", numbers, fig):
        messages.print(f"wrote {written}")

