"""Exit rules as causal, row-wise functions over per-layer signals, and their replay over a whole trace.

A rule is a small object with `start(n)` (its per-row state), `step(state, layer, signals) -> (state, exit)` and
`reads`, the signals `step` looks at (none: the rule never exits early, and real early exit computes no head below the
top layer).
The very same `step` runs in two places: vectorised over every example of a trace (the simulated curve) and inside
real early-exit inference, where rows that exit leave the batch (`state` is then indexed by the rows that stay).
Because every operation is row-wise, both give identical decisions — the property the tests check.

Layers are 0-based here; the top layer always answers (the BERxiT `i < L` guard), whatever the rule says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from cee_bench.errors import UserError

State = dict[str, torch.Tensor]
Signals = dict[str, torch.Tensor]
LOGITS = frozenset({"logits"})  # what a rule that tests the exit heads' predictions reads


class ExitRule(Protocol):
    @property
    def reads(self) -> frozenset[str]: ...

    def start(self, n: int, device: torch.device) -> State: ...

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]: ...


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Natural-log entropy of softmax(logits) (DeeBERT's post-2021 form)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass(frozen=True)
class EntropyBelow:
    """DeeBERT: exit at the first layer whose prediction entropy is below S."""

    reads: ClassVar[frozenset[str]] = LOGITS

    threshold: float

    def __post_init__(self) -> None:
        if not self.threshold >= 0:  # written so that NaN is refused too
            raise UserError(f"entropy threshold must be >= 0, got {self.threshold}")

    def start(self, n: int, device: torch.device) -> State:
        return {}

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]:
        return state, entropy(signals["logits"]) < self.threshold


@dataclass(frozen=True)
class Patience:
    """PABEE: exit once `t` consecutive layers agree with the one before; t = 0 means the full model."""

    reads: ClassVar[frozenset[str]] = LOGITS

    patience: int

    def __post_init__(self) -> None:
        if self.patience < 0 or int(self.patience) != self.patience:
            raise UserError(f"patience must be a whole number >= 0 (0 = full model), got {self.patience}")

    def start(self, n: int, device: torch.device) -> State:
        return {"prev": torch.full((n,), -1, device=device), "count": torch.zeros(n, dtype=torch.long, device=device)}

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]:
        pred = signals["logits"].argmax(-1)
        same = pred == state["prev"]
        count = torch.where(same, state["count"] + 1, torch.zeros_like(state["count"]))
        exit_now = count >= self.patience if self.patience > 0 else torch.zeros_like(same)
        return {"prev": pred, "count": count}, exit_now


@dataclass(frozen=True)
class ConsecutiveConfident:
    """PCEE-BERT: exit after `patience` consecutive layers whose normalised entropy H/ln C is below `threshold`."""

    reads: ClassVar[frozenset[str]] = LOGITS

    threshold: float
    patience: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise UserError(f"normalised-entropy threshold must be in [0, 1], got {self.threshold}")
        if not self.patience >= 1 or int(self.patience) != self.patience:
            raise UserError(f"PCEE patience must be a whole number >= 1, got {self.patience}")

    def start(self, n: int, device: torch.device) -> State:
        return {"count": torch.zeros(n, dtype=torch.long, device=device)}

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]:
        logits = signals["logits"]
        confident = entropy(logits) / math.log(logits.shape[-1]) < self.threshold
        count = torch.where(confident, state["count"] + 1, torch.zeros_like(state["count"]))
        return {"count": count}, count >= self.patience


@dataclass(frozen=True)
class MaxProbAtLeast:
    """Right-Tool: exit at the first layer whose temperature-scaled max probability reaches c."""

    reads: ClassVar[frozenset[str]] = LOGITS

    threshold: float
    temperatures: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise UserError(f"probability threshold must be in [0, 1], got {self.threshold}")
        if not all(0 < t < math.inf for t in self.temperatures):
            raise UserError(f"temperatures must be positive, got {list(self.temperatures)}")

    def start(self, n: int, device: torch.device) -> State:
        return {}

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]:
        temperature = self.temperatures[layer] if self.temperatures else 1.0
        probs = torch.softmax(signals["logits"].float() / temperature, dim=-1)
        return state, probs.max(-1).values >= self.threshold


@dataclass(frozen=True)
class _OneScore:
    """A stateless rule on one per-layer score (`key`) against a threshold; subclasses say which side exits."""

    key: str
    threshold: float

    @property
    def reads(self) -> frozenset[str]:
        return frozenset({self.key})

    def start(self, n: int, device: torch.device) -> State:
        return {}

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]:
        return state, self.exits(signals[self.key].reshape(-1))

    def exits(self, score: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class ScoreBelow(_OneScore):
    """BERxiT: exit when a per-layer score (the LTE output u_i, a sigmoid) is below τ ∈ [0, 1]."""

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise UserError(f"score threshold must be in [0, 1], got {self.threshold}")

    def exits(self, score: torch.Tensor) -> torch.Tensor:
        return score < self.threshold


@dataclass(frozen=True)
class ScoreAbove(_OneScore):
    """ConsistentEE: exit when a per-layer probability (the policy's P(exit)) is above the threshold (0.5)."""

    def exits(self, score: torch.Tensor) -> torch.Tensor:
        return score > self.threshold


@dataclass(frozen=True)
class Never:
    """The full model: every example runs to the top layer."""

    reads: ClassVar[frozenset[str]] = frozenset()

    def start(self, n: int, device: torch.device) -> State:
        return {}

    def step(self, state: State, layer: int, signals: Signals) -> tuple[State, torch.Tensor]:
        return state, torch.zeros(signals["logits"].shape[0], dtype=torch.bool, device=signals["logits"].device)


def simulate(signals: Signals, rule: ExitRule) -> torch.Tensor:
    """0-based exit layer of every row of a trace (`signals[key]`: [N, L, ...]) under `rule`."""
    n, num_layers = signals["logits"].shape[:2]
    device = signals["logits"].device
    state = rule.start(n, device)
    exit_layer = torch.full((n,), num_layers - 1, dtype=torch.long, device=device)
    decided = torch.zeros(n, dtype=torch.bool, device=device)
    for layer in range(num_layers - 1):
        state, exit_now = rule.step(state, layer, {k: v[:, layer] for k, v in signals.items()})
        exit_layer = torch.where(exit_now & ~decided, torch.full_like(exit_layer, layer), exit_layer)
        decided |= exit_now
    return exit_layer
