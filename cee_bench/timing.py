"""Wall-clock figures as optimum-benchmark reports them, the interval of a measured speed-up, and peak memory: one
place for both wings (classification's `runtime.measure_latency`, generation's curve points) and the benchmarks.

- `latency_stats`: count, mean, p50/p90/p95/p99, sample standard deviation and the raw values of one timed phase;
- `speedup`, `speedup_interval`: the median over rounds of a ratio of sums (full model ÷ early exit) and its 95%
  two-level bootstrap interval (the paired units, examples, batches or prompts, drawn with the report's
  `intervals.PairedBootstrap`, then the rounds);
- `PeakMemory`: peak resident memory growth of a block on the CPU (Linux: the kernel's high-water mark, reset before
  the block), peak allocated memory on CUDA;
- `Clock`: elapsed milliseconds of a call, CUDA events on a GPU, `perf_counter_ns` on the CPU.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cee_bench.intervals import PairedBootstrap, interval

NOISE_LIMIT = 1.05  # a realised fraction above this is noise: skipping layers cannot beat the layer speed-up
PERCENTILES = (50, 90, 95, 99)


def latency_stats(values_ms: Sequence[float]) -> dict[str, Any]:
    """{count, mean, p50, p90, p95, p99, stdev, raw} of one phase's times in milliseconds. Percentiles interpolate
    linearly between order statistics (numpy's default); `stdev` is the sample standard deviation (0 for one value);
    `raw` keeps the values in the order given."""
    raw = [float(v) for v in values_ms]
    if not raw:
        raise ValueError("no timings to summarise")
    points = np.percentile(raw, PERCENTILES)
    return {"count": len(raw), "mean": statistics.fmean(raw),
            **{f"p{p}": float(value) for p, value in zip(PERCENTILES, points)},
            "stdev": statistics.stdev(raw) if len(raw) > 1 else 0.0, "raw": raw}


def speedup(numerator: Sequence, denominator: Sequence) -> float:
    """The median over rounds of a round's Σ numerator ÷ Σ denominator; both are [rounds, units] times (or [units]
    for one round), e.g. the full model's and early exit's per example."""
    top, bottom = _rounds(numerator, denominator)
    return float(np.median(top.sum(1) / bottom.sum(1)))


def speedup_interval(numerator: Sequence, denominator: Sequence, key: str) -> list[float]:
    """[low, high]: the 95% percentile-bootstrap interval of `speedup`, two-level: each resample draws the units
    (examples, batches or prompts, each keeping its times on both sides together) and then the rounds, both with
    replacement, and recomputes the statistic. So the interval carries which examples were timed and the clock's noise
    between rounds; with one unit (a single batch) it is the rounds' alone, with one round the units' alone. The draws
    are fixed by `key` and the shape (the units' are `PairedBootstrap(key, units)`'s), so a rerun replays them."""
    top, bottom = _rounds(numerator, denominator)
    rounds, units = top.shape
    boot = PairedBootstrap(key, units)
    ratios = boot.sums(top) / boot.sums(bottom)  # [rounds, resamples]
    drawn = np.random.default_rng(boot.seed).integers(0, rounds, size=(rounds, boot.resamples))
    return list(interval(np.median(np.take_along_axis(ratios, drawn, axis=0), axis=0)))


def _rounds(numerator: Sequence, denominator: Sequence) -> tuple[np.ndarray, np.ndarray]:
    top, bottom = np.atleast_2d(np.asarray(numerator, float)), np.atleast_2d(np.asarray(denominator, float))
    if top.shape != bottom.shape or top.ndim != 2 or top.size == 0:
        raise ValueError("a speed-up needs the same [rounds, units] times on both sides")
    return top, bottom


class Clock:
    """Elapsed milliseconds of a callable: CUDA events (with synchronisation) on a GPU, perf_counter_ns on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        started = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - started) / 1e6


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


CUDA_PEAK = "cuda max_memory_allocated"
RESIDENT_PEAK = "VmHWM (reset before the block)"
LIFETIME_PEAK = "ru_maxrss growth (a lower bound)"


class PeakMemory:
    """`with PeakMemory(device) as peak: ...`, then `peak.mb`: how far the block raised memory above where it began.

    CUDA: `torch.cuda.max_memory_allocated` after resetting the peak, minus what was allocated before. CPU on Linux:
    the kernel's resident high-water mark (VmHWM), reset before the block by writing 5 to /proc/self/clear_refs,
    minus the resident size before (exact, and nothing runs beside the measured code). Elsewhere: the growth of the
    process's lifetime peak (`resource.getrusage`), which reads 0 when an earlier phase (training) peaked higher.
    `source` names which of the three is read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.source = CUDA_PEAK if device.type == "cuda" else RESIDENT_PEAK if _resettable() else LIFETIME_PEAK
        self.mb = 0.0
        self._start = 0

    def __enter__(self) -> PeakMemory:
        if self.source == CUDA_PEAK:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.source == RESIDENT_PEAK:
            _CLEAR_REFS.write_text("5")
            self._start = _status_kb("VmRSS") * 1024
        else:
            self._start = _lifetime_peak_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.source == CUDA_PEAK:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.source == RESIDENT_PEAK:
            peak = _status_kb("VmHWM") * 1024
        else:
            peak = _lifetime_peak_bytes()
        self.mb = max(0, peak - self._start) / 2**20


@functools.cache
def _resettable() -> bool:
    """Whether this process can reset its resident high-water mark (Linux ≥ 4.0, /proc mounted)."""
    try:
        _CLEAR_REFS.write_text("5")
        return _status_kb("VmHWM") > 0
    except (OSError, ValueError):
        return False


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"{field} not in {_STATUS}")


def _lifetime_peak_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows: no peak to read
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kilobytes on Linux
