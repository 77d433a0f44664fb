"""Presets, both kinds, in one place: `smoke` (seconds, CI), `cpu` (minutes on 2 cores), `paper` (the papers'
settings). `cee-bench list` prints them all.

Classification: `PRESET_LIMITS` (data limits, timed examples); each method's training stages per preset live in its
module (they are its hyperparameters).

Generation: `smoke` (seconds, CI), `cpu` (a CNN/DM subset in ~10-15 min on 2 idle cores), `paper` (the paper's
settings: 128 new tokens as the reference evaluation, cutoff 256, K = 4 roll-outs; meant for a GPU).

Which examples (cnndm, `test-250.jsonl` in file order): evaluation = the first `n_eval` articles, calibration =
the next `n_calib`, training text = the last `n_train` (prompt + gold highlights, `cutoff` tokens each). `cpu`:
articles 0-9 evaluated, 10-15 calibrate, 210-249 train; articles cut to 384 tokens, 40 new tokens.

Threshold grids run from the most conservative to the most aggressive, the order Learn-then-Test walks them.
State-saturation thresholds sit near 1 because consecutive layers of a residual stream are very similar
(SmolLM2: median cosine 0.95-0.97 between neighbouring layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cee_bench.errors import UserError
from cee_bench.validation import check_numbers

PRESETS = ("smoke", "cpu", "paper")

# Classification, per preset: data limits and how many examples the latency measurement times (each method's
# training stages per preset are in its own module: they are its hyperparameters).
PRESET_LIMITS: dict[str, dict[str, Any]] = {
    "smoke": {"max_train_samples": 64, "max_eval_samples": 48, "max_seq_length": 64, "latency_examples": 16},
    "cpu": {"max_train_samples": 4000, "max_eval_samples": None, "max_seq_length": 128, "latency_examples": 200},
    "paper": {"max_train_samples": None, "max_eval_samples": None, "max_seq_length": 128, "latency_examples": 1000},
}
# What each classification preset costs, as measured (`benchmarks/stage_steps.py`: seconds per optimiser step of every
# method's stages × the preset's steps; one thread, CPU clock, the machine at load 2.5-3, so ±15%).
PRESET_COSTS: dict[str, str] = {
    "smoke": "seconds per method (CI)",
    "cpu": "training per method at 4,000 SST-2 rows (length 64; MRPC's 3,302 pairs at 128 in brackets), measured on "
           "one thread: full 8.5 (12.1) min, PABEE 9.6 (12.5), DeeBERT 12.5 (18.7, "
           "before its stage 2 trained on cached states), BERxiT 7.9 (13.7), Right-Tool "
           "8.4 (15.4), PCEE-BERT 8.5 (12.5), ConsistentEE 7 alpha 56 (100); shared trainings train DeeBERT's stage 1, "
           "PCEE-BERT and ConsistentEE's step 1 once (cee_bench.classification.sharing)",
    "paper": "the papers' settings (whole training sets, their epochs): hours per method on a CPU",
}
# The same measurements as numbers, for a sweep's cost estimate (`cee-bench run --dry-run`): training minutes per
# method on one thread at `PRESET_MINUTES_ROWS` training rows, a shared training counted in each method that uses
# it (cpu: the figures above; smoke: `train_seconds` of SST-2 records at one thread, 2 cores at load ~8). The π sweep
# is ConsistentEE's training read at other thresholds, so it counts ConsistentEE's figure.
PRESET_MINUTES: dict[str, dict[str, float]] = {
    "smoke": {"full": 0.08, "pabee": 0.09, "deebert": 0.09, "berxit": 0.08, "right-tool": 0.08, "pcee-bert": 0.1,
              "consistentee": 0.31, "consistentee-vanilla": 0.31, "consistentee-pi": 0.31},
    "cpu": {"full": 8.5, "pabee": 9.6, "deebert": 12.5, "berxit": 7.9, "right-tool": 8.4, "pcee-bert": 8.5,
            "consistentee": 56.0, "consistentee-vanilla": 56.0, "consistentee-pi": 56.0},
}
PRESET_MINUTES_ROWS: dict[str, int] = {"smoke": 64, "cpu": 4000}


@dataclass(frozen=True)
class GenerationPreset:
    """Every size and hyperparameter of a generation run (stored whole in each record's `config`)."""

    name: str
    n_eval: int
    n_calib: int
    n_train: int  # training records (prompt + response)
    train_tokens: int  # training positions kept (token = instance)
    cutoff: int  # tokens per training sequence (ConsistentEE-LLM: 256)
    max_new_tokens: int
    max_prompt_tokens: int  # CNN/DM articles are cut to fit this; other prompts must fit the context
    exit_stride: int = 1  # 1 = an exit after every layer (the paper)
    greedy: bool = False  # False = the paper's sampling: top-k 40, top-p 0.75, temperature 1
    paired_timing: bool = True  # re-time the full model next to every candidate (robust to drifting load)
    thresholds: dict[str, tuple[float, ...]] = field(default_factory=dict)
    alphas: tuple[float, ...] = ()
    delta: float = 0.3
    epsilon: float = 0.2
    tau: float = 4.0
    decay: dict[str, str] = field(default_factory=lambda: {"softmax": "code", "meta": "code", "state": "none"})
    adapter_rank: int = 16
    exit_steps: int = 40
    exit_batch: int = 32
    exit_lr: float = 3e-3
    policy_steps: int = 300
    policy_batch: int = 256
    policy_lr: float = 3e-3
    policy_copies: int = 4
    stage3_steps: int = 20
    stage3_lr: float = 1e-3
    meta_steps: int = 300
    meta_lr: float = 1e-3


_GRIDS = {"state": (0.999, 0.995, 0.99, 0.985, 0.98), "softmax": (0.9, 0.7, 0.5, 0.3),
          "meta": (0.9, 0.7, 0.5, 0.3)}

GENERATION_PRESETS: dict[str, GenerationPreset] = {
    "smoke": GenerationPreset("smoke", n_eval=2, n_calib=2, n_train=4, train_tokens=128, cutoff=64, max_new_tokens=8,
                              max_prompt_tokens=192, thresholds={k: v[1:3] for k, v in _GRIDS.items()},
                              alphas=(0.05,), exit_steps=3, policy_steps=20, stage3_steps=3, meta_steps=20,
                              delta=0.5, epsilon=0.5),
    "cpu": GenerationPreset("cpu", n_eval=10, n_calib=6, n_train=40, train_tokens=1536, cutoff=256,
                            max_new_tokens=40, max_prompt_tokens=384, thresholds=_GRIDS,
                            alphas=(0.02, 0.05, 0.1, 0.2), delta=0.5, epsilon=0.2),
    "paper": GenerationPreset("paper", n_eval=100, n_calib=100, n_train=2000, train_tokens=200_000, cutoff=256,
                              max_new_tokens=128, max_prompt_tokens=1024, thresholds=_GRIDS,
                              alphas=(0.01, 0.02, 0.05, 0.1, 0.2), delta=0.2, epsilon=0.05, exit_steps=2000,
                              exit_batch=64, policy_steps=3000, stage3_steps=1000, meta_steps=3000),
}


def generation_preset(name: str, *, max_eval_samples: int | None, max_train_samples: int | None,
                      delta: float | None, epsilon: float | None, greedy: bool) -> GenerationPreset:
    """The named generation preset with the user's overrides, validated (one clear line for each mistake: δ and ε by
    their domain in `validation.DOMAINS`). A `--grid` is one method's and is applied by the recipe to that method
    alone."""
    if name not in GENERATION_PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(GENERATION_PRESETS)}")
    preset = GENERATION_PRESETS[name]
    check_numbers({"max_eval_samples": max_eval_samples, "max_train_samples": max_train_samples, "delta": delta,
                   "epsilon": epsilon})
    changes: dict = {"greedy": preset.greedy or greedy}
    if max_eval_samples is not None:
        changes["n_eval"] = min(preset.n_eval, max_eval_samples)
    if max_train_samples is not None:
        changes["n_train"] = min(preset.n_train, max_train_samples)
    if delta is not None or epsilon is not None:
        changes["delta"] = preset.delta if delta is None else delta
        changes["epsilon"] = preset.epsilon if epsilon is None else epsilon
    return replace(preset, **changes)
