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
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

from cee_bench.generation.decoding import TokenExitRule
from cee_bench.generation.model import ExitAdapters, MultiExitLM
from cee_bench.generation.tasks import PromptExample
from cee_bench.generation.training import TrainingStates, collect_token_states, per_exit_outputs, train_exits_weighted
from cee_bench.presets import GenerationPreset
from cee_bench.progress import Progress

if TYPE_CHECKING:
    from cee_bench.generation.sharing import GenerationStore


@dataclass
class Candidate:
    labels: dict[str, Any]
    mlm: MultiExitLM
    rule: TokenExitRule


@dataclass
class TrainingContext:
    """The frozen backbone, its exit layers and the training text; states are computed on first use only, and every
    trained part goes through the model store when the run has one (`store`: `generation.sharing`)."""

    lm: Any
    tokenizer: Any
    exit_layers: tuple[int, ...]
    examples: list[PromptExample]
    preset: GenerationPreset
    seed: int
    progress: Progress = field(default_factory=Progress.quiet)
    notes: dict[str, Any] = field(default_factory=dict)
    store: GenerationStore | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.lm.config.hidden_size)

    def obtain(self, part: str, settings: dict[str, Any], modules: dict[str, nn.Module],
               train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Give `modules` the weights of `part` (see `GenerationStore.obtain`): loaded from the store when there, else
        trained by `train()`; returns what the record notes about the training. `training_positions` (which every
        `train` notes) goes to the run's `notes`, as when the states are computed."""
        notes = dict(train() if self.store is None else self.store.obtain(part, settings, modules, train))
        self.notes["training_positions"] = notes.pop("training_positions")
        return notes

    @cached_property
    def states(self) -> TrainingStates:
        data = collect_token_states(MultiExitLM(self.lm, self.exit_layers), self.tokenizer, self.examples,
                              cutoff=self.preset.cutoff, max_tokens=self.preset.train_tokens)
        self.notes["training_positions"] = data.size
        return data

    @property
    def anytime_settings(self) -> dict[str, Any]:
        preset = self.preset
        return {"adapter_rank": preset.adapter_rank, "exit_steps": preset.exit_steps, "exit_lr": preset.exit_lr,
                "exit_batch": preset.exit_batch}

    @cached_property
    def anytime(self) -> MultiExitLM:
        """Exits trained with the weighted per-exit CE `Σ i·CE_i / Σ i` — CALM's anytime-prediction loss (§8.2)
        and ConsistentEE's stage 1 (§2.2) are the same objective, so it is trained once per run and shared (and
        once per training key across runs, through the store). The adapters start from the run's seed, whichever
        method needs them first, so that a stored training is the one any run would make."""
        preset = self.preset
        torch.manual_seed(self.seed)
        mlm = MultiExitLM(self.lm, self.exit_layers,
                          ExitAdapters(len(self.lm.model.layers), self.hidden_size, preset.adapter_rank))
        computed: list[torch.Tensor] = []

        def train() -> dict[str, Any]:
            data = self.states
            losses = train_exits_weighted(mlm, data, steps=preset.exit_steps, lr=preset.exit_lr,
                                          batch=preset.exit_batch, seed=self.seed, progress=self.progress)
            ce, _ = per_exit_outputs(mlm, data)
            computed.append(ce)
            return {"training_positions": data.size,
                    "anytime_exits": {"loss_first_last": [losses[0], losses[-1]] if losses else None,
                                      "ce_per_exit": [round(float(v), 3) for v in ce.mean(1)]}}

        self.notes.update(self.obtain("anytime-exits", self.anytime_settings, {"adapters": mlm.adapters}, train))
        if computed:  # the training computed it already
            self.__dict__["anytime_ce"] = computed[0]
        return mlm

    @cached_property
    def anytime_ce(self) -> torch.Tensor:
        """Every anytime exit's CE on the training positions ([E, N]: the policy's rewards)."""
        return per_exit_outputs(self.anytime, self.states)[0]


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
