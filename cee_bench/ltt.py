"""Learn-then-Test calibration of a global exit threshold (CALM, docs/METHODS.md §8.6): statistics both kinds use, so
it lives in the shell.

Generic over methods: give candidates ordered from the most conservative to the most aggressive, and for each the
per-example risk D ∈ [0, 1] on calibration data (generation: 1 − ROUGE-L against the full model's output, *textual
consistency*, no labels needed; classification's `ltt90_le1` point: disagreement with the same model at full depth,
`classification/curve.py`). With (δ, ε), the chosen candidate satisfies E[D] ≤ δ with probability ≥ 1 − ε
over the calibration draw. Hoeffding p-values with fixed-sequence testing: walk the candidates in order, reject
H_j: R(λ_j) > δ while p_j ≤ ε, stop at the first failure, return the last rejected one — or none (the full model).
When every risk is 0 or 1 (a disagreement indicator), `bound="binomial"` uses the exact binomial-tail p-value
P(Binom(n, δ) ≤ n·R̂) instead (Bates et al., "Learn then Test", §3): also valid, and far tighter for small δ — with
δ = 0.009 Hoeffding needs n ≥ ln(1/ε)/(2δ²) ≈ 14,000 examples before anything can pass, the binomial tail ~260.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cee_bench.errors import UserError


def check_delta_epsilon(delta: float, epsilon: float) -> None:
    """δ and ε must lie strictly inside (0, 1)."""
    for name, value in (("delta", delta), ("epsilon", epsilon)):
        if not 0.0 < value < 1.0:
            raise UserError(f"{name} must be in (0, 1), got {value}")


def hoeffding_p_value(mean_risk: float, n: int, delta: float) -> float:
    """Super-uniform p-value for H: R > δ from the mean of n risks in [0, 1]: exp(−2n·max(0, δ − R̂)²)."""
    return math.exp(-2 * n * max(0.0, delta - mean_risk) ** 2)


def binomial_p_value(mean_risk: float, n: int, delta: float) -> float:
    """Exact p-value for H: R > δ from n binary risks with mean R̂: P(Binom(n, δ) ≤ n·R̂)."""
    from scipy.stats import binom

    return float(binom.cdf(round(mean_risk * n), n, delta))


P_VALUES = {"hoeffding": hoeffding_p_value, "binomial": binomial_p_value}


@dataclass(frozen=True)
class LttResult:
    """Index of the chosen candidate (None = no candidate passes: use the full model) and the evidence."""

    chosen: int | None
    mean_risks: list[float]
    p_values: list[float]


def learn_then_test(risks: Sequence[Sequence[float]], delta: float, epsilon: float,
                    bound: str = "hoeffding") -> LttResult:
    """Fixed-sequence LTT over per-candidate, per-example risks (candidates most conservative first); `bound` names
    the p-value (`P_VALUES`; "binomial" needs binary risks)."""
    check_delta_epsilon(delta, epsilon)
    p_value = P_VALUES[bound]
    mean_risks, p_values = [], []
    chosen = None
    testing = True
    for index, values in enumerate(risks):
        if not values:
            raise UserError("Learn-then-Test needs at least one calibration example")
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise ValueError("risks must lie in [0, 1]")
        if bound == "binomial" and any(v not in (0, 1) for v in values):
            raise ValueError("the binomial bound needs binary risks")
        mean = sum(values) / len(values)
        p = p_value(mean, len(values), delta)
        mean_risks.append(mean)
        p_values.append(p)
        if testing and p <= epsilon:
            chosen = index
        else:
            testing = False
    return LttResult(chosen, mean_risks, p_values)
