"""The `ltt90_le1` operating point: Learn-then-Test over consistency risks, most aggressive passing candidate, or the
full depth when none passes; and the conservative-first orders it relies on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from cee_bench.classification.curve import choose_ltt_point
from cee_bench.ltt import binomial_p_value, learn_then_test
from cee_bench.registry import get_method

N = 1000
FULL = np.zeros(N, dtype=int)


def disagreeing(k: int) -> np.ndarray:
    """Predictions that differ from FULL on the first k examples."""
    preds = FULL.copy()
    preds[:k] = 1
    return preds


def test_picks_the_most_aggressive_passing_candidate_and_stops_at_the_first_failure() -> None:
    # δ = 0.01 × 0.9 = 0.009, ε = 0.1, n = 1000: 0-4 disagreements pass (P(Binom(1000, .009) ≤ 4) ≈ 0.05), 9 fails.
    candidates = [disagreeing(0), disagreeing(2), disagreeing(4), disagreeing(9), disagreeing(1)]
    chosen = choose_ltt_point(candidates, [FULL] * 5, reference=0.9)
    assert chosen["candidate"] == 2 and not chosen["fallback"]  # the 5th is never reached: fixed-sequence testing
    ltt = chosen["ltt"]
    assert ltt["delta"] == pytest.approx(0.009) and ltt["epsilon"] == 0.1 and ltt["n"] == N
    assert ltt["mean_risks"] == pytest.approx([0.0, 0.002, 0.004, 0.009, 0.001])
    assert ltt["p_values"][2] == pytest.approx(binom.cdf(4, N, 0.009))
    assert ltt["p_values"][2] <= 0.1 < ltt["p_values"][3]


def test_falls_back_to_the_full_depth_when_the_first_candidate_fails() -> None:
    chosen = choose_ltt_point([disagreeing(30), disagreeing(0)], [FULL, FULL], reference=0.9)
    assert chosen["candidate"] is None and chosen["fallback"]
    # too few examples to certify anything, even with no disagreement: (1 − δ)^n > ε
    small = choose_ltt_point([np.zeros(50, dtype=int)], [np.zeros(50, dtype=int)], reference=0.9)
    assert small["fallback"]


def test_risk_is_against_each_candidates_own_full_depth() -> None:
    """A candidate that matches its own model's full depth has zero risk, whatever the other models predict."""
    own_full = disagreeing(100)
    chosen = choose_ltt_point([FULL, own_full], [FULL, own_full], reference=0.9)
    assert chosen["ltt"]["mean_risks"] == [0.0, 0.0] and chosen["candidate"] == 1


def test_binomial_p_value_is_the_binomial_tail_and_far_tighter_than_hoeffding() -> None:
    assert binomial_p_value(0.0, 300, 0.009) == pytest.approx(0.991 ** 300)
    assert learn_then_test([[0.0] * 300], 0.009, 0.1, bound="binomial").chosen == 0
    assert learn_then_test([[0.0] * 300], 0.009, 0.1).chosen is None  # Hoeffding needs ~14,000 examples
    with pytest.raises(ValueError, match="binary"):
        learn_then_test([[0.5] * 10], 0.1, 0.1, bound="binomial")


def test_candidate_orders_are_conservative_first() -> None:
    pabee = get_method("pabee")
    assert [pabee.grid(6)[i] for i in pabee.ltt_order(pabee.grid(6))] == [0, 5, 4, 3, 2, 1]  # 0 = the full model
    pcee = get_method("pcee-bert")
    assert pcee.ltt_order(pcee.grid(6)) == list(range(len(pcee.grid(6))))  # τ = 0 (never exits) first
    cee = get_method("consistentee")
    assert [[2.5, 0.0, 1.0][i] for i in cee.ltt_order([2.5, 0.0, 1.0])] == [0.0, 1.0, 2.5]
    deebert = get_method("deebert")
    assert deebert.grid(6)[deebert.ltt_order(deebert.grid(6))[0]] == 0.0  # entropy < 0: never exits


def test_a_reference_of_zero_leaves_the_point_empty_and_says_why() -> None:
    """δ = 1% of a reference accuracy of 0 is outside (0, 1): a finding for the report, never a usage error."""
    chosen = choose_ltt_point([FULL], [FULL], reference=0.0)
    assert chosen["candidate"] is None and not chosen["fallback"]
    assert chosen["empty"].startswith("δ = 0.01 × the reference's calibration accuracy 0 = 0 is outside (0, 1)")
    assert choose_ltt_point([np.zeros(0, dtype=int)], [np.zeros(0, dtype=int)], reference=0.9)["empty"] == \
        "no calibration rows"


def test_risk_is_against_the_reference_predictions_given() -> None:
    """Against the full model's predictions a candidate pays for every row where it differs from them, even where it
    agrees with its own full depth."""
    reference = disagreeing(100)
    chosen = choose_ltt_point([FULL], [reference], reference=0.9)
    assert chosen["ltt"]["mean_risks"] == [0.1] and chosen["fallback"]
