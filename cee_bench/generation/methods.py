"""The generation methods: what each trains and the exit rules (curve candidates) it offers.

A candidate is one operating point of a method: a multi-exit view (shared head or trained adapters) and an exit
rule. Exits trained with the weighted per-exit CE are shared by ConsistentEE (its stage 1) and the `*-anytime`
CALM variants (CALM's anytime-prediction training, restricted to the adapters since the backbone is frozen), so a
comparison between them isolates the exit rule and ConsistentEE's stage 3. CALM's candidates are its threshold grid (one trained meta classifier for all); ConsistentEE's are the
policies trained with different α (the paper's way of tracing its curve; the 0.5 rule is kept).
Candidates are ordered from the most conservative to the most aggressive, as Learn-then-Test needs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from cee_bench.generation.decoding import ExitRule
from cee_bench.generation.model import ExitAdapters, MultiExitLM
from cee_bench.generation.presets import Preset
from cee_bench.generation.registry import MethodSpec
from cee_bench.generation.tasks import Example
from cee_bench.generation.training import TrainingStates, collect_states, per_exit_outputs


@dataclass
class Candidate:
    labels: dict[str, Any]
    mlm: MultiExitLM
    rule: ExitRule


@dataclass
class TrainingContext:
    """The frozen backbone, its exit layers and the training text; states are computed on first use only."""

    lm: Any
    tokenizer: Any
    exit_layers: tuple[int, ...]
    examples: list[Example]
    preset: Preset
    seed: int
    notes: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def states(self) -> TrainingStates:
        data = collect_states(MultiExitLM(self.lm, self.exit_layers), self.tokenizer, self.examples,
                              cutoff=self.preset.cutoff, max_tokens=self.preset.train_tokens)
        self.notes["training_positions"] = data.size
        return data

    @cached_property
    def anytime(self) -> tuple[MultiExitLM, torch.Tensor]:
        """Exits trained with the weighted per-exit CE `Σ i·CE_i / Σ i` — CALM's anytime-prediction loss (§8.2)
        and ConsistentEE's stage 1 (§2.2) are the same objective, so it is trained once per run and shared —
        and every exit's CE on the training positions afterwards ([E, N], for the policy's rewards)."""
        from cee_bench.generation.consistentee import train_exits_weighted

        preset, data = self.preset, self.states
        mlm = MultiExitLM(self.lm, self.exit_layers,
                          ExitAdapters(len(self.lm.model.layers), data.states.shape[-1], preset.adapter_rank))
        losses = train_exits_weighted(mlm, data, steps=preset.exit_steps, lr=preset.exit_lr,
                                      batch=preset.exit_batch, seed=self.seed)
        ce, _ = per_exit_outputs(mlm, data)
        self.notes["anytime_exits"] = {"loss_first_last": [losses[0], losses[-1]] if losses else None,
                                       "ce_per_exit": [round(float(v), 3) for v in ce.mean(1)]}
        return mlm, ce


def calm_candidates(spec: MethodSpec, ctx: TrainingContext) -> tuple[list[Candidate], dict[str, Any]]:
    """One candidate per threshold; the meta measure first trains its classifier with everything else frozen."""
    from baselines.calm import CalmRule, consistency_labels, train_meta_classifier

    preset = ctx.preset
    view = ctx.anytime[0] if spec.exits == "anytime" else MultiExitLM(ctx.lm, ctx.exit_layers)
    meta, info = None, {}
    if spec.measure == "meta":
        _, argmax = per_exit_outputs(view, ctx.states)
        labels = consistency_labels(argmax)
        states = ctx.states.states[list(view.exit_layers[:-1])]
        meta = train_meta_classifier(states, labels, steps=preset.meta_steps, lr=preset.meta_lr, seed=ctx.seed)
        info["meta_positive_rate"] = float(labels.float().mean())
    rules = [CalmRule(spec.measure, t, preset.max_new_tokens, preset.tau, preset.decay[spec.measure], meta=meta)
             for t in preset.thresholds[spec.measure]]
    return [Candidate({"threshold": r.threshold}, view, r) for r in rules], info


def consistentee_candidates(ctx: TrainingContext) -> tuple[list[Candidate], dict[str, Any]]:
    """Stage 1 once, then per α (ascending = most conservative first) the policy and stage-3 exits."""
    from cee_bench.generation.consistentee import (PolicyRule, normed_exit_states, policy_exit_layers,
                                                   train_exits_at_policy, train_policy)

    preset, data = ctx.preset, ctx.states
    base, ce = ctx.anytime
    normed = normed_exit_states(base, data)
    info: dict[str, Any] = {"per_alpha": {}}
    candidates = []
    for alpha in sorted(preset.alphas):
        view = MultiExitLM(ctx.lm, ctx.exit_layers, copy.deepcopy(base.adapters))
        policy = train_policy(view, data, ce, normed, alpha=alpha, steps=preset.policy_steps, lr=preset.policy_lr,
                              batch=preset.policy_batch, copies=preset.policy_copies, seed=ctx.seed)
        exits = policy_exit_layers(view, policy, normed)
        train_exits_at_policy(view, data, exits, steps=preset.stage3_steps, lr=preset.stage3_lr,
                              batch=preset.exit_batch, seed=ctx.seed)
        info["per_alpha"][str(alpha)] = {"train_mean_exit_layer": float(exits.float().mean())}
        candidates.append(Candidate({"threshold": 0.5, "alpha": alpha}, view, PolicyRule(policy)))
    return candidates, info


def build_candidates(spec: MethodSpec, ctx: TrainingContext) -> tuple[list[Candidate], dict[str, Any]]:
    if spec.family == "calm":
        return calm_candidates(spec, ctx)
    return consistentee_candidates(ctx)

