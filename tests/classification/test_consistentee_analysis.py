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


def policy_record(path, rows_per_alpha: int = 2) -> dict:
    """A ConsistentEE record with the per-round diagnostics of two α (3 layers), as `cee-bench run` writes it."""
    def row(r: int, collapsed: bool) -> dict:
        return {"round": r, "score": 0.8, "exit_histogram": [0.2, 0.3, 0.5], "pi_mean": [0.4, 0.5],
                "pi_mid_share": [0.6, 0.7], "pi_mid_share_reached": [0.6, None], "train_layer_ce": [0.7, 0.5, 0.3],
                "memorized_histogram": [0.5, 0.2, 0.3], "collapsed": collapsed, "converged": r == 2,
                "policy_loss": [0.1], "refine_loss": [0.2]}
    rec = {"schema": 1, "task": "rte", "method": "consistentee", "seed": 42, "kind": "classification",
           "method_display": "ConsistentEE",
           "method_meta": {"estimator": "on-policy", "converged": {"0": True, "1.5": False},
                           "collapsed": {"0": False, "1.5": True},
                           "log": {"rounds": {"1.5": [row(r, True) for r in range(1, rows_per_alpha + 1)],
                                              "0": [row(r, False) for r in range(1, rows_per_alpha + 1)]}}}}
    (path / "rte").mkdir(parents=True, exist_ok=True)
    (path / "rte" / "consistentee__seed42.json").write_text(json.dumps(rec))
    return rec


def test_policy_figure_from_a_record(tmp_path) -> None:
    policy_record(tmp_path)
    result = CliRunner().invoke(analysis.analyze_app, ["policy", "--task", "rte", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "rte" / "analysis"
    assert (out / "analysis_policy_consistentee_seed42.png").stat().st_size > 0
    numbers = json.loads((out / "analysis_policy_consistentee_seed42.json").read_text())
    assert list(numbers["rounds"]) == ["0", "1.5"] and numbers["estimator"] == "on-policy"
    assert numbers["collapsed"] == {"0": False, "1.5": True}
    assert "policy_loss" not in numbers["rounds"]["0"][0]
    assert "True" in result.output  # the table says which rounds collapsed


def test_policy_figure_needs_a_record_with_diagnostics(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(analysis.analyze_app, ["policy", "--task", "rte", "--output-dir", str(tmp_path)])
    assert isinstance(result.exception, UserError) and "no consistentee record" in str(result.exception)
    rec = policy_record(tmp_path)
    for rows in rec["method_meta"]["log"]["rounds"].values():
        for row in rows:
            del row["pi_mean"]
    (tmp_path / "rte" / "consistentee__seed42.json").write_text(json.dumps(rec))
    result = runner.invoke(analysis.analyze_app, ["policy", "--task", "rte", "--output-dir", str(tmp_path)])
    assert isinstance(result.exception, UserError) and "predates the policy diagnostics" in str(result.exception)
    result = runner.invoke(analysis.analyze_app, ["policy", "--task", "rte", "--method", "pabee",
                                                  "--output-dir", str(tmp_path)])
    assert isinstance(result.exception, UserError) and "unknown method 'pabee'" in str(result.exception)

