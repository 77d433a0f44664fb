"""DeeBERT (Xin et al., ACL 2020), METHODS.md §3.

Heads: a "highway" per layer — its own pooler (initialised as a copy of the pretrained pooler, `pooler="per_layer"`),
dropout and `Linear(H, C)`; the top layer's head plays the final classifier.
Training, two stages with the same hyperparameters and a fresh AdamW each:
1. `finetune`: the backbone and the final classifier (top pooler + top linear) on CE_L;
2. `highway`: only the highways of layers 1..L-1 (pooler + linear) on Σ_{i<L} CE_i; the backbone and the final
   classifier are frozen (the backbone keeps its dropout on, as the reference's `model.train()` does).
Exit: at the first layer i < L whose prediction entropy (natural log) is below S; the top layer always answers.
Grid: S from `scripts/eval_entropy.sh`; S = 0 is the full model, and S ≥ ln C (0.693 for two labels) exits everything
at layer 1.
Paper hyperparameters (`scripts/train_highway.sh`): lr 2e-5, batch 8, 3 epochs per stage, max length 128.

Reference defect, paper's intent kept: the reference also tests the entropy of an extra, never-trained highway after
the last layer, whose near-uniform output can trigger an exit there for S ≥ ln C. Here layer L answers with the
trained final classifier and no test runs there (BERxiT's `i < L` guard).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from cee_bench.exits import EntropyBelow, ExitRule
from cee_bench.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.multiexit import MultiExitModel
from cee_bench.training import FitContext, Stage, per_layer_ce

PAPER_STAGE = Stage(epochs=3, batch_size=8, lr=2e-5)  # both stages, scripts/train_highway.sh
ENTROPY_GRID = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def head_parameters(model: MultiExitModel, layers: Sequence[int]) -> list[nn.Parameter]:
    """The pooler and classifier parameters of the 0-based `layers`' exit heads (per-layer poolers)."""
    return [p for i in layers for module in (model.heads.poolers[i], model.heads.classifiers[i])
            for p in module.parameters()]


class DeeBert(Method):
    name = "deebert"
    display = "DeeBERT"
    pooler = "per_layer"
    threshold_name = "entropy"
    deviations = (
        "untrained last highway of the reference not used: layer L answers with the trained final classifier and "
        "the entropy test runs only at layers < L (paper's intent; BERxiT's i < L guard)",
        "operating point chosen on held-out train (reference: final checkpoint, thresholds read on dev)",
    )
    stages = {
        "smoke": {"finetune": SMOKE_STAGE, "highway": SMOKE_STAGE},
        "cpu": {"finetune": CPU_STAGE, "highway": CPU_STAGE},
        "paper": {"finetune": PAPER_STAGE, "highway": PAPER_STAGE},
    }
    preset_notes = {
        "smoke": "stage 1 backbone+final head, stage 2 highways; shared smoke stage each",
        "cpu": "stage 1 backbone+final head, stage 2 highways; shared cpu stage each",
        "paper": "scripts/train_highway.sh: both stages lr 2e-5, batch 8, 3 epochs",
    }

    def grid(self, num_layers: int) -> Sequence[Any]:
        return list(ENTROPY_GRID)

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        return EntropyBelow(float(threshold))

    def fit(self, ctx: FitContext) -> None:
        model = ctx.model
        top = model.num_layers - 1
        ctx.train_stage("finetune", [*model.backbone.parameters(), *head_parameters(model, [top])],
                        lambda batch, step: per_layer_ce(ctx.forward(batch)["logits"][:, top:], batch["labels"]).mean())
        ctx.train_stage("highway", head_parameters(model, range(top)),
                        lambda batch, step: per_layer_ce(ctx.forward(batch)["logits"][:, :top],
                                                         batch["labels"]).sum(1).mean())


METHOD = DeeBert()
