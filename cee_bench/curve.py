"""The simulated accuracy-speed curve of a method and its Table 3 operating points.

Operating points (DESIGN.md): "no loss" = the largest saving whose score is at least the reference's; "le1_loss" =
the largest saving whose score is at least 0.99 × the reference's. They are *chosen* on the held-out split and
*reported* on the evaluation split, each number naming its split.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cee_bench.exits import ExitRule, simulate
from cee_bench.metrics import layer_figures, scores
from cee_bench.tasks import Task
from cee_bench.trace import Trace

OPERATING_POINTS = {"no_loss": 1.0, "le1_loss": 0.99}


def evaluate_rule(trace: Trace, rule: ExitRule, task: Task) -> tuple[dict[str, Any], np.ndarray]:
    """One curve point (scores and layer figures) and the 1-based exit layer of every example."""
    exits = simulate(trace.signals, rule)
    logits = trace.signals["logits"][np.arange(len(trace)), exits]
    preds = logits.argmax(-1).numpy()
    exit_layers = exits.numpy() + 1
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
