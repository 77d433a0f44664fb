"""BERxiT (Xin et al., EACL 2021), docs/METHODS.md §5, with its learning-to-exit routine (`alternate-lte`).

Heads: DeeBERT's highways (a pooler per layer initialised from the pretrained pooler, dropout, `Linear(H, C)`; the
top layer's head is the final classifier) plus one learning-to-exit (LTE) module shared by every layer,
`u_i = sigmoid(w·g_i + b)` on highway i's pooled output g_i (after dropout while training), emitted as the "lte"
per-layer signal.
Training, one stage, every parameter trainable; with y_i = 1 − 1[argmax z_i == gold] (1 = "keep going", targets
detached) and L_LTE = MSE(u, y) over all L layers:
- even steps (counted inside the epoch, as the reference does): CE_L + L_LTE;
- odd steps: Σ_{i<L} CE_i + L_LTE.
Exit: at the first layer i < L with u_i < τ; otherwise the final classifier answers. Grid: τ from 0 (the full model)
to 1 (everything exits at layer 1) in steps of 0.05 — the LTE output is a probability.
Paper hyperparameters (`scripts/train_highway.sh`): lr 2e-5, batch 8, 3 epochs, max length 128.

Deviation: the LTE's dropout on g_i draws its own mask rather than reusing the classifier's (the harness's heads apply
dropout inside the classifier); at inference there is no dropout, so decisions are unaffected.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from cee_bench.classification.exits import ExitRule, ScoreBelow
from cee_bench.classification.fit import FitContext, per_layer_ce
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.training import Stage

TAU_GRID = tuple(round(0.05 * k, 2) for k in range(21))


def lte_signal(model: MultiExitModel, layer: int, signals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """u_i: the shared LTE module on this layer's (dropped-out, while training) pooled output; [B]."""
    pooled = model.heads.dropout(signals["pooled"])
    return {"lte": torch.sigmoid(model.extras["lte"](pooled)).squeeze(-1)}


def alternate_lte_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, step_in_epoch: int) -> torch.Tensor:
    """BERxiT's `alternate-lte` loss for one batch: CE_L (even steps) or Σ_{i<L} CE_i (odd steps), plus L_LTE."""
    logits = outputs["logits"]
    ce = per_layer_ce(logits, labels).mean(0)
    wrong = (logits.argmax(-1) != labels.unsqueeze(1)).to(outputs["lte"].dtype)
    lte = nn.functional.mse_loss(outputs["lte"], wrong)
    return (ce[-1] if step_in_epoch % 2 == 0 else ce[:-1].sum()) + lte


class Berxit(Method):
    name = "berxit"
    display = "BERxiT"
    pooler = "per_layer"
    threshold_name = "lte_tau"
    deviations = (
        "LTE dropout draws its own mask (reference: the classifier's dropped-out vector); no effect at inference",
        "operating point chosen on held-out train (reference: final checkpoint, thresholds read on dev)",
    )
    stages = {"smoke": {"train": SMOKE_STAGE}, "cpu": {"train": CPU_STAGE},
              "paper": {"train": Stage(epochs=3, batch_size=8, lr=2e-5)}}
    preset_notes = {
        "smoke": "alternate-lte, every parameter; shared smoke stage",
        "cpu": "alternate-lte, every parameter; shared cpu stage",
        "paper": "scripts/train_highway.sh: lr 2e-5, batch 8, 3 epochs",
    }
    signal_fn = staticmethod(lte_signal)

    def grid(self, num_layers: int) -> Sequence[Any]:
        return list(TAU_GRID)

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        return ScoreBelow("lte", float(threshold))

    def build_extras(self, model: MultiExitModel) -> nn.ModuleDict:
        return nn.ModuleDict({"lte": nn.Linear(model.backbone.config.hidden_size, 1)})

    def fit(self, ctx: FitContext) -> None:
        steps_per_epoch = math.ceil(len(ctx.train) / ctx.stages["train"].batch_size)
        ctx.train_stage("train", list(ctx.model.parameters()),
                        lambda batch, step: alternate_lte_loss(ctx.forward(batch), batch["labels"],
                                                               step % steps_per_epoch))

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "train_routine": "alternate-lte"}


METHOD = Berxit()
