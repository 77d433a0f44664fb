"""Scores and speed figures, named without ambiguity (docs/DESIGN.md, "Numbers").

GLUE's two metrics (accuracy; F1 of the positive class) are the formulas `evaluate`'s glue metric takes from
scikit-learn. They are written here, in numpy, because the report also needs them on every resample of a paired
bootstrap as one matrix product (`cee_bench.intervals`), which a per-call metric cannot give, and the two forms must
be the same definitions; tests/classification/test_metrics.py checks both against scikit-learn.
"""

from __future__ import annotations

import numpy as np


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(preds) == np.asarray(labels)).mean()) if len(labels) else 0.0


def f1_binary(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE scores MRPC and QQP."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = int(((preds == 1) & (labels == 1)).sum())
    fp = int(((preds == 1) & (labels != 1)).sum())
    fn = int(((preds != 1) & (labels == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


METRICS = {"accuracy": accuracy, "f1": f1_binary}


def scores(metric_names: tuple[str, ...], preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](preds, labels) for name in metric_names}


def layer_figures(exit_layers: np.ndarray, num_layers: int) -> dict[str, float]:
    """Mean exit layer E[l] (1-based), saved layers 1 - E[l]/L (Table 3's column) and layer speed-up L/E[l]."""
    mean_exit = float(np.asarray(exit_layers).mean()) if len(exit_layers) else float(num_layers)
    return {"mean_exit_layer": mean_exit, "saved_layers": 1.0 - mean_exit / num_layers,
            "layer_speedup": num_layers / mean_exit}
