"""The hand-written GLUE metrics, and their vectorised forms over bootstrap resamples, against scikit-learn: the
library `evaluate`'s glue metric computes accuracy and F1 with."""

from __future__ import annotations

import numpy as np
import pytest

from cee_bench.classification.metrics import accuracy, f1_binary
from cee_bench.intervals import PairedBootstrap, metric_samples

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (the `test` extra) is the reference")


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Random predictions at several class balances, plus the corners: all negative (no true positive), all
    positive, perfect, and every prediction wrong."""
    rng = np.random.default_rng(0)
    cases = []
    for n, p_pred, p_label in [(50, 0.5, 0.5), (200, 0.9, 0.7), (37, 0.1, 0.3), (400, 0.68, 0.68)]:
        cases.append(((rng.random(n) < p_pred).astype(int), (rng.random(n) < p_label).astype(int)))
    labels = (rng.random(60) < 0.5).astype(int)
    cases += [(np.zeros(60, int), labels), (np.ones(60, int), labels), (labels.copy(), labels), (1 - labels, labels)]
    return cases


@pytest.mark.parametrize("preds, labels", _cases())
def test_accuracy_and_f1_equal_scikit_learns(preds, labels):
    assert accuracy(preds, labels) == pytest.approx(sklearn_metrics.accuracy_score(labels, preds), abs=1e-12)
    assert f1_binary(preds, labels) == pytest.approx(
        sklearn_metrics.f1_score(labels, preds, pos_label=1, zero_division=0.0), abs=1e-12)


@pytest.mark.parametrize("preds, labels", _cases()[:4])
def test_the_bootstrap_forms_equal_scikit_learn_on_every_resample(preds, labels):
    """The report's intervals compute the metrics on every resample at once: each resample's value must be
    scikit-learn's on that resample's examples."""
    boot = PairedBootstrap("test", len(labels), resamples=30)
    indices = np.concatenate(list(boot.indices()))
    for name, reference in (("accuracy", sklearn_metrics.accuracy_score),
                            ("f1", lambda y, p: sklearn_metrics.f1_score(y, p, zero_division=0.0))):
        samples = metric_samples(boot, name, preds, labels)
        expected = [reference(labels[idx], preds[idx]) for idx in indices]
        np.testing.assert_allclose(samples, expected, atol=1e-12, err_msg=name)
