"""Paired bootstrap over evaluation examples: the noise every Table 3 cell carries (docs/DESIGN.md, "Numbers come with
their noise").

Why paired: the resamples of a task are drawn from a generator seeded by the task's name and its number of
examples only, so every method (and every seed) of that task is scored on the *same* resampled example sets. A
difference between two methods is then taken resample by resample, and its interval reflects how the two disagree
on examples, not the much larger spread of each score alone.

Every statistic here is a sum over examples of per-example quantities (correct, true/false positives, exit layers),
so one matrix product of the per-example values with each chunk of resample counts gives all of them at once;
chunks keep memory to a few million entries even for QQP's 40k dev rows, and the generator replays the same chunks
on every call.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


class PairedBootstrap:
    """The fixed resamples of one task's `n` evaluation examples (`resamples` draws with replacement)."""

    def __init__(self, key: str, n: int, resamples: int = DEFAULT_RESAMPLES, chunk: int | None = None) -> None:
        if n < 1 or resamples < 1:
            raise ValueError("a bootstrap needs at least one example and one resample")
        # the chunk depends on n only, so every caller of a task replays the very same draws
        self.key, self.n, self.resamples = key, n, resamples
        self.chunk = chunk or max(1, min(100, 2_000_000 // n))
        self.seed = zlib.crc32(f"{key}:{n}".encode())  # stable across processes, unlike hash()

    def indices(self) -> Iterator[np.ndarray]:
        """The resampled example indices, chunk by chunk (int32 arrays of shape (chunk, n)), the same on every call."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.resamples, self.chunk):
            yield rng.integers(0, self.n, size=(min(self.chunk, self.resamples - start), self.n), dtype=np.int32)

    def counts(self) -> Iterator[np.ndarray]:
        """How often each example is drawn in each resample, chunk by chunk (shape (chunk, n))."""
        for idx in self.indices():
            rows = idx.shape[0]
            flat = (idx + (np.arange(rows, dtype=np.int64)[:, None] * self.n)).ravel()
            yield np.bincount(flat, minlength=rows * self.n).reshape(rows, self.n).astype(np.float64)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-resample sums of per-example `values` of shape (..., n): shape (..., resamples). One matrix product
        per chunk serves every row of `values` (exact: the sums are of small integers in float64)."""
        values = np.asarray(values)
        if values.shape[-1] != self.n:
            raise ValueError(f"expected {self.n} examples, got {values.shape[-1]}")
        flat = values.reshape(-1, self.n).astype(np.float64)
        out = np.concatenate([flat @ counts.T for counts in self.counts()], axis=1)
        return out.reshape(*values.shape[:-1], self.resamples)


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
