"""The generation recipe of `cee-bench run --task cnndm|dolly|alpaca`: decode every candidate, Learn-then-Test, curve.

The run shell (`runner.run_seed`) validates, resumes, shows progress and saves; this module gives it a
`GenerationRecipe` (the shell's `Recipe` contract, like `classification.recipe.ClassificationRecipe`). Order of work,
chosen so that a user mistake never leaves files behind: the options are checked first (`GenerationRecipe.check`),
then data and prompt lengths; then the full model (reference outputs and its decode speed, the reference of every
measured speed-up), once per run; then per method: train (backbone frozen), decode the calibration
split for every candidate and pick one with Learn-then-Test (textual consistency with the full model), decode the
evaluation split for every candidate (the curve). When no candidate passes Learn-then-Test the `ltt` point is the
full model and says so (`fallback`), as the classification `ltt90_le1` point does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from rich.markup import escape

from cee_bench.errors import UserError
from cee_bench.generation.tasks import PromptExample, PromptSplits, make_splits
from cee_bench.options import RunOptions
from cee_bench.precision import autocast
from cee_bench.presets import GenerationPreset, generation_preset
from cee_bench.progress import Progress
from cee_bench.registry import get_method, method_names, parse_methods
from cee_bench.tasks import get_task, task_names

__all__ = ["GENERATION_TASKS", "GENERATION_METHODS", "GenerationRecipe"]

GENERATION_TASKS = task_names("generation")
GENERATION_METHODS = tuple(method_names("generation"))
_TEXT_KEEP = 400  # characters of each output kept in `per_example`


def check_methods(opts: RunOptions) -> None:
    """The run's methods and their grids: a run's `--grid` (one method only, as for classification) or a config
    file's `grids`, checked by the method and kept in `opts.grids` most conservative first; a method without one takes
    the preset's (`GenerationRecipe.grids`)."""
    names = parse_methods(opts.methods, "generation")
    grids = dict(opts.grids)
    for name in grids:
        get_method(name, "generation")
    if opts.grid is not None:
        if len(names) != 1:
            raise UserError("--grid replaces one method's threshold grid: give exactly one method with it")
        grids[names[0]] = opts.grid
    opts.grids = {name: list(get_method(name, "generation").order(grids[name])) for name in names if name in grids}


def _encode(tokenizer, mlm, examples: list[PromptExample], task: str, preset: GenerationPreset, seed: int, offset: int):
    """Prompts → ids (CNN/DM articles cut to the preset's budget; anything else must fit as given)."""
    from cee_bench.generation.decoding import check_fits
    from cee_bench.generation.evaluation import Prompts
    from cee_bench.generation.training import chat_ids, truncate_text

    ids = []
    for example in examples:
        text = truncate_text(tokenizer, example.prompt, preset.max_prompt_tokens) if task == "cnndm" \
            else example.prompt
        encoded = chat_ids(tokenizer, text).to(mlm.lm.device)
        check_fits(mlm, encoded.shape[-1], preset.max_new_tokens)
        ids.append(encoded)
    return Prompts([e.id for e in examples], ids, [seed * 100_003 + offset + i for i in range(len(examples))])


def _eos_ids(tokenizer, lm) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(lm.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(i for i in ids if i is not None)


def _references(task: str, backbone: str, examples: list[PromptExample], full_texts: list[str], key: dict) -> list[str]:
    """Gold for CNN/DM; otherwise the unaccelerated model's outputs, cached under the cache folder so every later
    run and method scores against the same text."""
    if get_task(task, "generation").gold:
        return [e.gold or "" for e in examples]
    from cee_bench.generation.model import cache_root
    from cee_bench.results import write_json

    digest = hashlib.sha256(json.dumps({**key, "prompts": [e.prompt for e in examples]},
                                       sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "references" / backbone / f"{task}-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    write_json(path, full_texts)
    return full_texts


def generation_config(cfg: GenerationPreset, exit_layers: tuple[int, ...], device: str, model: str | None,
                      backbone: str) -> dict:
    """A record's `config` (less the thread count, which is the machine's, not the request's): built once, for the
    record and for the resume check."""
    return {**asdict(cfg), "exit_layers": list(exit_layers), "device": device, "model": model or backbone}


@dataclass
class _Full:
    """The full model's pass, shared by every method of the run: prompts, outputs, references, its curve point."""

    eval_prompts: Any
    calib_prompts: Any
    options: dict[str, Any]
    full_eval: list[Any]
    full_eval_texts: list[str]
    full_calib_texts: list[str]
    references: list[str]
    full_tps: float
    full_point: dict[str, Any]
    full_examples: dict[str, Any] | None = None  # the full model's per-prompt values (`curve_point`'s `examples`)


class GenerationRecipe:
    """A generation run's set-up: preset, methods and grids, data splits, the backbone; the full model's pass on
    first use. What the shell asks of a recipe (`runner.Recipe`), as `ClassificationRecipe` gives it. `opts` must have
    passed `check` (`runner.check_options` sees to it)."""

    def __init__(self, opts: RunOptions, progress: Progress) -> None:
        import torch

        from cee_bench.distributed import require_one_process
        from cee_bench.generation.model import MultiExitLM, backbone_provenance, every_layer, load_decoder
        from cee_bench.provenance import data_provenance, provenance

        require_one_process("generation")
        self.opts, self.progress, self.cfg = opts, progress, opts.generation
        self.task = get_task(opts.task, "generation")
        self.grids = {name: tuple(opts.grids[name]) if name in opts.grids  # most conservative first, as checked
                      else get_method(name, "generation").grid(self.cfg)
                      for name in parse_methods(opts.methods, "generation")}
        self.methods = list(self.grids)
        needs_train = any(get_method(m, "generation").trains for m in self.methods)
        self.splits: PromptSplits = make_splits(self.task.name, opts.data_dir, self.cfg.n_eval, self.cfg.n_calib,
                                          self.cfg.n_train if needs_train else 0,
                                          lambda line: progress.log(f"[yellow]{escape(line)}[/yellow]"))
        torch.set_flush_denormal(True)  # tiny probabilities otherwise make CPU matmuls crawl (denormal floats)
        torch.manual_seed(opts.seed)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bars (`--quiet` turns them off) are the only ones
        self.lm, self.tokenizer, self.backbone = load_decoder(opts.model, opts.resolved_device, opts.revision)
        self.provenance = provenance(data_provenance(self.splits.files),
                                     backbone_provenance(opts.model, self.lm, self.backbone, opts.revision))
        self.exit_layers = every_layer(len(self.lm.model.layers), self.cfg.exit_stride)
        self.full_view = MultiExitLM(self.lm, self.exit_layers)
        self._config = {**generation_config(self.cfg, self.exit_layers, opts.resolved_device, opts.model,
                                            self.backbone), "dtype": opts.dtype}
        self.data_summary = {"source": self.splits.source, "eval": len(self.splits.eval),
                             "calibration": len(self.splits.calib), "train": len(self.splits.train),
                             "note": "evaluation = the first examples, calibration = the next ones"}
        # encoded now, so that a prompt longer than the model's context stops the run before anything is written
        self.prompts = (_encode(self.tokenizer, self.full_view, self.splits.eval, self.task.name, self.cfg,
                                opts.seed, 0),
                        _encode(self.tokenizer, self.full_view, self.splits.calib, self.task.name, self.cfg,
                                opts.seed, len(self.splits.eval)))

    @staticmethod
    def check(opts: RunOptions) -> None:
        """Everything of a generation request that needs no data or model: the preset with the overrides
        (`opts.generation`, δ and ε included) and the methods with their grids (`opts.grids`)."""
        if opts.dtype == "fp16":
            raise UserError("--dtype fp16 is not supported for generation tasks (their adapter stages train without "
                            "loss scaling); use bf16 or fp32")
        opts.generation = generation_preset(opts.preset, max_eval_samples=opts.max_eval_samples,
                                            max_train_samples=opts.max_train_samples, delta=opts.delta,
                                            epsilon=opts.epsilon, greedy=opts.greedy)
        check_methods(opts)

    @staticmethod
    def needs(name: str, methods: list[str]) -> list[str]:
        """Nothing: a generation record reads no other record (the full model's pass is part of every run)."""
        return []

    def identity(self, name: str) -> dict[str, Any]:
        wanted = {**{f"config.{key}": value for key, value in self._config.items()},
                  "data.source": self.splits.source, "backbone": self.backbone, "seed": self.opts.seed}
        if name in self.opts.grids:
            wanted["method_meta.grid"] = list(self.grids[name])
        else:
            wanted["method_meta.grid_source"] = "method"
        return wanted

    def config(self, name: str) -> dict[str, Any]:
        import torch

        return {**self._config, "torch_threads": torch.get_num_threads()}

    def texts(self, generations) -> list[str]:
        return [self.tokenizer.decode(g.tokens, skip_special_tokens=True).strip() for g in generations]

    @cached_property
    def context(self):
        from cee_bench.generation.method import TrainingContext
        from cee_bench.generation.sharing import GenerationStore

        opts = self.opts
        store = GenerationStore(opts.output_dir, self.task.name, model=self.provenance["model"],
                                train=self.splits.train, preset=self.cfg, exit_layers=self.exit_layers,
                                seed=opts.seed, progress=self.progress) if opts.share else None
        return TrainingContext(self.lm, self.tokenizer, self.exit_layers, self.splits.train, self.cfg, opts.seed,
                               self.progress, store=store)

    @cached_property
    def full(self) -> _Full:
        from cee_bench.generation.decoding import Decoding
        from cee_bench.generation.evaluation import decode_speed, decode_split

        cfg, splits, seed = self.cfg, self.splits, self.opts.seed
        eval_prompts, calib_prompts = self.prompts
        decoding = Decoding(greedy=cfg.greedy)
        options = {"max_new_tokens": cfg.max_new_tokens, "decoding": decoding,
                   "eos_ids": _eos_ids(self.tokenizer, self.lm)}
        self.progress.log(f"{self.task.name}: full model on {len(splits.eval)} evaluation + {len(splits.calib)} "
                          "calibration prompts")
        decode_split(self.full_view, calib_prompts, None, **{**options, "max_new_tokens": 2})  # warm-up
        full_eval = decode_split(self.full_view, eval_prompts, None, **options)
        full_calib_texts = self.texts(decode_split(self.full_view, calib_prompts, None, **options))
        full_eval_texts = self.texts(full_eval)
        key = {"backbone": self.backbone, "decoding": asdict(decoding), "max_new_tokens": cfg.max_new_tokens,
               "seed": seed, "max_prompt_tokens": cfg.max_prompt_tokens}
        references = _references(self.task.name, self.backbone, splits.eval, full_eval_texts, key)
        full = _Full(eval_prompts, calib_prompts, options, full_eval, full_eval_texts, full_calib_texts, references,
                     decode_speed(full_eval), {})
        full.full_point = self._point(full, full_eval, full.full_tps, threshold=1.0, full_model=True)
        full.full_examples = full.full_point.pop("examples")
        return full

    def _point(self, full: _Full, generations, reference_tps: float, **labels) -> dict:
        from cee_bench.generation.evaluation import curve_point

        return curve_point(generations, self.texts(generations), full.references, full.full_eval_texts,
                           full_tokens_per_s=reference_tps, num_layers=self.full_view.num_layers,
                           example_ids=full.eval_prompts.ids, **labels)

    def run_method(self, name: str) -> dict[str, Any]:
        """The method's record, computed at the run's precision (the full model's reference decode too, which the first
        method computes): autocast over the decoder's passes; the adapter stages train under it through the one
        training loop, which keeps backward and optimiser steps out of autocast."""
        with autocast(self.opts.dtype, self.lm.device.type):
            return self._run_method(name)

    def _run_method(self, name: str) -> dict[str, Any]:
        """Train, decode every candidate on calibration and evaluation prompts, Learn-then-Test, the curve."""
        from cee_bench.generation.evaluation import consistency_risks, decode_speed, decode_split, decode_split_paired
        from cee_bench.ltt import learn_then_test

        method, full, cfg, ctx = get_method(name, "generation"), self.full, self.cfg, self.context
        if ctx.store is not None:
            ctx.store.method = name
        candidates, info = method.candidates(ctx, self.grids[name])
        info.update(ctx.notes)
        curve, risks, outputs, examples = [full.full_point], [], [full.full_eval], [full.full_examples]
        with self.progress.task(f"decode {name}", total=len(candidates)) as advance:
            for candidate in candidates:
                calib = decode_split(candidate.mlm, full.calib_prompts, candidate.rule, **full.options)
                risks.append(consistency_risks(self.texts(calib), full.full_calib_texts))
                if cfg.paired_timing:
                    evaluated, again = decode_split_paired(candidate.mlm, full.eval_prompts, candidate.rule,
                                                           **full.options)
                    curve.append(self._point(full, evaluated, decode_speed(again), **candidate.labels))
                else:
                    evaluated = decode_split(candidate.mlm, full.eval_prompts, candidate.rule, **full.options)
                    curve.append(self._point(full, evaluated, full.full_tps, **candidate.labels))
                outputs.append(evaluated)
                examples.append(curve[-1].pop("examples"))
                advance(escape(str(candidate.labels)))
                self.progress.log(f"  {escape(str(candidate.labels))}: ROUGE-L {curve[-1]['rouge_l']:.3f}, "
                                  f"layers/token {curve[-1]['mean_layers_per_token']:.1f}, speed-up "
                                  f"{curve[-1]['speedup_measured']:.2f}x")
        ltt = learn_then_test(risks, cfg.delta, cfg.epsilon)
        fallback = ltt.chosen is None
        chosen = 0 if fallback else ltt.chosen + 1
        return {
            "method_display": method.display, "backbone": self.backbone, "num_layers": self.full_view.num_layers,
            "metric": self.task.main_metric, "metrics": list(self.task.metrics),
            "method_meta": {**self._common_meta(method, info, ltt), **method.metadata(cfg),
                            "grid": list(self.grids[name]),
                            "grid_source": "run options" if name in self.opts.grids else "method"},
            "training": {"store": "off"} if ctx.store is None else ctx.store.block(name),
            "curve": curve, "curve_kind": "measured",
            "eval_split": "eval", "select_split": "calibration",
            "operating_points": {"ltt": {**curve[chosen], "fallback": fallback, "selected_on": "calibration",
                                         "curve_index": chosen},
                                 "full": {**full.full_point, "curve_index": 0}},
            "per_example": {"ids": full.eval_prompts.ids, "calibration_ids": full.calib_prompts.ids,
                            "points": {"ltt": {"texts": [t[:_TEXT_KEEP] for t in self.texts(outputs[chosen])],
                                               "exit_layers": [g.exit_layers for g in outputs[chosen]],
                                               "rouge_l": examples[chosen]["rouge_l"],
                                               "bert_f": examples[chosen]["bert_f"]}},
                            "curve": examples},
        }

    def _common_meta(self, method: Any, info: dict, ltt: Any) -> dict[str, Any]:
        from cee_bench.generation.metrics import default_bert_score_model

        cfg = self.cfg
        return {
            "backbone_frozen": True,
            "training_text": self.splits.train_note if method.trains else "none (no trained part)",
            "reference": "gold highlights" if self.task.gold else "the unaccelerated model's output (cached)",
            "decoding": "greedy" if cfg.greedy else "sampling: beam 1, top-k 40, top-p 0.75, temperature 1 "
                        "(one coupled uniform draw per token, seeded per example)",
            "state_copying": "K/V of skipped layers computed from the exited state (CALM §8.5)",
            "bert_score_model": f"{default_bert_score_model()[0]} (all-MiniLM-L6-v2, num_layers=6, no rescaling; "
                                "the paper used bert-base-uncased)",
            "ltt": {"risk": "1 - ROUGE-L(early output, full output) on the calibration split", "delta": cfg.delta,
                    "epsilon": cfg.epsilon, "chosen_index": ltt.chosen, "mean_risks": ltt.mean_risks,
                    "p_values": ltt.p_values, "bound": "Hoeffding, fixed-sequence testing",
                    "fallback": ltt.chosen is None},
            "training": info,
        }
