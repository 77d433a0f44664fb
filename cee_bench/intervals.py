"""Paired bootstrap over evaluation examples: the noise every Table 3 cell carries (DESIGN.md, "Numbers come with
their noise").

Why paired: the resamples of a task are drawn from a generator seeded by the task's name and its number of
examples only, so every method (and every seed) of that task is scored on the *same* resampled example sets. A
difference between two methods is then taken resample by resample, and its interval reflects how the two disagree
on examples, not the much larger spread of each score alone.

Every statistic here is a sum over examples of per-example quantities (correct, true/false positives, exit layers),
so one gather per chunk of resamples gives all of them at once; chunks keep memory at `chunk × n` indices even for
QQP's 40k dev rows, and the generator replays the same chunks on every call.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


class PairedBootstrap:
    """The fixed resamples of one task's `n` evaluation examples (`resamples` draws with replacement)."""

    def __init__(self, key: str, n: int, resamples: int = DEFAULT_RESAMPLES, chunk: int = 100) -> None:
        if n < 1 or resamples < 1:
            raise ValueError("a bootstrap needs at least one example and one resample")
        self.key, self.n, self.resamples, self.chunk = key, n, resamples, chunk
        self.seed = zlib.crc32(f"{key}:{n}".encode())  # stable across processes, unlike hash()

    def indices(self) -> Iterator[np.ndarray]:
        """The resampled example indices, chunk by chunk (int32 arrays of shape (chunk, n)), the same on every call."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.resamples, self.chunk):
            yield rng.integers(0, self.n, size=(min(self.chunk, self.resamples - start), self.n), dtype=np.int32)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-resample sums of per-example `values` of shape (..., n): shape (..., resamples)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1] != self.n:
            raise ValueError(f"expected {self.n} examples, got {values.shape[-1]}")
        return np.concatenate([values[..., idx].sum(-1) for idx in self.indices()], axis=-1)


def _accuracy(boot: PairedBootstrap, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return boot.sums(preds == labels) / boot.n


def _f1(boot: PairedBootstrap, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F1 of the positive class on every resample (0 where a resample has no true positive, as `metrics.f1_binary`)."""
    pos, true = preds == 1, labels == 1
    tp, fp, fn = boot.sums(np.stack([pos & true, pos & ~true, ~pos & true], axis=-2)).swapaxes(0, -2)
    denom = 2 * tp + fp + fn
    return np.where(tp > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


METRIC_SAMPLES: dict[str, Callable[[PairedBootstrap, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": _accuracy, "f1": _f1}


def metric_samples(boot: PairedBootstrap, metric: str, preds: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """The task's main metric on every resample: preds of shape (..., n) give (..., resamples); None for a metric
    with no vectorised form."""
    fn = METRIC_SAMPLES.get(metric)
    return None if fn is None else fn(boot, np.asarray(preds), np.asarray(labels))


def saved_layer_samples(boot: PairedBootstrap, exit_layers: np.ndarray, num_layers: int) -> np.ndarray:
    """Saved layers 1 − E[l]/L on every resample."""
    return 1.0 - boot.sums(exit_layers) / (boot.n * num_layers)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap samples."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)
