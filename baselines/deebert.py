"""DeeBERT (Xin et al., ACL 2020), docs/METHODS.md §3.

Heads: a "highway" per layer — its own pooler (initialised as a copy of the pretrained pooler, `pooler="per_layer"`),
dropout and `Linear(H, C)`; the top layer's head plays the final classifier.
Training, two stages with the same hyperparameters and a fresh AdamW each:
1. `finetune`: the backbone and the final classifier (top pooler + top linear) on CE_L. That is the full model's
   training (the reference's final classifier reads the backbone's own pooler, as `full`'s does), so this stage *is*
   `full`'s training (`shares`): trained once on `full`'s layout and carried over (`adopt`: the trained pooler becomes
   the top layer's, the other highways keep their copies of the pretrained pooler), its top layer bit-identical to
   the full model's whenever the stage settings agree (`smoke`, `cpu`; not `paper`, whose batch is 8 here and 32 for
   `full`);
2. `highway`: only the highways of layers 1..L-1 (pooler + linear) on Σ_{i<L} CE_i; the backbone and the final
   classifier are frozen. The highways' inputs (each layer's [CLS] or mean vector) are computed once, in eval mode,
   and every epoch trains on them (`cee_bench.classification.frozen`); the reference keeps the backbone's dropout on
   in this stage (`model.train()`), so its highways see a differently perturbed input every step (see `deviations`).
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

import torch
from torch import nn

from cee_bench.classification.exits import EntropyBelow, ExitRule
from cee_bench.classification.fit import FitContext, per_layer_ce
from cee_bench.classification.frozen import frozen_states, train_on_states
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.training import Stage

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
        "stage 2 trains the highways on their inputs computed once with the backbone in eval mode: no backbone "
        "dropout in that stage (the reference's model.train() perturbs those inputs afresh every step; the "
        "highways' own dropout is kept), so the highways fit the states inference sees, with less input noise",
        "stage 1 is the full model's training on the full model's heads (the top layer's pooler is the backbone's "
        "own, as in the reference), shared with `full` when the stage settings agree",
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

    shares = {"finetune": "full"}

    def adopt(self, model: MultiExitModel, trained: MultiExitModel) -> None:
        """The full model's weights, its (shared) pooler becoming the top layer's own."""
        top = model.num_layers - 1
        state = {k: v for k, v in trained.state_dict().items() if not k.startswith("heads.poolers.")}
        state.update({f"heads.poolers.{top}.{k}": v for k, v in trained.heads.poolers[0].state_dict().items()})
        model.load_state_dict(state, strict=False)

    def fit(self, ctx: FitContext) -> None:
        """Stage 2 on cached highway inputs (stage 1 is `shares`': `ctx.model` arrives fine-tuned)."""
        model = ctx.model
        top = model.num_layers - 1

        def inputs(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            mask = batch["attention_mask"]
            return {"summary": torch.stack([model.heads.summary(out["hidden"][:, i], mask) for i in range(top)], 1),
                    "labels": batch["labels"]}

        def loss(rows: dict[str, torch.Tensor], step: int) -> torch.Tensor:
            logits = torch.stack([model.heads.classify(i, model.heads.pool_summary(i, rows["summary"][:, i]))
                                  for i in range(top)], 1)
            return per_layer_ce(logits, rows["labels"]).sum(1).mean()

        states = frozen_states(model, ctx.train, ctx.eval_batch_size, inputs, keep_hidden=True)
        train_on_states(ctx, "highway", head_parameters(model, range(top)), states, loss, order_seed=ctx.seed * 1000)


METHOD = DeeBert()
