"""`cee-bench run` for classification tasks: train each method, trace, sweep, pick operating points, confirm with real
early exit, time it, and store one record per (task, method, seed).

Everything a user can get wrong is checked before the first file is written; a finished record is never recomputed
unless `force` is set, so an interrupted run resumes where it stopped.

Under several processes (`accelerate launch` / `torchrun`) every process trains; the main process alone evaluates,
times, and writes records and models, while the others wait (see `cee_bench.distributed`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cee_bench import distributed
from cee_bench.curve import choose_operating_points, evaluate_rule, per_layer_scores, sweep
from cee_bench.data import Encoded, encode, load_splits
from cee_bench.errors import UserError
from cee_bench.method import PRESETS, Method, get_method, parse_methods
from cee_bench.multiexit import POOLINGS, MultiExitModel, load_backbone
from cee_bench.progress import Progress
from cee_bench.resume import reusable
from cee_bench.results import environment, result_path, save_result
from cee_bench.runtime import measure_latency, predict
from cee_bench.store import SINGLE, save_models, variant_name
from cee_bench.tasks import Task, get_task
from cee_bench.trace import Trace, compute_trace
from cee_bench.validation import check_at_most, check_folder, check_numbers, check_output_folder
from cee_bench.training import FitContext, Stage

# Per preset: data limits and how many examples the latency measurement times.
PRESET_LIMITS: dict[str, dict[str, Any]] = {
    "smoke": {"max_train_samples": 64, "max_eval_samples": 48, "max_seq_length": 64, "latency_examples": 16},
    "cpu": {"max_train_samples": 4000, "max_eval_samples": None, "max_seq_length": 128, "latency_examples": 200},
    "paper": {"max_train_samples": None, "max_eval_samples": None, "max_seq_length": 128, "latency_examples": 1000},
}
EVAL_BATCH_SIZE = 32
DEFAULT_POOLING = "mean"


@dataclass
class RunOptions:
    task: str
    methods: str = "all"
    model: str | None = None
    data_dir: Path | None = None
    output_dir: Path = Path("results")
    preset: str = "cpu"
    seed: int = 42
    device: str = "auto"
    force: bool = False
    quiet: bool = False
    pooling: str = DEFAULT_POOLING
    trust_remote_code: bool = False
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_seq_length: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    latency_examples: int | None = None
    grid: list[float] | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}")
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling '{self.pooling}'; choose one of {', '.join(POOLINGS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"unknown device '{self.device}'; choose auto, cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no CUDA device is available")
        check_numbers({name: getattr(self, name) for name in ("epochs", "batch_size", "lr", "max_seq_length",
                                                             "max_train_samples", "max_eval_samples",
                                                             "latency_examples", "seed")})
        if self.data_dir is not None:
            check_folder(self.data_dir, "data folder", must_exist=True)
        check_output_folder(self.output_dir, self.task.lower())  # the records' folder, as `get_task` names it
        self.limits = {k: getattr(self, k) if getattr(self, k) is not None else v
                       for k, v in PRESET_LIMITS[self.preset].items()}

    @property
    def resolved_device(self) -> str:
        return "cuda" if self.device == "auto" and torch.cuda.is_available() else ("cpu" if self.device == "auto" else self.device)


def run(opts: RunOptions) -> list[Path]:
    """Run every method of `opts` on its task; returns the paths of the records written or reused."""
    opts.validate()
    task = get_task(opts.task)
    names = parse_methods(opts.methods)
    methods = [get_method(n) for n in names]
    stages = {m.name: resolve_stages(m, opts) for m in methods}
    if opts.grid is not None:
        if len(methods) != 1:
            raise UserError("--grid replaces one method's threshold grid: give exactly one method with it")
        for value in opts.grid:
            methods[0].rule(None, value)
        stages[methods[0].name] = methods[0].with_grid(stages[methods[0].name], opts.grid)
    for method in methods:
        for name, stage in stages[method.name].items():
            distributed.per_process_batch(stage.batch_size, f"{method.name} stage '{name}'")
    distributed.start(opts.resolved_device)
    progress = Progress(quiet=opts.quiet)
    splits = load_splits(task, opts.data_dir, max_train=opts.limits["max_train_samples"],
                         max_eval=opts.limits["max_eval_samples"], seed=opts.seed)
    encoder, tokenizer, backbone = load_checked_backbone(opts)
    length = opts.limits["max_seq_length"]
    paths = {m.name: result_path(opts.output_dir, task.name, m.name, opts.seed) for m in methods}
    reused = {m.name: reusable(paths[m.name], resume_identity(opts, backbone, stages[m.name], splits.source,
                                                              opts.grid), force=opts.force)
              for m in methods}  # every mismatch is found before the first method trains
    data = {name: encode(tokenizer, examples, length)
            for name, examples in (("train", splits.train), ("heldout", splits.heldout), ("dev", splits.dev))}
    for method in methods:
        if distributed.from_main(reused[method.name]):
            progress.log(f"[dim]{task.name}/{method.name}: kept {paths[method.name]} (same configuration; "
                         "--force recomputes it)[/dim]")
            continue
        progress.log(f"[bold]{task.name}[/bold] · {method.name}")
        record = run_method(method, task, encoder, backbone, data, stages[method.name], opts, progress)
        if record is not None:  # None on the processes other than the main one
            record["data"] = {"source": splits.source, "train": len(splits.train), "heldout": len(splits.heldout),
                              "dev": len(splits.dev)}
            save_result(opts.output_dir, record)
            progress.log(f"  wrote {paths[method.name]}")
        distributed.barrier()
    return list(paths.values())


def load_checked_backbone(opts: RunOptions) -> tuple[torch.nn.Module, Any, str]:
    """(encoder, tokenizer, backbone name), refusing a `--max-seq-length` the model cannot embed: longer inputs
    would only work while every row happens to be short."""
    encoder, tokenizer, backbone = load_backbone(opts.model, trust_remote_code=opts.trust_remote_code)
    check_at_most("max_seq_length", opts.limits["max_seq_length"], max_positions(encoder, tokenizer),
                  f"the position limit of model '{backbone}'")
    return encoder, tokenizer, backbone


def max_positions(encoder: torch.nn.Module, tokenizer: Any) -> int:
    """The longest input the model can embed: its position table, or the tokenizer's limit when that is smaller
    (RoBERTa-style tables carry two padding slots that no token may use)."""
    limits = [getattr(encoder.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return min(int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000)


def run_config(opts: RunOptions, backbone: str, stages: dict[str, Stage]) -> dict[str, Any]:
    """A record's `config`: everything of the request that shapes its numbers. Built once, for the record and for
    the resume check, so the two cannot drift apart."""
    return {"preset": opts.preset, "pooling": opts.pooling, "device": opts.resolved_device,
            "model": opts.model or backbone, **opts.limits, "eval_batch_size": EVAL_BATCH_SIZE,
            "stages": {name: asdict(stage) for name, stage in stages.items()}}


def resume_identity(opts: RunOptions, backbone: str, stages: dict[str, Stage], source: str,
                    grid: list[float] | None) -> dict[str, Any]:
    """What a stored record must match to be reused: its config, data source, seed and (when given) grid."""
    wanted: dict[str, Any] = {"config": run_config(opts, backbone, stages), "data.source": source, "seed": opts.seed,
                              "backbone": backbone}
    if grid is not None:
        wanted["method_meta.grid"] = grid
    else:
        wanted["method_meta.grid_source"] = "method"
    return wanted


def parse_grid(spec: str) -> list[float]:
    """`--grid 0.1,0.2,0.5` as numbers (whole numbers stay integers, for patience-style grids)."""
    values = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            number = float(part)
        except ValueError:
            raise UserError(f"--grid: '{part}' is not a number") from None
        if not math.isfinite(number):
            raise UserError(f"--grid: '{part}' is not a finite number")
        values.append(int(number) if number.is_integer() and "." not in part else number)
    if not values:
        raise UserError("--grid is empty")
    return values


def resolve_stages(method: Method, opts: RunOptions) -> dict[str, Stage]:
    """The method's stages for the preset, with the command-line overrides applied to every stage."""
    return {name: stage.override(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr)
            for name, stage in method.stages[opts.preset].items()}


def build_model(method: Method, encoder: torch.nn.Module, task: Task, pooling: str, seed: int) -> MultiExitModel:
    """A fresh copy of the pretrained encoder with `method`'s heads and extras, initialised from `seed`."""
    torch.manual_seed(seed)
    backbone = copy.deepcopy(encoder)
    dropout = getattr(backbone.config, "hidden_dropout_prob", 0.1)
    model = MultiExitModel(backbone, task.num_labels, pooling=pooling, pooler=method.pooler, dropout=dropout,
                           signal_fn=method.signal_fn)
    extras = method.build_extras(model)
    if extras is not None:
        model.extras = extras
    return model


def run_method(method: Method, task: Task, encoder: torch.nn.Module, backbone: str, data: dict[str, Encoded],
               stages: dict[str, Stage], opts: RunOptions, progress: Progress) -> dict[str, Any] | None:
    """Train `method` (every process), then on the main process only evaluate, time and store its models;
    returns the record there and None elsewhere."""
    model = build_model(method, encoder, task, opts.pooling, opts.seed)
    started = time.perf_counter()
    ctx = FitContext(model, data["train"], data["heldout"], stages, seed=opts.seed, device=opts.resolved_device,
                     progress=progress, eval_batch_size=EVAL_BATCH_SIZE)
    variants = method.fit(ctx) or {}
    train_seconds = time.perf_counter() - started
    if not distributed.is_main():
        return None
    stored = {variant_name(method.threshold_name, v): m for v, m in variants.items()} if variants else {SINGLE: model}
    model_store = save_models(opts.output_dir, task=task.name, method=method.name, seed=opts.seed,
                              pooling=opts.pooling, backbone=encoder, models=stored)
    grid = list(variants) if variants else list(opts.grid if opts.grid is not None else method.grid(model.num_layers))
    trace_cache: dict[tuple[int, str], Trace] = {}

    def model_for(value: Any) -> MultiExitModel:
        return variants.get(value, model) if variants else model

    def trace_of(value: Any, split: str) -> Trace:
        m = model_for(value)
        if (id(m), split) not in trace_cache:
            m.eval()
            trace_cache[id(m), split] = compute_trace(m, data[split], split=split, batch_size=EVAL_BATCH_SIZE,
                                                      progress=progress)
        return trace_cache[id(m), split]

    curves = {split: sweep(grid, lambda v, s=split: (trace_of(v, s), method.rule(model_for(v), v)), task)
              for split in ("heldout", "dev")}
    reference = _reference(opts, task, method, trace_of(grid[-1], "heldout"), trace_of(grid[-1], "dev"))
    chosen = choose_operating_points(curves["heldout"], reference["heldout"])
    operating_points, per_example = {}, {}
    for name, choice in chosen.items():
        value = grid[choice["grid_index"]]
        chosen_model, rule, dev_trace = model_for(value), method.rule(model_for(value), value), trace_of(value, "dev")
        point, sim_exits = evaluate_rule(dev_trace, rule, task)
        real_preds, real_exits = predict(chosen_model, rule, data["dev"], EVAL_BATCH_SIZE)
        sim_preds = dev_trace.signals["logits"][np.arange(len(sim_exits)), sim_exits - 1].argmax(-1).numpy()
        agreement = float(np.mean((real_exits.numpy() + 1 == sim_exits) & (real_preds.numpy() == sim_preds)))
        latency = {f"b{bs}": measure_latency(chosen_model, rule, data["dev"], batch_size=bs,
                                             max_examples=opts.limits["latency_examples"], progress=progress)
                   for bs in (1, EVAL_BATCH_SIZE)}
        operating_points[name] = {**choice, **point, "split": "dev", "selected_on": "heldout",
                                  "real_vs_simulated_agreement": agreement, "latency": latency}
        per_example[name] = {"exit_layers": sim_exits.tolist(), "real_exit_layers": (real_exits.numpy() + 1).tolist(),
                             "predictions": sim_preds.tolist()}
        progress.log(f"  {name}: {method.threshold_name}={choice['threshold']} dev {task.main_metric} "
                     f"{point['score']:.4f}, saved layers {point['saved_layers']:.1%}, "
                     f"wall speed-up b1 {latency['b1']['speedup_wall']:.2f}x")
    return {
        "task": task.name, "method": method.name, "method_display": method.display.format(backbone=backbone),
        "backbone": backbone, "seed": opts.seed, "kind": "classification", "num_layers": model.num_layers,
        "metric": task.main_metric, "metrics": list(task.metrics),
        "config": run_config(opts, backbone, stages),
        "method_meta": {**method.metadata(), "grid": grid, "grid_source": "command line" if opts.grid else "method",
                        "log": ctx.log},
        "environment": environment(), "train_seconds": train_seconds, "model_store": model_store,
        "reference": reference,
        "per_layer_scores": {split: per_layer_scores(trace_of(grid[-1], split), task) for split in ("heldout", "dev")},
        "curve": curves["dev"], "selection_curve": curves["heldout"], "curve_kind": "simulated",
        "eval_split": "dev", "select_split": "heldout",
        "operating_points": operating_points, "per_example": per_example,
    }


def _reference(opts: RunOptions, task: Task, method: Method, heldout: Trace, dev: Trace) -> dict[str, Any]:
    """The score the operating points must keep: the full-model row's when one exists for the same data, model and
    pooling (else the comparison would mix set-ups), otherwise this model's own top layer."""
    full = result_path(opts.output_dir, task.name, "full", opts.seed)
    if method.name != "full" and full.exists():
        record = json.loads(full.read_text())
        mine = {"pooling": opts.pooling, "model": opts.model or record["backbone"], **opts.limits}
        if all(record["config"].get(key) == value for key, value in mine.items() if key != "latency_examples"):
            return {"source": "full-model record", "heldout": record["selection_curve"][0]["score"],
                    "dev": record["curve"][0]["score"]}
    return {"source": "own top layer", "heldout": per_layer_scores(heldout, task)[-1],
            "dev": per_layer_scores(dev, task)[-1]}
