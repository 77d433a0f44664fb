"""CALM (Schuster et al., NeurIPS 2022) for decoder-only LMs: confidence measures, decaying threshold, meta classifier.

Follows docs/METHODS.md §8, adapted from T5's decoder to a Llama decoder:
- exits use the model's final norm + the *shared* LM head (no per-layer heads, §8.1);
- the three confidence measures of §8.3: softmax top-1 minus top-2 ("softmax"), cosine similarity of the
  current and previous exit's states ("state"; the first exit is never taken), and the early-exit classifier
  ("meta"): one `Linear(H, 2)` shared by all exits on the pre-norm state, trained with everything else frozen on
  "argmax here equals the top layer's argmax" labels with class-balanced CE averaged over all exits but the last;
- the position-decayed threshold of §8.4, code form `λ·(0.9 + 0.1·exp(−τt/N))` by default, the paper's form
  `clip(0.9λ + 0.1·exp(−τt/N))` as an option, and no decay (`decay_form="none"`). The state measure uses no decay
  by default, like ConsistentEE-LLM's own CALM baseline (fixed cosine threshold 0.975, §2.3): the decay lowers λ
  by up to 10 %, below the 0.95-0.97 cosine that *any* two neighbouring layers of SmolLM2 already reach, which
  would make every token exit at layer 2-3 whatever λ is;
- exit when confidence ≥ λ_t; λ = 1 means "never exit" (the full model), so Learn-then-Test can fall back to it;
- the method itself (`Calm`, one instance per registered variant): its candidates, one per threshold, and its record
  metadata.
Deviation: CALM fine-tunes the whole model with a weighted per-exit loss first (§8.2); here the backbone stays the
pretrained checkpoint (frozen), as for every method in the generation track. Recorded in `method_meta`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from cee_bench.errors import UserError
from cee_bench.generation.method import Candidate, GenerationMethod, TrainingContext
from cee_bench.presets import GenerationPreset
from cee_bench.progress import Progress

CALM_MEASURES = ("softmax", "state", "meta")
DECAY_FORMS = ("code", "paper", "none")


def check_threshold(threshold: float) -> float:
    """A CALM threshold must lie in [0, 1]; anything else is a user mistake."""
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise UserError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def decayed_threshold(threshold: float, step: int, max_steps: int, tau: float = 4.0, form: str = "code") -> float:
    """λ_t for decoding position `step` of at most `max_steps` (§8.4): strict early, relaxing towards 0.9λ."""
    if form == "none":
        return threshold
    decay = math.exp(-tau * step / max(max_steps, 1))
    if form == "code":
        return threshold * (0.9 + 0.1 * decay)
    return min(1.0, max(0.0, 0.9 * threshold + 0.1 * decay))


def softmax_confidence(logits: torch.Tensor) -> float:
    """Top-1 minus top-2 probability of the exit's vocabulary softmax."""
    top = torch.softmax(logits.reshape(-1).float(), dim=-1).topk(2).values
    return float(top[0] - top[1])


def state_confidence(hidden: torch.Tensor, previous: torch.Tensor | None) -> float:
    """Cosine similarity of this exit's state and the previous exit's; −1 when there is no previous exit."""
    if previous is None:
        return -1.0
    return float(torch.cosine_similarity(hidden.reshape(-1), previous.reshape(-1), dim=0))


class MetaClassifier(nn.Module):
    """CALM's early-exit classifier: one Dense(H→2) shared by every exit, on the pre-norm state."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)

    def confidence(self, hidden: torch.Tensor) -> float:
        return float(torch.softmax(self.dense(hidden.reshape(-1)), dim=-1)[1])


def consistency_labels(layer_argmax: torch.Tensor) -> torch.Tensor:
    """[L, N] per-exit argmax → [L−1, N] labels: 1 where exit i agrees with the top layer (§8.2)."""
    return (layer_argmax[:-1] == layer_argmax[-1:]).long()


def train_meta_classifier(states: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float = 1e-3,
                          batch_size: int = 512, seed: int = 0, progress: Progress | None = None) -> MetaClassifier:
    """Fit the meta classifier on cached frozen states [L−1, N, H] with class-balanced CE (positives weighted by
    the negative rate and vice versa), averaged over exits — `loss_fn_meta_cls` of the reference code."""
    from cee_bench.generation.training import sample_batches
    from cee_bench.training import train_steps

    torch.manual_seed(seed)
    meta = MetaClassifier(states.shape[-1])
    flat_states = states.reshape(-1, states.shape[-1])
    flat_labels = labels.reshape(-1)
    positive_rate = flat_labels.float().mean().clamp(1e-3, 1 - 1e-3)
    class_weights = torch.stack([positive_rate, 1 - positive_rate])  # weight[0]=neg gets pos rate, and v.v.

    def loss(batch: torch.Tensor, step: int) -> torch.Tensor:
        return nn.functional.cross_entropy(meta(flat_states[batch]), flat_labels[batch], weight=class_weights)

    train_steps("CALM meta classifier", meta, loss, sample_batches(flat_labels.numel(), batch_size, steps, seed),
                lr=lr, progress=progress)
    return meta.eval()


@dataclass
class CalmRule:
    """CALM's exit decision at one exit layer (implements `cee_bench.generation.decoding.TokenExitRule`)."""

    measure: str
    threshold: float
    max_steps: int
    tau: float = 4.0
    decay_form: str = "code"
    meta: MetaClassifier | None = None

    def __post_init__(self) -> None:
        if self.measure not in CALM_MEASURES:
            raise UserError(f"unknown CALM measure {self.measure!r}; choose from {', '.join(CALM_MEASURES)}")
        if self.decay_form not in DECAY_FORMS:
            raise UserError(f"unknown threshold decay {self.decay_form!r}; choose from {', '.join(DECAY_FORMS)}")
        check_threshold(self.threshold)
        if self.measure == "meta" and self.meta is None:
            raise ValueError("the meta measure needs a trained MetaClassifier")

    def decide(self, mlm, layer: int, hidden: torch.Tensor, previous: torch.Tensor | None,
               step: int) -> tuple[bool, float, torch.Tensor | None]:
        if self.threshold >= 1.0:
            return False, 0.0, None
        logits = None
        if self.measure == "softmax":
            logits = mlm.exit_logits(hidden, layer)
            confidence = softmax_confidence(logits)
        elif self.measure == "state":
            confidence = state_confidence(hidden, previous)
        else:
            confidence = self.meta.confidence(hidden)
        limit = decayed_threshold(self.threshold, step, self.max_steps, self.tau, self.decay_form)
        return confidence >= limit, confidence, logits


class Calm(GenerationMethod):
    """CALM as a generation method: one candidate per threshold of its measure (most conservative first), over the
    shared head or over anytime-trained exit adapters; the meta measure first trains its classifier."""

    grid_name = "threshold"

    def __init__(self, name: str, display: str, measure: str, exits: str = "shared") -> None:
        self.name, self.display, self.measure, self.exits = name, display, measure, exits
        self.rule_name = f"confidence: {measure}"

    @property
    def trains(self) -> bool:
        return self.exits == "anytime" or self.measure == "meta"

    def grid(self, preset: GenerationPreset) -> tuple[float, ...]:
        return tuple(preset.thresholds[self.measure])

    def order(self, grid: Sequence[float]) -> tuple[float, ...]:
        return tuple(sorted((check_threshold(t) for t in grid), reverse=True))

    def candidates(self, ctx: TrainingContext, grid: Sequence[float]) -> tuple[list[Candidate], dict[str, Any]]:
        from cee_bench.generation.model import MultiExitLM
        from cee_bench.generation.training import per_exit_outputs

        preset = ctx.preset
        view = ctx.anytime if self.exits == "anytime" else MultiExitLM(ctx.lm, ctx.exit_layers)
        meta, info = None, {}
        if self.measure == "meta":
            meta = MetaClassifier(ctx.hidden_size)

            def train() -> dict[str, Any]:
                _, argmax = per_exit_outputs(view, ctx.states)
                labels = consistency_labels(argmax)
                states = ctx.states.states[list(view.exit_layers[:-1])]
                trained = train_meta_classifier(states, labels, steps=preset.meta_steps, lr=preset.meta_lr,
                                                seed=ctx.seed, progress=ctx.progress)
                meta.load_state_dict(trained.state_dict())
                return {"meta_positive_rate": float(labels.float().mean()), "training_positions": ctx.states.size}

            settings = {"meta_steps": preset.meta_steps, "meta_lr": preset.meta_lr, "exits": self.exits,
                        **(ctx.anytime_settings if self.exits == "anytime" else {})}
            info.update(ctx.obtain("calm-meta", settings, {"meta": meta}, train))
            meta.eval()
        rules = [CalmRule(self.measure, t, preset.max_new_tokens, preset.tau, preset.decay[self.measure], meta=meta)
                 for t in grid]
        return [Candidate({"threshold": r.threshold}, view, r) for r in rules], info

    def metadata(self, preset: GenerationPreset) -> dict[str, Any]:
        exits = "shared final norm + LM head (no per-layer heads)" if self.exits == "shared" else (
            f"shared final norm + LM head after low-rank residual adapters (rank {preset.adapter_rank}) trained "
            "with CALM's weighted per-exit CE, backbone frozen")
        return {"measure": self.measure, "curve_parameter": "threshold", "exits": exits,
                "threshold_decay": {"form": preset.decay[self.measure], "tau": preset.tau,
                                    "code": "lambda*(0.9+0.1*exp(-tau*t/N))",
                                    "paper": "clip(0.9*lambda+0.1*exp(-tau*t/N))",
                                    "none": "lambda (state measure, as ConsistentEE-LLM's CALM baseline)"},
                "deviations": ["no anytime-prediction fine-tuning of the backbone (frozen)" if self.exits == "shared"
                               else "anytime-prediction training of exit adapters only (backbone frozen)"]}


# Plain "calm" is hidden-state saturation: the CALM baseline ConsistentEE-LLM itself runs (its mode 5, §2.3), and
# the one measure cheap enough on a 49k vocabulary (softmax needs the full head at every layer). CALM fine-tunes its
# exits with a weighted per-exit CE (§8.2); with the backbone frozen, the "-anytime" variants train the same low-rank
# exit adapters as ConsistentEE's stage 1 (one shared training per run).
METHOD = Calm("calm", "CALM (state)", "state")
SOFTMAX = Calm("calm-softmax", "CALM (softmax)", "softmax")
META = Calm("calm-meta", "CALM (classifier)", "meta")
ANYTIME = Calm("calm-anytime", "CALM (state, anytime exits)", "state", "anytime")
SOFTMAX_ANYTIME = Calm("calm-softmax-anytime", "CALM (softmax, anytime exits)", "softmax", "anytime")
