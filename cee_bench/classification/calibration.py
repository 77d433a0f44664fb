"""Post-hoc temperature scaling per exit and the figures that judge it (held-out NLL, 15-bin ECE).

Right-Tool (docs/METHODS.md §6.3) divides exit k's logits by a scalar T_k fitted to minimise NLL on data the model did
not train on. Temperature leaves every argmax unchanged, so it moves only *when* a confidence rule exits, never *what*
an exit answers. Kept apart from any one method because any confidence-based exit rule can use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ECE_BINS = 15
# Bounds on T: a held-out set the exit classifies perfectly pushes T towards 0 (NLL → 0) without limit, and a
# constant exit pushes it towards infinity; both would only make the threshold sweep degenerate.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2


class Temperatures(nn.Module):
    """One temperature per exit, kept as a buffer so it travels with the model (device moves, copies) but no
    optimiser ever touches it; all ones until a calibration fills it in."""

    values: torch.Tensor

    def __init__(self, num_exits: int) -> None:
        super().__init__()
        self.register_buffer("values", torch.ones(num_exits))

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(float(t) for t in self.values)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / T); `logits` [N, C]."""
    return float(nn.functional.cross_entropy(logits.float() / temperature, labels))


def ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, bins: int = ECE_BINS) -> float:
    """Expected calibration error: Σ_b |accuracy_b − confidence_b|·n_b/N over equal-width bins (lo, hi] of the
    max probability."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    confidence, pred = probs.max(-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += float(in_bin.float().mean() * (correct[in_bin].mean() - confidence[in_bin].mean()).abs())
    return total


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T minimising NLL of softmax(logits / T) on (`logits` [N, C], `labels` [N]).

    LBFGS on log T (so T stays positive) from T = 1; like the reference, which keeps the best NLL starting from 1.0,
    T = 1 is returned when the fit does not improve on it.
    """
    logits, labels = logits.detach().float(), labels.detach()
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = float(log_t.detach().clamp(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)).exp())
    if not math.isfinite(fitted) or nll(logits, labels, fitted) > nll(logits, labels, 1.0):
        return 1.0
    return fitted


def fit_temperatures(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """One temperature per exit, each fitted independently (`logits` [N, K, C])."""
    return [fit_temperature(logits[:, k], labels) for k in range(logits.shape[1])]


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, temperatures: list[float]) -> dict[str, list[float]]:
    """Per exit: the temperature and NLL / ECE at T = 1 and at the fitted T (`logits` [N, K, C])."""
    exits = range(logits.shape[1])
    return {
        "temperature": [float(t) for t in temperatures],
        "nll_before": [nll(logits[:, k], labels) for k in exits],
        "nll_after": [nll(logits[:, k], labels, temperatures[k]) for k in exits],
        "ece_before": [ece(logits[:, k], labels) for k in exits],
        "ece_after": [ece(logits[:, k], labels, temperatures[k]) for k in exits],
    }
