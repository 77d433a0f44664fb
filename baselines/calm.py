"""CALM (Schuster et al., NeurIPS 2022) for decoder-only LMs: confidence measures, decaying threshold, meta classifier.

Follows METHODS.md §8, adapted from T5's decoder to a Llama decoder:
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
- exit when confidence ≥ λ_t; λ = 1 means "never exit" (the full model), so Learn-then-Test can fall back to it.
Deviation: CALM fine-tunes the whole model with a weighted per-exit loss first (§8.2); here the backbone stays the
pretrained checkpoint (frozen), as for every method in the generation track. Recorded in `method_meta`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cee_bench.errors import UserError

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
                          batch_size: int = 512, seed: int = 0) -> MetaClassifier:
    """Fit the meta classifier on cached frozen states [L−1, N, H] with class-balanced CE (positives weighted by
    the negative rate and vice versa), averaged over exits — `loss_fn_meta_cls` of the reference code."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    meta = MetaClassifier(states.shape[-1])
    optimiser = torch.optim.Adam(meta.parameters(), lr=lr)
    flat_states = states.reshape(-1, states.shape[-1])
    flat_labels = labels.reshape(-1)
    positive_rate = flat_labels.float().mean().clamp(1e-3, 1 - 1e-3)
    class_weights = torch.stack([positive_rate, 1 - positive_rate])  # weight[0]=neg gets pos rate, and v.v.
    for _ in range(steps):
        batch = torch.randint(0, flat_labels.numel(), (min(batch_size, flat_labels.numel()),), generator=generator)
        loss = nn.functional.cross_entropy(meta(flat_states[batch]), flat_labels[batch], weight=class_weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return meta.eval()


@dataclass
class CalmRule:
    """CALM's exit decision at one exit layer (implements `cee_bench.generation.decoding.ExitRule`)."""

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
