"""Temperature scaling and ECE (cee_bench.classification.calibration) on synthetic logits with a known
miscalibration."""

from __future__ import annotations

import pytest
import torch

from cee_bench.classification.calibration import (Temperatures, calibration_report, ece, fit_temperature,
                                                  fit_temperatures, nll)


def synthetic(scale: float, n: int = 2000, accuracy: float = 0.75, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits right `accuracy` of the time, with margin `scale`: large scale = overconfident."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    right = torch.rand(n, generator=g) < accuracy
    pred = torch.where(right, labels, 1 - labels)
    margin = scale * (0.5 + torch.rand(n, generator=g))
    logits = torch.zeros(n, 2)
    logits[torch.arange(n), pred] = margin
    return logits, labels


@pytest.mark.parametrize("scale, direction", [(6.0, "over"), (0.3, "under")])
def test_fitted_temperature_lowers_nll_and_ece(scale: float, direction: str) -> None:
    logits, labels = synthetic(scale)
    t = fit_temperature(logits, labels)
    before = (nll(logits, labels), ece(logits, labels))
    after = (nll(logits, labels, t), ece(logits, labels, t))
    print(f"\n{direction}confident: T={t:.3f}  NLL {before[0]:.4f} -> {after[0]:.4f}  "
          f"ECE {before[1]:.4f} -> {after[1]:.4f}")
    assert (t > 1) if direction == "over" else (t < 1)
    assert after[0] < before[0]
    assert after[1] < before[1]


def test_fit_keeps_t_one_when_nothing_to_gain() -> None:
    # perfectly calibrated in expectation: p(correct) = sigmoid(margin) drawn per row
    g = torch.Generator().manual_seed(1)
    n = 4000
    margin = 3 * torch.rand(n, generator=g)
    correct = torch.rand(n, generator=g) < torch.sigmoid(margin)
    labels = torch.randint(0, 2, (n,), generator=g)
    pred = torch.where(correct, labels, 1 - labels)
    logits = torch.zeros(n, 2)
    logits[torch.arange(n), pred] = margin
    t = fit_temperature(logits, labels)
    assert 0.85 < t < 1.15
    assert nll(logits, labels, t) <= nll(logits, labels, 1.0)


def test_ece_by_hand() -> None:
    # confidences 0.9 (right) and 0.6 (wrong) fall in different bins: ECE = 0.5·|1−0.9| + 0.5·|0−0.6| = 0.35
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    labels = torch.tensor([0, 1])
    assert ece(logits, labels) == pytest.approx(0.35, abs=1e-6)


def test_temperatures_buffer_and_report() -> None:
    temps = Temperatures(3)
    assert temps.as_tuple() == (1.0, 1.0, 1.0)
    assert not list(temps.parameters())  # never seen by an optimiser
    assert "values" in temps.state_dict()
    over, labels = synthetic(6.0, n=500)
    logits = torch.stack([over, over / 6, over * 2], dim=1)
    fitted = fit_temperatures(logits, labels)
    report = calibration_report(logits, labels, fitted)
    assert all(a <= b + 1e-9 for a, b in zip(report["nll_after"], report["nll_before"]))
    assert len(report["ece_after"]) == 3 and report["temperature"] == fitted
