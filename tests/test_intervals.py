"""The two-level paired bootstrap (`cee_bench.intervals`): its 95% interval covers the truth about 95% of the time on a
known two-level distribution — seeds *and* examples — where an examples-only or unwidened one falls short."""

from __future__ import annotations

import numpy as np
import pytest

from cee_bench.intervals import PairedBootstrap, SeedDraws, WholeSet, interval, seed_factor, two_level


def _draw(rng: np.random.Generator, seeds: int, n: int, seed_sd: float, example_sd: float, noise_sd: float):
    """Per-example values of a crossed design: value[s, i] = μ (= 0) + seed effect + example effect + noise."""
    return (rng.normal(0, seed_sd, seeds)[:, None] + rng.normal(0, example_sd, n)[None, :]
            + rng.normal(0, noise_sd, (seeds, n)))


def _coverage(seeds: int, seed_sd: float, example_sd: float, noise_sd: float, draws: int = 150, n: int = 80,
              widen: bool = True) -> float:
    rng = np.random.default_rng(7)
    covered = 0
    for draw in range(draws):
        values = _draw(rng, seeds, n, seed_sd, example_sd, noise_sd)
        boot = PairedBootstrap(f"draw{draw}", n, 400)
        per_seed = boot.sums(values) / n  # (seeds, resamples): each seed's mean on every example resample
        draws_ = SeedDraws(f"draw{draw}", list(range(seeds)), 400)
        if not widen:
            draws_.factor = 1.0
        low, high = interval(two_level(per_seed, draws_))
        covered += low <= 0.0 <= high
    return covered / draws


@pytest.mark.parametrize("seeds, seed_sd, example_sd, noise_sd", [
    (3, 1.0, 0.5, 1.0),   # seeds dominate (the committed SST-2 Δs)
    (5, 0.3, 1.0, 1.0),   # both matter
    (8, 1.0, 1.0, 0.0),   # seeds and shared example effects only
])
def test_two_level_interval_covers_about_95_percent(seeds, seed_sd, example_sd, noise_sd):
    coverage = _coverage(seeds, seed_sd, example_sd, noise_sd)
    assert 0.90 <= coverage <= 1.0, coverage


def test_without_the_seed_level_or_its_widening_the_interval_falls_short():
    """What the report did before: examples only (one seed's worth of noise) — and a plain percentile bootstrap over
    3 seeds — both cover the truth far less often than 95% when seeds differ."""
    assert _coverage(3, 1.0, 0.5, 1.0, widen=False) < 0.85
    rng = np.random.default_rng(3)
    covered = 0
    for draw in range(100):
        values = _draw(rng, 3, 80, 1.0, 0.5, 1.0)
        boot = PairedBootstrap(f"e{draw}", 80, 300)
        low, high = interval((boot.sums(values) / 80).mean(0))  # seeds averaged, examples resampled only
        covered += low <= 0.0 <= high
    assert covered / 100 < 0.6


def test_one_seed_covers_the_examples_only():
    """With one seed there is no seed level: the interval is the examples', and covers that seed's own mean."""
    rng = np.random.default_rng(5)
    covered = 0
    for draw in range(150):
        effect = rng.normal(0, 1.0)
        values = effect + rng.normal(0, 1.0, (1, 80))
        boot = PairedBootstrap(f"one{draw}", 80, 400)
        low, high = interval(two_level(boot.sums(values) / 80, SeedDraws("one", [42], 400)))
        covered += low <= effect <= high
    assert 0.88 <= covered / 150 <= 0.99


def test_seed_draws_are_paired_and_the_widening_is_hesterbergs():
    a, b = SeedDraws("sst2", [42, 43, 44], 50), SeedDraws("sst2", [42, 43, 44], 50)
    assert np.array_equal(a.weights, b.weights) and np.allclose(a.weights.sum(1), 1.0)
    assert not np.array_equal(a.weights, SeedDraws("mrpc", [42, 43, 44], 50).weights)
    assert seed_factor(1) == 1.0 and seed_factor(3) == pytest.approx(np.sqrt(1.5) * 4.3027 / 1.95996, rel=1e-3)
    # a statistic that does not vary with the examples varies with the seeds alone, about a t-interval's width
    per_seed = np.repeat(np.array([[0.042], [0.062], [-0.007]]), 50, axis=1)
    low, high = interval(two_level(per_seed, a))
    assert (high - low) / 2 > 0.05  # the committed SST-2 Δs: ± about 9 points, not the examples' 2.3


def test_the_whole_set_gives_the_point_estimate_in_the_same_code():
    values = np.arange(12, dtype=float).reshape(2, 6)
    assert WholeSet(6).sums(values)[:, 0].tolist() == values.sum(1).tolist()
