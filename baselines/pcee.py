"""PCEE-BERT, "Patient and Confident Early Exiting" (Zhang et al., NAACL-Findings 2022), docs/METHODS.md §7.

PABEE's model and training (the reference is a fork of PABEE's code: V0 = PABEE), so this class extends `Pabee` and
changes only the exit rule, its grid and the hyperparameters; its one stage is PABEE's training (`shares`), trained
once for both where the stage settings agree (`smoke`, `cpu`; `paper`'s differ):
heads: the backbone's shared pooler, dropout and a `Linear(H, C)` per layer; training: Σ_i i·CE_i / Σ_i i
(`--weights_schema asc`), every parameter trainable.
Exit (V1): after `patience` (t, default 2) consecutive layers whose normalised entropy H(p_i)/ln C is below τ,
answering with the current layer's logits (`do_ensemble 0`); the top layer always answers.
Grid: τ = 1/18 … 9/18 = 0.5 in 9 steps (`scripts/mrpc/inference_ee_mechanism_V1.sh`) plus the ends 0 (the full
model) and 1 (every example exits at layer t).
Paper hyperparameters (`scripts/mrpc/train.sh`): lr 2e-5 (classifiers too), batch 16, 15 epochs, 200 warm-up steps
(taken as warm-up ratio 0.06, which is 200 steps of MRPC's 15 epochs), max length 128.
"""

from __future__ import annotations

from typing import Any, Sequence

from baselines.pabee import Pabee
from cee_bench.classification.exits import ConsecutiveConfident, ExitRule
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.training import Stage

TAU_GRID = (0.0, *(k / 18 for k in range(1, 10)), 1.0)


class PceeBert(Pabee):
    name = "pcee-bert"
    display = "PCEE-BERT"
    threshold_name = "norm_entropy_tau"
    patience = 2
    deviations = (
        "final checkpoint kept (reference: best dev checkpoint); operating point chosen on held-out train",
        "200 warm-up steps taken as a warm-up ratio of 0.06 (200 steps on MRPC)",
    )
    stages = {"smoke": {"train": SMOKE_STAGE}, "cpu": {"train": CPU_STAGE},
              "paper": {"train": Stage(epochs=15, batch_size=16, lr=2e-5, warmup_ratio=0.06)}}
    preset_notes = {
        "smoke": "weighted CE (asc), shared smoke stage; t = 2",
        "cpu": "weighted CE (asc), shared cpu stage; t = 2",
        "paper": "scripts/mrpc/train.sh: lr 2e-5, batch 16, 15 epochs, warm-up; t = 2",
    }

    shares = {"train": "pabee"}

    def grid(self, num_layers: int) -> Sequence[Any]:
        return list(TAU_GRID)

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        return ConsecutiveConfident(float(threshold), self.patience)

    ltt_order = Method.ltt_order  # the τ grid is conservative first (PABEE's patience order does not apply)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "patience": self.patience, "weights_schema": "asc", "do_ensemble": 0}


METHOD = PceeBert()
