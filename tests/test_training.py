"""The training loop's learning-rate schedule is transformers' `get_linear_schedule_with_warmup`, the reference
scripts' own, and gives the values the hand-written schedule it replaced gave."""

from __future__ import annotations

import pytest
import torch

from cee_bench.training import Stage, schedule


def _rates(stage: Stage, total: int, constant: bool = False) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=stage.lr)
    scheduler = schedule(optimizer, stage, total, constant)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def _replaced(stage: Stage, total: int) -> list[float]:
    """The schedule the loop used before: `LambdaLR` with this hand-written linear decay."""
    warmup = int(stage.warmup_ratio * total)
    return [stage.lr * ((s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
            for s in range(total)]


@pytest.mark.parametrize("total", [1, 7, 87, 250])
def test_the_linear_schedule_equals_the_one_it_replaced(total):
    """Every smoke and cpu stage (and every paper stage but PCEE-BERT's) has no warm-up: the same rate at every
    step."""
    stage = Stage(epochs=3, batch_size=16, lr=5e-5)
    assert _rates(stage, total) == pytest.approx(_replaced(stage, total), rel=1e-12, abs=0)


def test_warm_up_starts_from_zero_as_the_reference_scripts_do():
    """With a warm-up (PCEE-BERT's paper stage) transformers' schedule starts at 0 and reaches the peak one step
    later than the replaced one did; after the warm-up both decay alike."""
    stage, total = Stage(epochs=1, batch_size=16, lr=2e-5, warmup_ratio=0.1), 100
    rates, old = _rates(stage, total), _replaced(stage, total)
    assert rates[0] == 0.0 and rates[10] == pytest.approx(stage.lr)
    assert rates[1:11] == pytest.approx(old[:10], rel=1e-12)
    assert rates[10:] == pytest.approx(old[10:], rel=1e-12)


def test_a_constant_rate():
    stage = Stage(epochs=1, batch_size=4, lr=1e-3)
    assert _rates(stage, 5, constant=True) == [1e-3] * 5
