"""Timing statistics on synthetic values (`cee_bench.timing`): percentiles as numpy interpolates them, the speed-up
as the median round's ratio of sums, its two-level bootstrap interval covering the true ratio about 95% of the time,
and peak memory seeing an allocation."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import torch

from cee_bench import timing


def test_latency_stats_of_known_values():
    values = [float(v) for v in range(1, 102)]  # 1..101: every percentile falls on a value
    stats = timing.latency_stats(values[::-1])
    assert stats["count"] == 101 and stats["mean"] == 51
    assert (stats["p50"], stats["p90"], stats["p95"], stats["p99"]) == (51, 91, 96, 100)
    assert stats["stdev"] == pytest.approx(np.std(values, ddof=1))
    assert stats["raw"] == values[::-1]  # in the order given
    one = timing.latency_stats([4.0])
    assert one["stdev"] == 0 and one["p99"] == one["p50"] == 4.0
    with pytest.raises(ValueError):
        timing.latency_stats([])


def test_speedup_is_the_median_rounds_ratio_of_sums():
    full = np.array([[10.0, 10.0], [30.0, 10.0], [10.0, 20.0]])  # rounds × units
    early = np.array([[5.0, 5.0], [10.0, 10.0], [10.0, 5.0]])
    assert timing.speedup(full, early) == pytest.approx(2.0)  # round ratios 2, 2, 2
    assert timing.speedup([[9.0, 1.0], [1.0, 1.0], [4.0, 4.0]], [[1.0, 1.0]] * 3) == pytest.approx(4.0)
    assert timing.speedup([6.0, 2.0], [2.0, 2.0]) == pytest.approx(2.0)  # one round
    with pytest.raises(ValueError):
        timing.speedup([[1.0, 2.0]], [[1.0]])


def test_speedup_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    """Units whose early-exit time is the full time ÷ 2 with unit-level spread, timed in 3 noisy rounds: the
    population ratio of sums is 2, and the interval of repeated draws should hold it about 95% of the time."""
    rng = np.random.default_rng(0)
    draws, covered = 200, 0
    for draw in range(draws):
        base = rng.lognormal(2.0, 0.5, size=60)  # per-example cost
        factor = rng.normal(0.5, 0.1, size=60)  # per-example share of it that early exit keeps
        full = base * rng.normal(1, 0.03, size=(3, 60))
        early = base * factor * rng.normal(1, 0.03, size=(3, 60))
        truth = 1 / 0.5  # E[full] / E[early] with factor independent of base
        low, high = timing.speedup_interval(full, early, f"draw-{draw}")
        covered += low <= truth <= high
    assert 0.88 <= covered / draws <= 0.99


def test_speedup_interval_of_one_unit_comes_from_the_rounds_and_is_replayed():
    full = np.array([[10.0], [12.0], [11.0], [30.0], [10.5]])
    early = np.full((5, 1), 5.0)
    low, high = timing.speedup_interval(full, early, "one batch")
    assert 2.0 <= low <= timing.speedup(full, early) <= high <= 6.0 and low < high
    assert timing.speedup_interval(full, early, "one batch") == [low, high]  # fixed draws


@pytest.mark.skipif(timing.PeakMemory(torch.device("cpu")).source != timing.RESIDENT_PEAK,
                    reason="the resident high-water mark cannot be reset here")
def test_peak_memory_sees_an_allocation_freed_before_the_block_ends():
    with timing.PeakMemory(torch.device("cpu")) as peak:
        # 64 MiB of fresh pages, touched, then given back: mapped directly, so no allocator can serve them from memory
        # the process already holds (after a run, torch's allocations may reuse freed resident memory)
        block, chunk = mmap.mmap(-1, 64 * 2**20), b"\1" * 2**20
        for _ in range(64):
            block.write(chunk)
        block.close()
    assert 60 <= peak.mb <= 100
    with timing.PeakMemory(torch.device("cpu")) as quiet:
        pass
    assert quiet.mb < 8
