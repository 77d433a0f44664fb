"""The analysis commands' pure parts, the reward figure from stored records, and their bad-input handling."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from cee_bench.classification import analysis
from cee_bench.errors import UserError


def test_forgetting_events_count_correct_to_wrong_transitions() -> None:
    correct = torch.tensor([[1, 0, 1, 1],
                            [0, 0, 1, 0],
                            [1, 0, 1, 1],
                            [0, 1, 1, 1]], dtype=torch.bool)  # [epochs, instances]
    assert analysis.forgetting_events(correct).tolist() == [2, 0, 0, 1]


def test_spearman_is_nan_for_a_constant_side() -> None:
    assert math.isnan(analysis.spearman(torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0])))
    assert analysis.spearman(torch.tensor([1, 2, 3]), torch.tensor([0.1, 0.5, 0.9])) == pytest.approx(1.0)


def test_per_layer_figures_weighted_view_and_exit_layer_view() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]],
                           [[0.0, 2.0], [0.0, 2.0]]])  # [N=2, L=2, C=2]
    labels = torch.tensor([0, 1])
    losses, accuracies = analysis.per_layer_figures(logits, labels, None)
    assert accuracies == [1.0, 0.5]
    losses, accuracies = analysis.per_layer_figures(logits, labels, torch.tensor([0, 0]))
    assert accuracies[0] == 1.0 and math.isnan(accuracies[1]) and math.isnan(losses[1])


def record(method: str, points: list[tuple[float, float, float]]) -> dict:
    return {"schema": 1, "task": "rte", "method": method, "seed": 42, "kind": "classification",
            "curve": [{"threshold": a, "score": s, "saved_layers": 1 - 1 / x, "layer_speedup": x}
                      for a, s, x in points]}


def test_reward_figure_from_records(tmp_path) -> None:
    (tmp_path / "rte").mkdir()
    for method in ("consistentee", "consistentee-vanilla"):
        (tmp_path / "rte" / f"{method}__seed42.json").write_text(
            json.dumps(record(method, [(0.08, 0.55, 2.0), (0.005, 0.6, 1.2)])))
    result = CliRunner().invoke(analysis.analyze_app, ["reward", "--task", "rte", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rte" / "analysis" / "analysis_reward.png").stat().st_size > 0
    curves = json.loads((tmp_path / "rte" / "analysis" / "analysis_reward.json").read_text())["curves"]
    assert [p["threshold"] for p in curves["consistentee"]] == [0.005, 0.08]
    from cee_bench.results import load_results

    assert len(load_results(tmp_path)) == 2  # the figure's numbers do not pollute the results store


def test_reward_figure_without_the_ablation_record_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="consistentee-vanilla"):
        analysis.reward_curves([record("consistentee", [(0.1, 0.5, 1.5)]) | {"task": "rte"}], "rte")


def test_layers_rejects_a_negative_alpha_before_anything(tmp_path) -> None:
    result = CliRunner().invoke(analysis.analyze_app, ["layers", "--task", "rte", "--alpha", "-1",
                                                       "--output-dir", str(tmp_path / "out")])
    assert isinstance(result.exception, UserError) and "alpha" in str(result.exception)
    assert not (tmp_path / "out").exists()
