"""The simulated accuracy-speed curve of a method and its Table 3 operating points.

Operating points (docs/DESIGN.md): "no loss" = the largest saving whose score is at least the reference's; "le1_loss" =
the largest saving whose score is at least 0.99 × the reference's. They are *chosen* on the held-out split and
*reported* on the evaluation split, each number naming its split. A third point, `ltt90_le1` ("≤1% loss with 90%
confidence"), comes with a statistical guarantee instead of a point estimate, calibrated on its own slice of train:
see `choose_ltt_point`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cee_bench.classification.exits import ExitRule, simulate
from cee_bench.classification.metrics import layer_figures, scores
from cee_bench.classification.trace import Trace
from cee_bench.ltt import learn_then_test
from cee_bench.tasks import Task

OPERATING_POINTS = {"no_loss": 1.0, "le1_loss": 0.99}
LTT_POINT = "ltt90_le1"
LTT_LOSS = 0.01  # δ = LTT_LOSS × the reference score
LTT_EPSILON = 0.1  # 1 − ε = 90% confidence
LTT_BOUND = "binomial"  # the risks are disagreement indicators (0 or 1)


def rule_predictions(trace: Trace, rule: ExitRule) -> tuple[np.ndarray, np.ndarray]:
    """The simulated prediction and 1-based exit layer of every example under `rule`."""
    exits = simulate(trace.signals, rule)
    preds = trace.signals["logits"][np.arange(len(trace)), exits].argmax(-1).numpy()
    return preds, exits.numpy() + 1


def evaluate_rule(trace: Trace, rule: ExitRule, task: Task) -> tuple[dict[str, Any], np.ndarray]:
    """One curve point (scores and layer figures) and the 1-based exit layer of every example."""
    preds, exit_layers = rule_predictions(trace, rule)
    point = {"scores": scores(task.metrics, preds, trace.labels.numpy()), **layer_figures(exit_layers, trace.num_layers)}
    point["score"] = point["scores"][task.main_metric]
    return point, exit_layers


def sweep(grid: Sequence[Any], setting: Callable[[Any], tuple[Trace, ExitRule]], task: Task) -> list[dict[str, Any]]:
    """The curve: one simulated point per grid value; `setting(value)` gives the trace (of the model that value
    belongs to) and the exit rule."""
    return [{"threshold": value, **evaluate_rule(*setting(value), task)[0]} for value in grid]


def per_layer_scores(trace: Trace, task: Task) -> list[float]:
    """The main score of every layer's classifier used alone (a forced exit at that layer)."""
    labels = trace.labels.numpy()
    preds = trace.signals["logits"].argmax(-1).numpy()
    return [scores(task.metrics, preds[:, layer], labels)[task.main_metric] for layer in range(trace.num_layers)]


def choose_operating_points(select_curve: list[dict[str, Any]], reference: float) -> dict[str, dict[str, Any]]:
    """For each operating point, the threshold picked on the selection curve (index into the grid) and whether the
    target was met there; when no threshold meets it, the best-scoring one is kept and `met` is False."""
    chosen = {}
    for name, factor in OPERATING_POINTS.items():
        target = factor * reference
        passing = [i for i, p in enumerate(select_curve) if p["score"] >= target - 1e-12]
        if passing:
            index = max(passing, key=lambda i: (select_curve[i]["saved_layers"], select_curve[i]["score"]))
        else:
            index = max(range(len(select_curve)), key=lambda i: (select_curve[i]["score"], select_curve[i]["saved_layers"]))
        chosen[name] = {"grid_index": index, "threshold": select_curve[index]["threshold"], "target": target,
                        "met_on_selection": bool(passing), "selection_score": select_curve[index]["score"],
                        "selection_saved_layers": select_curve[index]["saved_layers"]}
    return chosen


def choose_ltt_point(candidate_preds: Sequence[np.ndarray], reference_preds: Sequence[np.ndarray],
                     reference: float | None, *, loss: float = LTT_LOSS, epsilon: float = LTT_EPSILON) -> dict[str, Any]:
    """The "≤1% loss with 90% confidence" point by Learn-then-Test on calibration predictions.

    `candidate_preds[j]` are candidate j's predictions on the calibration slice, `reference_preds[j]` the predictions
    its risk is taken against: the full-model record's (the model every Δ of the report compares with) where the
    recipe has them, else candidate j's own model at full depth. Candidates come most conservative first, in an order
    fixed without looking at calibration data (the method's grid order, `Method.ltt_order`), as fixed-sequence testing
    requires. The risk of an example is 1[candidate's prediction ≠ the reference's], δ = `loss` × `reference` (the
    reference's calibration *accuracy*), and the p-values are the exact binomial tail (`cee_bench/ltt.py`). The most
    aggressive candidate of the passing prefix is returned (`candidate`, an index into the lists), or None — fall back
    to the full depth (`fallback`) — when the first one fails. When δ falls outside (0, 1) (a reference accuracy of 0)
    or there are no calibration rows, nothing is tested: `empty` says why, a finding for the report, not a usage error.

    What is guaranteed: with probability ≥ 1 − ε over the calibration draw, the chosen candidate's disagreement rate
    with the reference, on the distribution the calibration slice was drawn from (GLUE train, not dev), is ≤ δ; an
    example can only turn wrong by changing its prediction, so its *accuracy* is at most δ below the reference's
    there. Not guaranteed: F1 (one changed prediction moves F1 by more than 1/n), dev text that differs from train's
    (SST-2: phrases vs sentences), nor — when the reference is the method's own top layer — anything against the full
    model. The guarantee holds only if nothing was fitted on the calibration rows (`classification/data.py`).
    """
    n = len(candidate_preds[0]) if len(candidate_preds) else 0
    ltt = {"delta": None, "epsilon": epsilon, "loss": loss, "bound": LTT_BOUND, "n": n,
           "risk": "1[prediction != the reference's prediction]", "mean_risks": [], "p_values": []}
    delta = None if reference is None else loss * reference
    if n == 0 or delta is None or not 0.0 < delta < 1.0:
        why = ("no calibration rows" if n == 0 else
               f"δ = {loss:g} × the reference's calibration accuracy {reference:.4g} = {delta:.4g} is outside (0, 1)"
               if delta is not None else "no reference accuracy on the calibration rows")
        return {"candidate": None, "fallback": False, "empty": why, "ltt": ltt}
    risks = [(np.asarray(c) != np.asarray(f)).astype(float).tolist() for c, f in zip(candidate_preds, reference_preds)]
    result = learn_then_test(risks, delta, epsilon, bound=LTT_BOUND)
    return {"candidate": result.chosen, "fallback": result.chosen is None,
            "ltt": {**ltt, "delta": delta, "mean_risks": result.mean_risks, "p_values": result.p_values}}
