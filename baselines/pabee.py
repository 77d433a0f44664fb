"""PABEE, "BERT Loses Patience" (Zhou et al., NeurIPS 2020), docs/METHODS.md §4.

Heads: the backbone's shared pooler, dropout and a `Linear(H, C)` per layer. Training: one joint stage on
Σ_i i·CE_i / Σ_i i with every parameter trainable. Exit: once t consecutive layers agree with the layer before
(argmax), return the current layer's logits; t = 0 is the full model. Grid: every patience 0..L-1.
Paper hyperparameters: lr 2e-5, batch 32, 5 epochs, max length 128.
Deviation: checkpoint choice — the reference evaluates every checkpoint on dev and keeps the best; we keep the final
checkpoint and choose the operating point on held-out training data (docs/METHODS.md §0.5).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from cee_bench.classification.exits import ExitRule, Patience
from cee_bench.classification.fit import FitContext, weighted_ce
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.training import Stage


class Pabee(Method):
    name = "pabee"
    display = "PABEE"
    pooler = "shared"
    threshold_name = "patience"
    deviations = ("final checkpoint kept (reference: best dev checkpoint); operating point chosen on held-out train",)
    stages = {"smoke": {"train": SMOKE_STAGE}, "cpu": {"train": CPU_STAGE},
              "paper": {"train": Stage(epochs=5, batch_size=32, lr=2e-5)}}

    def grid(self, num_layers: int) -> Sequence[Any]:
        return list(range(num_layers))

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        return Patience(int(threshold))

    def ltt_order(self, grid: Sequence[Any]) -> list[int]:
        """Patience 0 is the full model; otherwise the longer the patience, the later the exit."""
        return sorted(range(len(grid)), key=lambda i: (grid[i] != 0, -grid[i]))

    def fit(self, ctx: FitContext) -> None:
        weights = torch.arange(1, ctx.model.num_layers + 1, dtype=torch.float)
        ctx.train_stage("train", list(ctx.model.parameters()),
                        lambda batch, step: weighted_ce(ctx.forward(batch)["logits"], batch["labels"], weights))


METHOD = Pabee()
