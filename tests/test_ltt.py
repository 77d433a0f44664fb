"""Learn-then-Test on hand-made risk tables."""

from __future__ import annotations

import math

import pytest

from cee_bench.errors import UserError
from cee_bench.ltt import hoeffding_p_value, learn_then_test


def test_picks_the_most_aggressive_candidate_that_passes():
    # n = 100, δ = 0.3, ε = 0.1: a mean risk ≤ 0.3 − sqrt(ln(10)/200) ≈ 0.193 passes.
    risks = [[0.0] * 100, [0.1] * 100, [0.15] * 100, [0.25] * 100, [0.05] * 100]
    result = learn_then_test(risks, delta=0.3, epsilon=0.1)
    assert result.chosen == 2  # the 4th fails, and fixed-sequence testing stops there (the 5th is never used)
    assert result.p_values[2] == pytest.approx(math.exp(-2 * 100 * 0.15 ** 2))


def test_falls_back_to_the_full_model_when_nothing_passes():
    result = learn_then_test([[0.5] * 20, [0.9] * 20], delta=0.2, epsilon=0.05)
    assert result.chosen is None


def test_p_value_is_one_when_the_risk_exceeds_delta():
    assert hoeffding_p_value(0.4, 50, 0.3) == 1.0


@pytest.mark.parametrize("delta,epsilon", [(0.0, 0.1), (1.0, 0.1), (0.1, 0.0), (0.1, 1.5)])
def test_delta_and_epsilon_must_be_inside_the_unit_interval(delta, epsilon):
    with pytest.raises(UserError):
        learn_then_test([[0.1]], delta=delta, epsilon=epsilon)
