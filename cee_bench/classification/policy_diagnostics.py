"""What a round of ConsistentEE's training did, in figures a person can read off a record (issue 20): where the
held-out rows exit, how decided the policy is at each layer, how good each layer is, and whether the model collapsed
onto a constant predictor.

A *collapsed* model sends ≥ `COLLAPSE_SHARE` of the held-out rows to one layer and scores within noise of a constant
predictor there: it predicts one class on ≥ `COLLAPSE_SHARE` of the rows, or the paired-bootstrap 95% interval
(`cee_bench.intervals`) of its held-out main score minus the best constant predictor's (majority class for accuracy;
all-positive for F1) does not lie above 0 — the test issue 19 applies to degenerate tasks. Such a round can repeat
itself exactly and so pass the convergence test; the record calls it collapsed instead of converged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cee_bench.classification.exits import ScoreAbove, simulate
from cee_bench.classification.fit import per_layer_ce
from cee_bench.classification.metrics import METRICS
from cee_bench.classification.trace import Trace
from cee_bench.intervals import PairedBootstrap, interval, metric_samples

EXIT_THRESHOLD = 0.5  # the paper's inference rule: exit at the first layer whose P(exit) > 0.5
COLLAPSE_SHARE = 0.95
UNDECIDED = (0.1, 0.9)  # π strictly inside this range counts as undecided ("mid-share")
RESAMPLES = 1000


def constant_score(labels: np.ndarray, metric: str, num_labels: int) -> tuple[int, float]:
    """(class, score) of the best constant predictor of `labels` under `metric`."""
    scores = [METRICS[metric](np.full(len(labels), c), labels) for c in range(num_labels)]
    best = int(np.argmax(scores))
    return best, float(scores[best])


def above_constant(preds: np.ndarray, labels: np.ndarray, metric: str, num_labels: int) -> list[bool]:
    """For each row of `preds` ([P, N]): is it more than a constant predictor beyond noise, i.e. does it predict no
    class on ≥ `COLLAPSE_SHARE` of the rows, and is the lower end of the paired-bootstrap 95% interval of
    (score − best constant score) above 0?"""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if len(labels) == 0:
        return [False] * len(preds)
    best, _ = constant_score(labels, metric, num_labels)
    boot = PairedBootstrap(f"constant:{metric}", len(labels), RESAMPLES)
    samples = metric_samples(boot, metric, np.concatenate([preds, np.full((1, len(labels)), best)]), labels)
    one_class = [np.bincount(row, minlength=num_labels).max() >= COLLAPSE_SHARE * len(labels) for row in preds]
    return [not one_class[i] and interval(samples[i] - samples[-1])[0] > 0 for i in range(len(preds))]


def exit_layers(signals: dict[str, torch.Tensor]) -> torch.Tensor:
    """0-based exit layers of the inference rule (first P(exit) > 0.5) over stacked signals [N, L, ...]."""
    return simulate({"logits": signals["logits"].detach(), "exit_prob": signals["exit_prob"].detach()},
                    ScoreAbove("exit_prob", EXIT_THRESHOLD))


def _share(values: torch.Tensor) -> float | None:
    return float(values.float().mean()) if values.numel() else None


def policy_figures(exit_prob: torch.Tensor, exits: torch.Tensor) -> dict[str, list[float | None]]:
    """π per deciding layer over held-out rows (`exit_prob` [N, L], its last column the top layer's constant 1):
    mean, share in `UNDECIDED` and share above the exit threshold over every row, and the share in `UNDECIDED` over
    the rows that reach the layer under the inference rule (None where none does)."""
    pi = exit_prob[:, :-1].float()
    undecided = (pi > UNDECIDED[0]) & (pi < UNDECIDED[1])
    reached = exits.unsqueeze(1) >= torch.arange(pi.shape[1]).unsqueeze(0)
    return {"pi_mean": [round(float(x), 4) for x in pi.mean(0)],
            "pi_mid_share": [round(float(x), 4) for x in undecided.float().mean(0)],
            "pi_exit_share": [round(float(x), 4) for x in (pi > EXIT_THRESHOLD).float().mean(0)],
            "pi_mid_share_reached": [_round(_share(undecided[reached[:, i], i])) for i in range(pi.shape[1])],
            "reached_share": [round(float(x), 4) for x in reached.float().mean(0)]}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def histogram(layers: torch.Tensor, num_layers: int, *, base: int = 0) -> list[float]:
    """Share of rows per layer (`layers` counted from `base`)."""
    counts = torch.bincount(layers.long() - base, minlength=num_layers)[:num_layers].float()
    return [round(float(x), 4) for x in counts / max(len(layers), 1)]


def heldout_stats(trace: Trace, metric: str) -> dict[str, Any]:
    """A model's held-out figures under the inference rule: exit histogram (1-based layer order), accuracy, main
    score, mean exit layer, π per deciding layer (`policy_figures`), each layer's classifier alone (score, CE,
    whether above a constant predictor), the constant predictor's score, and whether the model has `collapsed`."""
    logits, labels = trace.signals["logits"], trace.labels
    num_layers, num_labels = trace.num_layers, logits.shape[-1]
    exits = exit_layers(trace.signals)
    preds = logits[torch.arange(len(trace)), exits].argmax(-1)
    layer_preds = logits.argmax(-1)
    labels_np = labels.numpy()
    score = METRICS[metric](preds.numpy(), labels_np)
    above = above_constant(np.concatenate([preds.numpy()[None], layer_preds.numpy().T]), labels_np, metric,
                           num_labels)
    exit_histogram = histogram(exits, num_layers)
    stats = {"exit_histogram": exit_histogram,
             "accuracy": float((preds == labels).float().mean()), "metric": metric, "score": score,
             "mean_exit_layer": float(exits.float().mean() + 1),
             **policy_figures(trace.signals["exit_prob"], exits),
             "layer_scores": [round(METRICS[metric](layer_preds[:, i].numpy(), labels_np), 4)
                              for i in range(num_layers)],
             "layer_ce": [round(float(x), 4) for x in per_layer_ce(logits, labels).mean(0)],
             "layer_above_constant": above[1:], "constant_score": constant_score(labels_np, metric, num_labels)[1],
             "above_constant": above[0]}
    stats["collapsed"] = collapsed(exit_histogram, above[0])
    return stats


def collapsed(exit_histogram: list[float], above: bool) -> bool:
    """The module docstring's test: ≥ `COLLAPSE_SHARE` of the rows at one layer and not above a constant predictor."""
    return max(exit_histogram) >= COLLAPSE_SHARE and not above


def layers_with(exit_histogram: list[float], share: float = 0.05) -> int:
    """How many layers receive at least `share` of the rows."""
    return sum(h >= share for h in exit_histogram)


def train_figures(ce: torch.Tensor, preds: torch.Tensor, labels: torch.Tensor, memorized: torch.Tensor,
                  exits: torch.Tensor) -> dict[str, list[float]]:
    """A round's training-set figures at its start (the eval-mode pass the policy trains on): per-layer CE and
    accuracy, the histogram of the memorized layer M, and where step 4 exits the rows (1-based layer order)."""
    num_layers = ce.shape[1]
    return {"train_layer_ce": [round(float(x), 4) for x in ce.float().mean(0)],
            "train_layer_accuracy": [round(float(x), 4)
                                     for x in (preds.cpu() == labels.unsqueeze(1)).float().mean(0)],
            "memorized_histogram": histogram(memorized, num_layers, base=1),
            "refine_exit_histogram": histogram(exits.cpu(), num_layers)}
