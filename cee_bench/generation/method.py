"""What a generation method is (a small declarative class, like `cee_bench.classification.method.Method` for
classification), and what its candidates are trained from.

A candidate is one operating point of a method: a multi-exit view (shared head or trained adapters) and an exit
rule. The recipe (`generation/recipe.py`) decodes every candidate on the calibration and evaluation prompts, picks one
with Learn-then-Test and keeps the rest as the curve, so candidates are ordered from the most conservative to the
most aggressive, as Learn-then-Test needs. Exits trained with the weighted per-exit CE are shared by ConsistentEE
(its stage 1) and the `*-anytime` CALM variants (CALM's anytime-prediction training, restricted to the adapters
since the backbone is frozen), so a comparison between them isolates the exit rule and ConsistentEE's stage 3.

Adding a generation method: one module defining a `GenerationMethod` instance `METHOD`, plus one line in
`cee_bench.registry.GENERATION_METHOD_MODULES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import torch

from cee_bench.generation.decoding import TokenExitRule
from cee_bench.generation.model import ExitAdapters, MultiExitLM
from cee_bench.generation.tasks import PromptExample
from cee_bench.generation.training import TrainingStates, collect_token_states, per_exit_outputs, train_exits_weighted
from cee_bench.presets import GenerationPreset
from cee_bench.progress import Progress


@dataclass
class Candidate:
    labels: dict[str, Any]
    mlm: MultiExitLM
    rule: TokenExitRule


@dataclass
class TrainingContext:
    """The frozen backbone, its exit layers and the training text; states are computed on first use only."""

    lm: Any
    tokenizer: Any
    exit_layers: tuple[int, ...]
    examples: list[PromptExample]
    preset: GenerationPreset
    seed: int
    progress: Progress = field(default_factory=Progress.quiet)
    notes: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def states(self) -> TrainingStates:
        data = collect_token_states(MultiExitLM(self.lm, self.exit_layers), self.tokenizer, self.examples,
                              cutoff=self.preset.cutoff, max_tokens=self.preset.train_tokens)
        self.notes["training_positions"] = data.size
        return data

    @cached_property
    def anytime(self) -> tuple[MultiExitLM, torch.Tensor]:
        """Exits trained with the weighted per-exit CE `Σ i·CE_i / Σ i` — CALM's anytime-prediction loss (§8.2)
        and ConsistentEE's stage 1 (§2.2) are the same objective, so it is trained once per run and shared —
        and every exit's CE on the training positions afterwards ([E, N], for the policy's rewards)."""
        preset, data = self.preset, self.states
        mlm = MultiExitLM(self.lm, self.exit_layers,
                          ExitAdapters(len(self.lm.model.layers), data.states.shape[-1], preset.adapter_rank))
        losses = train_exits_weighted(mlm, data, steps=preset.exit_steps, lr=preset.exit_lr,
                                      batch=preset.exit_batch, seed=self.seed, progress=self.progress)
        ce, _ = per_exit_outputs(mlm, data)
        self.notes["anytime_exits"] = {"loss_first_last": [losses[0], losses[-1]] if losses else None,
                                       "ce_per_exit": [round(float(v), 3) for v in ce.mean(1)]}
        return mlm, ce


class GenerationMethod:
    """Base class: a name, how it is shown, whether it trains, its grid (from the preset, or the run's `--grid`) and
    the candidates it offers over that grid."""

    name: str
    display: str
    grid_name: str = "threshold"
    exits: str = "shared"  # "shared": final norm + LM head as is; "anytime": + adapters trained with weighted CE
    rule_name: str = ""  # what decides the exit, for `cee-bench list`

    @property
    def trains(self) -> bool:
        """Whether the method has a trained part (and so needs training text)."""
        return self.exits == "anytime"

    def grid(self, preset: GenerationPreset) -> tuple[float, ...]:
        """The preset's grid, most conservative first."""
        raise NotImplementedError

    def order(self, grid: Sequence[float]) -> tuple[float, ...]:
        """A run's `--grid` (or a config file's `grids`) validated and put most conservative first."""
        raise NotImplementedError

    def candidates(self, ctx: TrainingContext, grid: Sequence[float]) -> tuple[list[Candidate], dict[str, Any]]:
        """Train what the method trains and return its candidates over `grid` and what training reports."""
        raise NotImplementedError

    def metadata(self, preset: GenerationPreset) -> dict[str, Any]:
        """What the record's `method_meta` says about this method (exits, rule, deviations)."""
        raise NotImplementedError
