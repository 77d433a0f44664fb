"""`cee-bench run --task cnndm|dolly|alpaca`: train, calibrate and measure generation methods, one record each.

Order of work, chosen so that a user mistake never leaves files behind: validate flags, data and prompt lengths
first; then the full model (reference outputs and its decode speed, the baseline of every measured speed-up);
then per method: train (backbone frozen), decode the calibration split for every candidate and pick one with
Learn-then-Test (textual consistency with the full model), decode the evaluation split for every candidate (the
curve), and save the record. Finished (task, method, seed) records are reused unless `force`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cee_bench.errors import UserError
from cee_bench.generation.registry import GENERATION_METHODS, METHOD_SPECS, MethodSpec, needs_training
from cee_bench.generation.tasks import GENERATION_TASKS, Example, Splits, make_splits, resolve_data_dir
from cee_bench.resume import reusable
from cee_bench.validation import check_folder, check_numbers, check_output_folder

__all__ = ["GENERATION_TASKS", "GENERATION_METHODS", "run_generation"]

_TEXT_KEEP = 400  # characters of each output kept in `per_example`


def _say(quiet: bool, message: str, style: str | None = None) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(message, style=style, markup=False, highlight=False)


def _validate(task: str, methods: list[str]) -> list[str]:
    if task not in GENERATION_TASKS:
        raise UserError(f"unknown generation task {task!r}; choose from {', '.join(GENERATION_TASKS)}")
    if not methods:
        raise UserError("no method given; choose from " + ", ".join(GENERATION_METHODS))
    unknown = [m for m in methods if m not in METHOD_SPECS]
    if unknown:
        raise UserError(f"unknown generation method {unknown[0]!r}; choose from {', '.join(GENERATION_METHODS)}")
    return list(dict.fromkeys(methods))


def _encode(tokenizer, mlm, examples: list[Example], task: str, preset, seed: int, offset: int):
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


def _references(task: str, backbone: str, examples: list[Example], full_texts: list[str], key: dict) -> list[str]:
    """Gold for CNN/DM; otherwise the unaccelerated model's outputs, cached under the cache folder so every later
    run and method scores against the same text."""
    if task == "cnndm":
        return [e.gold or "" for e in examples]
    from cee_bench.generation.model import cache_root

    digest = hashlib.sha256(json.dumps({**key, "prompts": [e.prompt for e in examples]},
                                       sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "references" / backbone / f"{task}-{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(full_texts))
    tmp.replace(path)
    return full_texts


def _method_meta(spec: MethodSpec, preset, splits: Splits, info: dict, ltt, reference: str) -> dict[str, Any]:
    from cee_bench.generation.metrics import default_bert_score_model

    common = {
        "backbone_frozen": True,
        "training_text": splits.train_note if needs_training(spec) else "none (no trained part)",
        "reference": reference,
        "decoding": "greedy" if preset.greedy else "sampling: beam 1, top-k 40, top-p 0.75, temperature 1 "
                    "(one coupled uniform draw per token, seeded per example)",
        "state_copying": "K/V of skipped layers computed from the exited state (CALM §8.5)",
        "bert_score_model": f"{default_bert_score_model()[0]} (all-MiniLM-L6-v2, num_layers=6, no rescaling; "
                            "the paper used bert-base-uncased)",
        "ltt": {"risk": "1 - ROUGE-L(early output, full output) on the calibration split", "delta": preset.delta,
                "epsilon": preset.epsilon, "chosen_index": ltt.chosen, "mean_risks": ltt.mean_risks,
                "p_values": ltt.p_values, "bound": "Hoeffding, fixed-sequence testing"},
        "training": info,
    }
    if spec.family == "calm":
        exits = "shared final norm + LM head (no per-layer heads)" if spec.exits == "shared" else (
            f"shared final norm + LM head after low-rank residual adapters (rank {preset.adapter_rank}) trained "
            "with CALM's weighted per-exit CE, backbone frozen")
        return {**common, "measure": spec.measure, "curve_parameter": "threshold", "exits": exits,
                "threshold_decay": {"form": preset.decay[spec.measure], "tau": preset.tau,
                                    "code": "lambda*(0.9+0.1*exp(-tau*t/N))", "paper": "clip(0.9*lambda+0.1*exp(-tau*t/N))",
                                    "none": "lambda (state measure, as ConsistentEE-LLM's CALM baseline)"},
                "deviations": ["no anytime-prediction fine-tuning of the backbone (frozen)" if spec.exits == "shared"
                               else "anytime-prediction training of exit adapters only (backbone frozen)"]}
    return {**common, "curve_parameter": "alpha", "reward": "vanilla: -CE_e - alpha*e (the paper's choice for "
            "generation)", "exit_rule": "P(exit) > 0.5",
            "exits": f"low-rank residual adapters (rank {preset.adapter_rank}) on the hidden state before the "
                     "shared norm + LM head, instead of per-layer LoRA LM heads",
            "deviations": ["policy roll-outs on cached full-model states (no state copying inside training)",
                           "exits are low-rank residual adapters, not LoRA heads",
                           f"{preset.exit_steps}/{preset.policy_steps}/{preset.stage3_steps} optimiser steps for "
                           "stages 1/2/3 instead of one epoch each"]}


def run_generation(task: str, methods: list[str], *, model: str | None, data_dir: Path | None, output_dir: Path,
                   preset: str, seed: int, device: str, force: bool, quiet: bool, max_eval_samples: int | None,
                   max_train_samples: int | None, thresholds: list[float] | None = None,
                   delta: float | None = None, epsilon: float | None = None, greedy: bool = False,
                   revision: str | None = None) -> list[Path]:
    """Run every (task, method) not already stored and return the record paths (existing ones included)."""
    from cee_bench.generation.presets import make_preset
    from cee_bench.results import result_path

    methods = _validate(task, methods)
    check_numbers({"seed": seed})
    cfg = make_preset(preset, max_eval_samples=max_eval_samples, max_train_samples=max_train_samples,
                      thresholds=thresholds, delta=delta, epsilon=epsilon, greedy=greedy)
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown device '{device}'; choose auto, cpu or cuda")
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None:
        check_folder(data_dir, "data folder", must_exist=True)
    check_output_folder(output_dir, task)
    needs_train = any(needs_training(METHOD_SPECS[m]) for m in methods)
    splits = make_splits(task, data_dir, cfg.n_eval, cfg.n_calib,
                         cfg.n_train if needs_train else 0, lambda line: _say(quiet, line, "yellow"))
    _run(task, methods, splits, cfg, model=model, output_dir=output_dir, seed=seed, device=device, quiet=quiet,
         force=force, revision=revision)
    return [result_path(output_dir, task, m, seed) for m in methods]


def generation_config(cfg, exit_layers: tuple[int, ...], device: str, model: str | None, backbone: str) -> dict:
    """A record's `config` (less the thread count, which is the machine's, not the request's): built once, for the
    record and for the resume check."""
    return {**asdict(cfg), "exit_layers": list(exit_layers), "device": device, "model": model or backbone}


def _run(task: str, methods: list[str], splits: Splits, cfg, *, model: str | None, output_dir: Path, seed: int,
         device: str, quiet: bool, force: bool, revision: str | None = None) -> None:
    import torch

    from cee_bench.generation.decoding import Decoding
    from cee_bench.generation.evaluation import (consistency_risks, curve_point, decode_speed, decode_split,
                                                 decode_split_paired)
    from cee_bench.generation.ltt import learn_then_test
    from cee_bench.generation.methods import TrainingContext, build_candidates
    from cee_bench.generation.model import MultiExitLM, backbone_provenance, every_layer, load_backbone
    from cee_bench.provenance import data_provenance, provenance
    from cee_bench.results import environment, result_path, save_result

    torch.set_flush_denormal(True)  # tiny probabilities otherwise make CPU matmuls crawl (denormal floats)
    torch.manual_seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    lm, tokenizer, backbone = load_backbone(model, device, revision)
    inputs = provenance(data_provenance(splits.files), backbone_provenance(model, lm, backbone, revision))
    exit_layers = every_layer(len(lm.model.layers), cfg.exit_stride)
    config = generation_config(cfg, exit_layers, device, model, backbone)
    wanted = {**{f"config.{key}": value for key, value in config.items()}, "eval_split.source": splits.source,
              "backbone": backbone, "seed": seed}
    reused = [m for m in methods if reusable(result_path(output_dir, task, m, seed), wanted, force=force)]
    for name in reused:
        _say(quiet, f"{task}/{name} seed {seed}: same configuration already stored, reused (--force recomputes it)")
    methods = [m for m in methods if m not in reused]
    if not methods:
        return
    full = MultiExitLM(lm, exit_layers)
    eval_prompts = _encode(tokenizer, full, splits.eval, task, cfg, seed, 0)
    calib_prompts = _encode(tokenizer, full, splits.calib, task, cfg, seed, len(splits.eval))
    decoding = Decoding(greedy=cfg.greedy)
    options = {"max_new_tokens": cfg.max_new_tokens, "decoding": decoding, "eos_ids": _eos_ids(tokenizer, lm)}

    def texts(generations) -> list[str]:
        return [tokenizer.decode(g.tokens, skip_special_tokens=True).strip() for g in generations]

    _say(quiet, f"{task}: full model on {len(splits.eval)} evaluation + {len(splits.calib)} calibration prompts")
    decode_split(full, calib_prompts, None, **{**options, "max_new_tokens": 2})  # warm-up before timing
    full_eval = decode_split(full, eval_prompts, None, **options)
    full_calib_texts = texts(decode_split(full, calib_prompts, None, **options))
    full_eval_texts = texts(full_eval)
    key = {"backbone": backbone, "decoding": asdict(decoding), "max_new_tokens": cfg.max_new_tokens, "seed": seed,
           "max_prompt_tokens": cfg.max_prompt_tokens}
    references = _references(task, backbone, splits.eval, full_eval_texts, key)
    full_tps = decode_speed(full_eval)
    num_layers = full.num_layers

    def point(generations, baseline_tps: float = full_tps, **labels) -> dict:
        return curve_point(generations, texts(generations), references, full_eval_texts,
                           full_tokens_per_s=baseline_tps, num_layers=num_layers, example_ids=eval_prompts.ids,
                           **labels)

    full_point = point(full_eval, threshold=1.0, full_model=True)
    context = TrainingContext(lm, tokenizer, exit_layers, splits.train, cfg, seed)
    for name in methods:
        spec = METHOD_SPECS[name]
        _say(quiet, f"{task}/{name}: training" if needs_training(spec) else f"{task}/{name}")
        candidates, info = build_candidates(spec, context)
        info.update(context.notes)
        curve, risks, outputs = [full_point], [], [full_eval]
        for candidate in candidates:
            calib = decode_split(candidate.mlm, calib_prompts, candidate.rule, **options)
            risks.append(consistency_risks(texts(calib), full_calib_texts))
            if cfg.paired_timing:
                evaluated, again = decode_split_paired(candidate.mlm, eval_prompts, candidate.rule, **options)
                curve.append(point(evaluated, decode_speed(again), **candidate.labels))
            else:
                evaluated = decode_split(candidate.mlm, eval_prompts, candidate.rule, **options)
                curve.append(point(evaluated, **candidate.labels))
            outputs.append(evaluated)
            _say(quiet, f"  {candidate.labels}: ROUGE-L {curve[-1]['rouge_l']:.3f}, layers/token "
                        f"{curve[-1]['mean_layers_per_token']:.1f}, speed-up {curve[-1]['speedup_measured']:.2f}x")
        ltt = learn_then_test(risks, cfg.delta, cfg.epsilon)
        chosen = 0 if ltt.chosen is None else ltt.chosen + 1
        reference_kind = "gold highlights" if task == "cnndm" else "the unaccelerated model's output (cached)"
        record = {
            "task": task, "method": name, "method_display": spec.display, "backbone": backbone, "seed": seed,
            "kind": "generation", "num_layers": num_layers,
            "config": {**config, "torch_threads": torch.get_num_threads()},
            "method_meta": _method_meta(spec, cfg, splits, info, ltt, reference_kind),
            "environment": environment(), "provenance": inputs,
            "eval_split": {"source": splits.source, "ids": eval_prompts.ids,
                           "calibration_ids": calib_prompts.ids,
                           "note": "evaluation = the first examples, calibration = the next ones"},
            "curve": curve,
            "operating_points": {"ltt": curve[chosen], "full": full_point},
            "per_example": [{"id": i, "text": t[:_TEXT_KEEP], "exit_layers": g.exit_layers}
                            for i, t, g in zip(eval_prompts.ids, texts(outputs[chosen]), outputs[chosen])],
        }
        path = save_result(output_dir, record)
        _say(quiet, f"{task}/{name}: saved {path}")
