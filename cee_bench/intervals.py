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

Why two levels: a cell's seeds are separate trainings, and their spread is noise too — often the larger part (the
committed SST-2 records: ConsistentEE's Δ per seed +4.2, +6.2, −0.7, against an example-level ± of 2.3). So every
interval of the report is a *two-level* paired bootstrap (`two_level`): each resample draws the seeds with replacement
(`SeedDraws`, seeded by the task and the seed list, so every method with the same seeds gets the same draws) and the
examples with replacement (`PairedBootstrap`), and averages the drawn seeds' statistics on the drawn examples. Seeds
and examples are crossed, not nested (every seed is scored on the same dev set), so one example draw serves every
seed of a resample: that is Owen's pigeonhole bootstrap for a crossed design, which is slightly conservative.
A percentile bootstrap over a handful of seeds is much too narrow (the bootstrap of a mean of S values has variance
(S − 1)/S · s²/S and no t-tail), so the seed level is widened by Hesterberg's small-sample factor
√(S/(S − 1)) · t_{S−1} / z (`seed_factor`): each resample's departure from the all-seed mean on its examples is scaled
by it. With 3 seeds the factor is 2.7, which turns per-seed Δs of +4.2, +6.2, −0.7 into about ±9, as a t-interval
would; with one seed there is no seed level, and the interval covers the examples only (captions say so).
`tests/test_intervals.py` checks that coverage is ≈ 95% over repeated draws of a known two-level distribution.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable, Iterator, Sequence

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


class WholeSet:
    """The un-resampled set as a one-resample "bootstrap" (every example once): the functions below, given it, give the
    point estimate that their resamples scatter around, in the same code."""

    resamples = 1

    def __init__(self, n: int) -> None:
        self.n = n

    def sums(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1] != self.n:
            raise ValueError(f"expected {self.n} examples, got {values.shape[-1]}")
        return values.sum(-1)[..., None]


def _accuracy(boot: PairedBootstrap | WholeSet, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return boot.sums(preds == labels) / boot.n


def _f1(boot: PairedBootstrap | WholeSet, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F1 of the positive class on every resample (0 where a resample has no true positive, as `metrics.f1_binary`)."""
    pos, true = preds == 1, labels == 1
    tp, fp, fn = np.moveaxis(boot.sums(np.stack([pos & true, pos & ~true, ~pos & true], axis=-2)), -2, 0)
    denom = 2 * tp + fp + fn
    return np.where(tp > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


METRIC_SAMPLES: dict[str, Callable[[PairedBootstrap | WholeSet, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": _accuracy, "f1": _f1}


def metric_samples(boot: PairedBootstrap | WholeSet, metric: str, preds: np.ndarray,
                   labels: np.ndarray) -> np.ndarray | None:
    """The task's main metric on every resample: preds of shape (..., n) give (..., resamples); None for a metric
    with no vectorised form."""
    fn = METRIC_SAMPLES.get(metric)
    return None if fn is None else fn(boot, np.asarray(preds), np.asarray(labels))


def saved_layer_samples(boot: PairedBootstrap | WholeSet, exit_layers: np.ndarray, num_layers: int) -> np.ndarray:
    """Saved layers 1 − E[l]/L on every resample."""
    return 1.0 - boot.sums(exit_layers) / (boot.n * num_layers)


def seed_factor(seeds: int, level: float = LEVEL) -> float:
    """Hesterberg's widening of a percentile bootstrap over `seeds` values: √(S/(S − 1)) · t_{S−1} / z at `level`
    (1 for a single seed, which has no seed level to widen)."""
    if seeds < 2:
        return 1.0
    from scipy.stats import norm, t

    quantile = 1 - (1 - level) / 2
    return math.sqrt(seeds / (seeds - 1)) * float(t.ppf(quantile, seeds - 1)) / float(norm.ppf(quantile))


class SeedDraws:
    """The fixed seed-level resamples of one task and seed list: per resample, the weight of each seed (how often it
    is drawn ÷ the number of seeds). Keyed by the task and the seeds, so every method with the same seeds of a task
    is paired at the seed level as `PairedBootstrap` pairs it at the example level."""

    def __init__(self, key: str, seeds: Sequence[Any], resamples: int = DEFAULT_RESAMPLES) -> None:
        if not seeds or resamples < 1:
            raise ValueError("seed draws need at least one seed and one resample")
        self.seeds, self.resamples = list(seeds), resamples
        rng = np.random.default_rng(zlib.crc32(f"{key}:seeds:{';'.join(map(str, self.seeds))}".encode()))
        count = len(self.seeds)
        self.weights = rng.multinomial(count, np.full(count, 1 / count), size=resamples) / count  # (resamples, S)
        self.factor = seed_factor(count)


def two_level(per_seed: np.ndarray, draws: SeedDraws) -> np.ndarray:
    """The two-level bootstrap samples of a mean over seeds: `per_seed[s, b]` is seed s's statistic on example
    resample b (the same example draw for every seed; a seed-level-only statistic is constant along b; any axes
    between the two are kept, e.g. the points of a curve). Each
    resample is the all-seed mean on its examples plus the drawn seeds' departure from it, widened by `seed_factor`."""
    per_seed = np.asarray(per_seed, dtype=float)
    if per_seed.shape[0] != len(draws.seeds) or per_seed.shape[-1] != draws.resamples:
        raise ValueError(f"expected {len(draws.seeds)} seeds × ... × {draws.resamples} resamples, "
                         f"got {per_seed.shape}")
    pooled = per_seed.mean(0)
    if len(draws.seeds) == 1:
        return pooled
    drawn = np.einsum("bs,s...b->...b", draws.weights, per_seed)
    return pooled + draws.factor * (drawn - pooled)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap samples."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)
