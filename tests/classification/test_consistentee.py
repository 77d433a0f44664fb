"""ConsistentEE's pure pieces and its training rounds on tiny BERT models built from config (seconds, no download)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cee_bench.classification import consistentee as cee
from cee_bench.classification import estimators as est
from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import simulate
from cee_bench.classification.fit import FitContext
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.classification.runtime import predict
from cee_bench.classification.trace import compute_trace
from cee_bench.errors import UserError
from cee_bench.progress import Progress
from cee_bench.registry import get_method
from cee_bench.training import Stage

L = 3


def tiny_model(seed: int = 0) -> MultiExitModel:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=L, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = MultiExitModel(BertModel(config), 2, pooling="cls", pooler="shared", dropout=0.1,
                           signal_fn=cee.policy_signals)
    model.extras = cee.METHOD.build_extras(model)
    return model.eval()


def tiny_data(n: int, seed: int) -> Encoded:
    """Label 1 iff token 7 occurs, so the tiny model can learn something in a few steps."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=g))
        row = [1] + torch.randint(10, 100, (length,), generator=g).tolist() + [2]
        label = int(torch.rand(1, generator=g) < 0.5)
        if label:
            row[1] = 7
        ids.append(row)
        labels.append(label)
    return Encoded(ids, None, torch.tensor(labels))


# --- memorized layer (Eq. 7) --------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, expected", [
    ([1, 1, 1, 1], 1),  # correct everywhere: memorized at the first layer
    ([0, 1, 1, 1], 2),
    ([0, 0, 0, 0], 4),  # never correct: M = L
    ([1, 1, 0, 1], 4),  # forgotten at layer 3, relearned at the top: memorized only from layer 4
    ([1, 0, 1, 1], 3),  # forgotten at layer 2, relearned from layer 3 on
    ([1, 1, 1, 0], 4),  # wrong at the top: M = L however early it was right
    ([0, 0, 0, 1], 4),  # right only at the top
])
def test_memorized_layer_on_hand_made_tables(row: list[int], expected: int) -> None:
    labels = torch.tensor([1, 0])
    # the same correctness row expressed once with gold label 1 and once with gold label 0
    preds = torch.tensor([row, [1 - c for c in row]])
    assert cee.memorized_layer(preds, labels).tolist() == [expected, expected]


def test_memorized_layer_multiclass_wrong_labels_count_as_wrong() -> None:
    preds = torch.tensor([[2, 1, 0], [0, 0, 0]])
    assert cee.memorized_layer(preds, torch.tensor([0, 0])).tolist() == [3, 1]


# --- rewards (Eq. 3 and Eq. 4) ------------------------------------------------------------------------------------

def test_vanilla_reward_is_minus_ce_minus_alpha_t() -> None:
    ce, layer = torch.tensor([0.5, 0.1]), torch.tensor([2, 6])
    assert torch.allclose(cee.reward(ce, layer, 0.1, num_layers=6), torch.tensor([-0.5 - 0.2, -0.1 - 0.6]))


def test_hardness_reward_scales_the_depth_cost_by_one_minus_m_over_l() -> None:
    ce, layer, memorized = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([3, 3, 3]), torch.tensor([1, 3, 6])
    got = cee.reward(ce, layer, 0.1, num_layers=6, memorized=memorized)
    expected = torch.tensor([-0.5 - 0.1 * (5 / 6) * 3, -0.5 - 0.1 * 0.5 * 3, -0.5])
    assert torch.allclose(got, expected)
    # easy instances pay more per layer than hard ones; the hardest pay nothing
    assert got[0] < got[1] < got[2]


# --- trajectories --------------------------------------------------------------------------------------------------

def test_greedy_sampling_exits_at_the_first_confident_layer() -> None:
    logits = torch.tensor([[-1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], [0.5, -1.0, 1.0]])
    exits = est.sample_greedy_epsilon(logits, 5, epsilon=0.0)
    assert exits.shape == (3, 5)
    assert exits.tolist() == [[1] * 5, [3] * 5, [0] * 5]  # 3 = the top layer (no deciding layer exited)


def test_exploration_spreads_exits() -> None:
    exits = est.sample_greedy_epsilon(torch.full((1, 5), -10.0), 4000, epsilon=1.0, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(exits.reshape(-1), minlength=6).float() / exits.numel()
    # coin flips at every layer: exit at layer i with probability 2^-(i+1), the top with 2^-5
    assert torch.allclose(share, torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125]), atol=0.02)


def test_trajectory_log_prob_matches_the_definition() -> None:
    logits = torch.tensor([[0.3, -0.7]])
    p = torch.sigmoid(logits[0])
    exits = torch.tensor([[0, 1, 2]])
    got = est.trajectory_log_prob(logits, exits)[0]
    expected = torch.stack([p[0].log(), (1 - p[0]).log() + p[1].log(), (1 - p[0]).log() + (1 - p[1]).log()])
    assert torch.allclose(got, expected)


def expected_reward(policies: torch.nn.ModuleList, features: torch.Tensor, rewards: torch.Tensor) -> float:
    """E_π[R] summed exactly over every trajectory of every instance."""
    with torch.no_grad():
        p = torch.sigmoid(cee.policy_logits(policies, features))
    reach = torch.ones(len(features))
    total = torch.zeros(len(features))
    for layer in range(p.shape[1]):
        total += reach * p[:, layer] * rewards[:, layer]
        reach = reach * (1 - p[:, layer])
    return float((total + reach * rewards[:, -1]).mean())


def test_policy_gradient_raises_expected_reward_on_a_bandit() -> None:
    """Two kinds of instance over 3 layers: 'easy' ones are right at layer 1, 'hard' ones only at the top. The
    hardness-guided reward makes exiting at 1 best for the easy ones and going to the top best for the hard ones."""
    torch.manual_seed(0)
    n, hidden = 64, 8
    kind = torch.arange(n) % 2  # 0 easy, 1 hard
    features = torch.randn(n, L - 1, hidden) * 0.1 + kind.view(n, 1, 1).float()
    ce = torch.where(kind.view(n, 1) == 0, torch.tensor([[0.1, 0.1, 0.1]]), torch.tensor([[2.0, 2.0, 0.1]]))
    memorized = torch.where(kind == 0, torch.tensor(1), torch.tensor(L))
    alpha = 0.2
    layers = torch.arange(1, L + 1).expand(n, L)
    rewards = cee.reward(ce, layers, alpha, num_layers=L, memorized=memorized.unsqueeze(1))
    policies = torch.nn.ModuleList([cee.PolicyNetwork(hidden) for _ in range(L - 1)])
    stage = cee.PolicyStage(epochs=1, batch_size=n, lr=1e-2, samples=8, epsilon=0.2, alphas=(alpha,))
    before = expected_reward(policies, features, rewards)
    optimiser = torch.optim.Adam(policies.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = cee.policy_loss(cee.policy_logits(policies, features), ce, memorized, alpha, stage, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = expected_reward(policies, features, rewards)
    best = float(rewards.max(1).values.mean())
    assert after > before + 0.3
    assert after > best - 0.1
    greedy = est.sample_greedy_epsilon(cee.policy_logits(policies, features).detach(), 1, 0.0)[:, 0]
    optimal = torch.where(kind == 0, torch.tensor(0), torch.tensor(L - 1))
    assert (greedy == optimal).float().mean() >= 0.9


# --- settings and registry -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"alphas": (-0.1,)}, "alpha"), ({"alphas": ()}, "empty"), ({"samples": 0}, "K"), ({"samples": 1}, "K"),
    ({"epsilon": 1.5}, "epsilon"), ({"epsilon": -0.1}, "epsilon"), ({"max_rounds": 0}, "max_rounds"),
    ({"max_rounds": 2.5}, "max_rounds"), ({"exit_tolerance": -1.0}, "exit_tolerance"),
    ({"score_tolerance": float("nan")}, "score_tolerance"),
])
def test_bad_settings_are_user_errors(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cee.PolicyStage(epochs=1, batch_size=8, lr=1e-3, **changes)


def test_registry_has_both_rewards_and_the_rule_checks_alpha() -> None:
    assert get_method("consistentee").reward_kind == "hardness"
    assert get_method("consistentee-vanilla").reward_kind == "vanilla"
    with pytest.raises(UserError, match="alpha"):
        get_method("consistentee").rule(None, -0.5)
    for name in ("consistentee", "consistentee-vanilla"):
        for preset in ("smoke", "cpu", "paper"):
            assert set(get_method(name).stages[preset]) == {"init", "policy", "refine"}


def test_cli_rejects_a_negative_alpha_before_writing(tmp_path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "cee_bench", "run", "--task", "rte", "--methods", "consistentee",
                           "--grid", "-0.1", "--output-dir", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "alpha" in proc.stderr
    assert not out.exists()


# --- inference and training on a tiny model --------------------------------------------------------------------------

def test_real_early_exit_equals_simulation_from_the_trace() -> None:
    model = tiny_model()
    data = tiny_data(40, seed=1)
    pooled = cee.collect_states(model, data, 40).pooled
    with torch.no_grad():  # centre each policy between two rows, so about half the rows exit at each layer
        for layer, policy in enumerate(model.extras["policy"]):
            policy.net[2].bias -= torch.quantile(policy(pooled[:, layer]), 0.5)
    rule = cee.METHOD.rule(model, 0.02)
    trace = compute_trace(model, data, split="dev", batch_size=7)
    sim_exits = simulate(trace.signals, rule)
    sim_preds = trace.signals["logits"][torch.arange(len(data)), sim_exits].argmax(-1)
    assert len(set(sim_exits.tolist())) > 1
    for batch_size in (1, 7):
        preds, exits = predict(model, rule, data, batch_size)
        assert exits.tolist() == sim_exits.tolist()
        assert preds.tolist() == sim_preds.tolist()


def fit_context(model: MultiExitModel, **policy: object) -> FitContext:
    settings = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "samples": 4, "alphas": (0.0, 0.3), "max_rounds": 2,
                **policy}
    stages = {"init": Stage(epochs=1, batch_size=8, lr=1e-3), "policy": cee.PolicyStage(**settings),
              "refine": Stage(epochs=1, batch_size=8, lr=1e-3)}
    return FitContext(model, tiny_data(48, seed=2), tiny_data(24, seed=3), stages, seed=0, device="cpu",
                      progress=Progress.quiet(), eval_batch_size=16)


def params_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_policy_stage_freezes_the_backbone_and_refinement_freezes_the_policy() -> None:
    model = tiny_model()
    ctx = fit_context(model)
    policy, rest = model.extras["policy"], cee._non_policy_params(model)
    states = cee.collect_states(model, ctx.train, 16)
    assert states.pooled.shape == (48, L - 1, 32) and states.ce.shape == (48, L)
    before_rest, before_policy = [p.detach().clone() for p in rest], params_of(policy)
    cee.train_policy(ctx, states, cee.memorized_layer(states.preds, ctx.train.labels), 0.1, 0)
    assert same(before_rest, rest) and not same(before_policy, params_of(policy))
    before_rest, before_policy = [p.detach().clone() for p in rest], params_of(policy)
    cee.train_refine(ctx, None, 0.1, cee.policy_exits(model, states.pooled))
    assert same(before_policy, params_of(policy)) and not same(before_rest, rest)


def test_released_variant_trains_the_policy_in_refinement_and_runs_one_round() -> None:
    model = tiny_model()
    ctx = fit_context(model, released_variant=True, alphas=(0.1,))
    before = params_of(model.extras["policy"])
    cee.train_refine(ctx, torch.full((48,), 2), 0.1)
    assert not same(before, params_of(model.extras["policy"]))
    assert len(cee.train_rounds(ctx, 0.1, "hardness")) == 1


def test_fit_returns_one_model_per_alpha_with_round_logs() -> None:
    model = tiny_model()
    ctx = fit_context(model)
    models = cee.METHOD.fit(ctx)
    assert list(models) == [0.0, 0.3]
    assert models[0.0] is not models[0.3] and models[0.0] is not model
    rounds = ctx.log["rounds"]
    assert set(rounds) == {"0", "0.3"}
    for log in rounds.values():
        assert 1 <= len(log) <= 2
        assert abs(sum(log[-1]["exit_histogram"]) - 1) < 1e-3
        assert 0 <= log[-1]["accuracy"] <= 1 and log[-1]["metric"] == "accuracy"
    assert set(ctx.meta["converged"]) == {"0", "0.3"}
    assert ctx.meta["alpha_per_layer"] == {"0": 0.0, "0.3": pytest.approx(0.3 / (L - 1))}
    assert ctx.log["reward"] == "hardness" and "max_rounds" in ctx.log["convergence"]


def test_converged_needs_both_the_exit_distribution_and_the_score_to_settle() -> None:
    stage = cee.PolicyStage(epochs=1, batch_size=8, lr=1e-3, exit_tolerance=0.05, score_tolerance=0.01)
    a = {"exit_histogram": [0.5, 0.5, 0.0], "score": 0.80}
    assert cee.converged(a, {"exit_histogram": [0.48, 0.52, 0.0], "score": 0.805}, stage)
    assert not cee.converged(a, {"exit_histogram": [0.3, 0.7, 0.0], "score": 0.80}, stage)
    assert not cee.converged(a, {"exit_histogram": [0.5, 0.5, 0.0], "score": 0.75}, stage)


def test_convergence_watches_the_tasks_main_metric() -> None:
    """On an F1 task the round statistics carry F1 as the score the convergence test compares."""
    model = tiny_model()
    ctx = fit_context(model, alphas=(0.3,), max_rounds=2)
    ctx.main_metric = "f1"
    cee.METHOD.fit(ctx)
    log = ctx.log["rounds"]["0.3"]
    assert all(r["metric"] == "f1" and 0 <= r["score"] <= 1 for r in log)
    assert ctx.meta["converged"] == {"0.3": log[-1]["converged"]}
    assert ctx.meta["step1_shared_across_alphas"] is True


def test_alpha_grid_is_depth_free() -> None:
    """One α_depth gives the same top-over-first-layer depth cost on every depth: α·(L−1) = α_depth."""
    for layers in (4, 6, 12, 24):
        alpha = cee.alpha_per_layer(1.5, layers)
        assert alpha == pytest.approx(1.5 / (layers - 1))
        cost = cee.reward(torch.zeros(1), torch.tensor([1]), alpha, num_layers=layers) - \
            cee.reward(torch.zeros(1), torch.tensor([layers]), alpha, num_layers=layers)
        assert float(cost) == pytest.approx(1.5)
    assert cee.alpha_per_layer(1.5, 6) == pytest.approx(2 * cee.alpha_per_layer(1.5, 11))
    assert cee.METHOD.stages["cpu"]["policy"].alphas == cee.HELDOUT_GRID
    assert "L - 1" in cee.METHOD.preset_notes["cpu"] and "held-out" in cee.METHOD.preset_notes["cpu"]


def test_heldout_grid_walks_the_hull_of_mean_ce_against_depth() -> None:
    """Mean CE per layer 0.8, 0.6, 0.3, 0.2, 0.25 (the top worse than layer 4), w = mean(1 − M/L) = 0.5: the best
    single layer is 4 at α = 0, moves to 3 at α·w = 0.1 and to 1 at α·w = (0.8 − 0.3)/2 = 0.25 (layer 2 is above the
    hull, never best alone); α_depth = 4·α. The grid adds 0 and the midpoints; at each break-even point the two
    layers' mean rewards tie."""
    ce = torch.tensor([[0.8, 0.6, 0.3, 0.2, 0.25], [0.8, 0.6, 0.3, 0.2, 0.25]])
    memorized = torch.tensor([1, 4])  # mean(1 − M/5) = 0.5
    grid, points = cee.heldout_grid(ce, memorized)
    assert [(p["from_layer"], p["to_layer"]) for p in points] == [(4, 3), (3, 1)]
    assert [p["alpha_depth"] for p in points] == pytest.approx([4 * 0.1 / 0.5, 4 * 0.25 / 0.5])
    assert grid == pytest.approx([0.0, 0.4, 0.8, (0.8 * 2.0) ** 0.5, 2.0], abs=1e-3)
    for p in points:
        alpha = cee.alpha_per_layer(p["alpha_depth"], 5)
        mean_reward = [float(cee.reward(ce[:, t - 1], torch.full((2,), t), alpha, num_layers=5,
                                        memorized=memorized).mean()) for t in (p["from_layer"], p["to_layer"])]
        assert mean_reward[0] == pytest.approx(mean_reward[1], abs=1e-3)
    # the vanilla reward prices every row at 1; a lowest-CE first layer leaves only accuracy-only training
    assert cee.heldout_grid(torch.tensor([[0.05, 0.5, 0.1]]), None) == ([0.0], [])


def test_vanilla_and_hardness_rewards_differ_in_training() -> None:
    """The ablation is wired: the same data and seed give different policies under the two rewards."""
    trained = []
    for method in ("consistentee", "consistentee-vanilla"):
        model = tiny_model()
        ctx = fit_context(model, alphas=(0.3,), max_rounds=1)
        trained.append(params_of(get_method(method).fit(ctx)[0.3].extras["policy"]))
    assert not same(*trained)


def test_every_sampled_trajectory_has_a_probability() -> None:
    """The ε-greedy roll-outs only produce exits the log-probability covers (0..L−1), for every ε."""
    logits = torch.randn(16, L - 1)
    for epsilon in (0.0, 0.3, 1.0):
        exits = est.sample_greedy_epsilon(logits, 8, epsilon)
        assert exits.min() >= 0 and exits.max() <= L - 1
        total = sum(est.trajectory_log_prob(logits[:1], torch.tensor([[e]])).exp() for e in range(L))
        assert torch.allclose(total, torch.ones(1))
