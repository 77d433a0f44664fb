"""The full model (Table 3's "BERT-Base" row): ordinary fine-tuning of the top classifier, no early exit."""

from __future__ import annotations

from typing import Any, Sequence

from cee_bench.classification.exits import ExitRule, Never
from cee_bench.classification.fit import FitContext, per_layer_ce
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.training import Stage


class FullModel(Method):
    name = "full"
    display = "{backbone} (full)"
    threshold_name = "none"
    stages = {"smoke": {"train": SMOKE_STAGE}, "cpu": {"train": CPU_STAGE},
              "paper": {"train": Stage(epochs=3, batch_size=32, lr=2e-5)}}

    def grid(self, num_layers: int) -> Sequence[Any]:
        return [None]

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        return Never()

    def fit(self, ctx: FitContext) -> None:
        top = ctx.model.num_layers - 1
        params = [p for n, p in ctx.model.named_parameters()
                  if n.startswith("backbone.") or n.startswith(f"heads.classifiers.{top}.") or n.startswith("heads.poolers.")]

        def loss(batch, step):
            return per_layer_ce(ctx.forward(batch)["logits"][:, top:], batch["labels"]).mean()

        ctx.train_stage("train", params, loss)


METHOD = FullModel()
