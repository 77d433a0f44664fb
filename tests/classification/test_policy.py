"""ConsistentEE's policy (issue 20): the two estimators, row-dependent exits on a synthetic problem, the diagnostics
and the collapse test, step 4's inference-time decisions, and the π sweep (tiny models, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cee_bench.classification import consistentee as cee
from cee_bench.classification import estimators as est
from cee_bench.classification import policy_diagnostics as diag
from cee_bench.classification.exits import simulate
from cee_bench.classification.runtime import predict
from cee_bench.classification.trace import Trace, compute_trace
from cee_bench.errors import UserError
from cee_bench.precision import cpu_bf16_native
from test_consistentee import L, fit_context, params_of, same, tiny_data, tiny_model

# --- the estimators ------------------------------------------------------------------------------------------------


def exact_expected_reward(exit_logits: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """E_π[r] per row, summed exactly over every exit layer: `exit_logits` [N, L−1], `rewards` [N, L]."""
    p = torch.sigmoid(exit_logits)
    reach = torch.ones(len(p))
    total = torch.zeros(len(p))
    for layer in range(p.shape[1]):
        total = total + reach * p[:, layer] * rewards[:, layer]
        reach = reach * (1 - p[:, layer])
    return total + reach * rewards[:, -1]


def test_the_on_policy_gradient_is_unbiased_and_the_greedy_one_is_not() -> None:
    """Averaged over many roll-outs, the on-policy loss's gradient is −∇E_π[r] (the exact one, by autograd), with ε
    mixing corrected by the importance weight; the reference's ε-greedy estimator points elsewhere."""
    torch.manual_seed(0)
    logits = torch.tensor([[0.4, -0.3], [-1.0, 1.2], [2.0, 0.5]], requires_grad=True)
    rewards = torch.tensor([[-0.9, -0.2, -0.5], [-0.1, -0.8, -0.3], [-0.4, -0.6, -0.05]])
    exact = torch.autograd.grad(-exact_expected_reward(logits, rewards).mean(), logits)[0]

    def reward_of(exits: torch.Tensor) -> torch.Tensor:
        return rewards.gather(1, exits)

    generator = torch.Generator().manual_seed(1)
    error = {name: float((torch.autograd.grad(loss(logits, reward_of, 20000, 0.3, generator), logits)[0] - exact)
                         .norm() / exact.norm())
             for name, loss in est.ESTIMATORS.items()}
    assert error[est.ON_POLICY] < 0.03  # sampling noise only (0.2-0.6% over seeds)
    assert error[est.GREEDY_EPSILON] > 0.3  # biased (48%)


def test_behaviour_sampling_follows_q_and_the_weight_is_bounded() -> None:
    """Roll-outs from q = (1 − ε)π + ε/2 exit at layer i with probability q_i·Π_{j<i}(1 − q_j); π(τ)/q(τ) never
    exceeds (1 − ε)^−(L−1), and with ε = 0 it is exactly 1."""
    logits = torch.tensor([[3.0, -2.0, 0.0]])
    epsilon = 0.2
    exits = est.sample_behaviour(logits, 40000, epsilon, torch.Generator().manual_seed(0))
    q = (1 - epsilon) * torch.sigmoid(logits[0]) + epsilon / 2
    expected = torch.stack([q[0], (1 - q[0]) * q[1], (1 - q[0]) * (1 - q[1]) * q[2],
                            (1 - q[0]) * (1 - q[1]) * (1 - q[2])])
    share = torch.bincount(exits.reshape(-1), minlength=4).float() / exits.numel()
    assert torch.allclose(share, expected, atol=0.01)
    every = torch.arange(4).unsqueeze(0)
    for eps in (0.0, 0.1, 0.5, 1.0):
        log_q = est.path_log_prob(*est.behaviour_log_probs(logits, eps), every)
        weight = (est.trajectory_log_prob(logits, every) - log_q).exp()
        assert float(weight.max()) <= (1 - eps) ** -(logits.shape[1]) + 1e-5 if eps < 1 else True
        assert torch.allclose(log_q.exp().sum(), torch.tensor(1.0))
    assert torch.allclose(est.path_log_prob(*est.behaviour_log_probs(logits, 0.0), every),
                          est.trajectory_log_prob(logits, every))


def synthetic(n: int, seed: int, hidden: int = 16, signal: float = 2.0, easy_share: float = 0.7):
    """Rows over L = 3 layers: 'easy' ones (70%) are right at every layer (M = 1), 'hard' ones only at the top
    (M = L). The layer states carry the kind in one feature, plus noise: the right exit depends on the input."""
    g = torch.Generator().manual_seed(seed)
    hard = (torch.rand(n, generator=g) > easy_share).long()
    features = torch.randn(n, L - 1, hidden, generator=g)
    features[:, :, 0] += signal * (2 * hard.float() - 1).unsqueeze(1)
    ce = torch.where(hard.view(n, 1) == 0, torch.tensor([[0.1, 0.1, 0.1]]), torch.tensor([[1.5, 1.2, 0.1]]))
    memorized = torch.where(hard == 0, torch.tensor(1), torch.tensor(L))
    return hard, features, ce, memorized


def test_on_policy_learns_row_dependent_exits_that_no_population_wide_policy_matches() -> None:
    """Easy rows should exit at layer 1 and hard rows run on. Trained on 2,000 rows, the on-policy estimator's
    policy does both on 1,000 fresh held-out rows, and its exact expected reward there beats the best policy that
    takes one decision for every row."""
    alpha = cee.alpha_per_layer(0.6, L)
    hard, features, ce, memorized = synthetic(2000, 0)
    torch.manual_seed(0)
    policies = torch.nn.ModuleList([cee.PolicyNetwork(features.shape[-1]) for _ in range(L - 1)])
    stage = cee.PolicyStage(epochs=1, batch_size=32, lr=1e-3, samples=8, epsilon=0.1, estimator=est.ON_POLICY)
    optimiser = torch.optim.AdamW(policies.parameters(), lr=stage.lr)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(10):
        for rows in torch.randperm(len(hard), generator=torch.Generator().manual_seed(epoch)).split(32):
            loss = cee.policy_loss(cee.policy_logits(policies, features[rows]), ce[rows], memorized[rows], alpha,
                                   stage, generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    held_hard, held_features, held_ce, held_memorized = synthetic(1000, 1)
    with torch.no_grad():
        exits = est.first_exit(torch.sigmoid(cee.policy_logits(policies, held_features)) > cee.EXIT_THRESHOLD)
    assert (exits[held_hard == 0] == 0).float().mean() >= 0.9  # easy rows exit at layer 1
    assert (exits[held_hard == 1] > 0).float().mean() >= 0.9  # hard rows continue
    layers = torch.arange(1, L + 1).expand(len(held_hard), L)
    rewards = cee.reward(held_ce, layers, alpha, num_layers=L, memorized=held_memorized.unsqueeze(1))
    with torch.no_grad():
        learned = float(exact_expected_reward(cee.policy_logits(policies, held_features), rewards).mean())
    population_wide = max(float(rewards[:, t].mean()) for t in range(L))  # every row at one layer
    assert learned > population_wide + 0.1


@pytest.mark.parametrize("changes, message", [
    ({"estimator": "greedy"}, "estimator"), ({"memorized_layers": "some"}, "memorized_layers"),
    ({"alphas": "auto"}, "alpha grid"),
])
def test_bad_policy_settings_are_user_errors(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cee.PolicyStage(epochs=1, batch_size=8, lr=1e-3, **changes)


def test_memorized_layer_can_count_only_layers_above_a_constant_predictor() -> None:
    """With layer 1 at chance, 'correct from layer 1' is not knowledge: under `above-constant` such a row is
    memorized from layer 2, the first counted layer."""
    preds, labels = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 0]]), torch.tensor([1, 1, 1])
    assert cee.memorized_layer(preds, labels).tolist() == [1, 2, 3]
    counted = torch.tensor([False, True, True])
    assert cee.memorized_layer(preds, labels, counted).tolist() == [2, 2, 3]


# --- diagnostics and the collapse test -----------------------------------------------------------------------------

def trace_of(exit_layer: np.ndarray, preds: np.ndarray, labels: np.ndarray, num_layers: int = 3) -> Trace:
    """A two-class trace whose every layer predicts `preds` and whose policy exits each row at `exit_layer`."""
    n = len(labels)
    logits = torch.zeros(n, num_layers, 2)
    logits[torch.arange(n), :, torch.as_tensor(preds)] = 3.0
    exit_prob = torch.zeros(n, num_layers)
    exit_prob[torch.arange(n), torch.as_tensor(exit_layer)] = 0.95
    exit_prob[:, -1] = 1.0
    return Trace({"logits": logits, "exit_prob": exit_prob}, torch.as_tensor(labels), "heldout")


def test_a_model_at_one_layer_scoring_like_the_majority_class_is_collapsed() -> None:
    rng = np.random.default_rng(0)
    labels = rng.permutation([1] * 220 + [0] * 180)
    majority = np.ones(400, dtype=int)
    collapsed = diag.heldout_stats(trace_of(np.zeros(400, dtype=int), majority, labels), "accuracy")
    assert collapsed["collapsed"] and collapsed["exit_histogram"][0] == 1.0
    assert collapsed["constant_score"] == pytest.approx(labels.mean())
    # one layer, but the predictions are right: a static truncation, not a collapse
    right = diag.heldout_stats(trace_of(np.zeros(400, dtype=int), labels, labels), "accuracy")
    assert not right["collapsed"] and right["above_constant"]
    # the majority class, spread over layers: not collapsed either (no layer holds 95%)
    spread = diag.heldout_stats(trace_of(rng.integers(0, 3, 400), majority, labels), "accuracy")
    assert not spread["collapsed"]
    # almost the majority class (98% of rows), a little better on the rest: still a constant predictor
    nearly = majority.copy()
    nearly[np.flatnonzero(labels == 0)[:8]] = 0
    assert diag.heldout_stats(trace_of(np.zeros(400, dtype=int), nearly, labels), "accuracy")["collapsed"]
    # F1: the all-positive predictor is the constant to beat
    f1 = diag.heldout_stats(trace_of(np.full(400, 2), majority, labels), "f1")
    assert f1["collapsed"] and f1["constant_score"] == pytest.approx(2 * labels.mean() / (1 + labels.mean()))


def test_a_collapsed_round_is_never_converged() -> None:
    stage = cee.PolicyStage(epochs=1, batch_size=8, lr=1e-3, exit_tolerance=0.05, score_tolerance=0.01)
    same_round = {"exit_histogram": [1.0, 0.0, 0.0], "score": 0.53, "collapsed": True}
    assert not cee.converged(same_round, same_round, stage)
    assert cee.converged(same_round, {**same_round, "collapsed": False}, stage)


def test_policy_figures_read_pi_per_deciding_layer() -> None:
    exit_prob = torch.tensor([[0.95, 0.5, 1.0], [0.05, 0.5, 1.0], [0.2, 0.99, 1.0], [0.3, 0.7, 1.0]])
    exits = torch.tensor([0, 1, 1, 2])
    figures = diag.policy_figures(exit_prob, exits)
    assert figures["pi_mean"] == pytest.approx([0.375, 0.6725])
    assert figures["pi_mid_share"] == [0.5, 0.75]
    assert figures["pi_exit_share"] == [0.25, 0.5]
    assert figures["reached_share"] == [1.0, 0.75]
    assert figures["pi_mid_share_reached"] == [0.5, pytest.approx(2 / 3, abs=1e-4)]


def test_every_round_records_its_diagnostics_and_the_estimator_is_recorded() -> None:
    model = tiny_model()
    ctx = fit_context(model, alphas=(0.3,), max_rounds=2, estimator=est.GREEDY_EPSILON)
    cee.METHOD.fit(ctx)
    for stats in ctx.log["rounds"]["0.3"]:
        assert len(stats["exit_histogram"]) == len(stats["layer_scores"]) == len(stats["train_layer_ce"]) == L
        assert len(stats["pi_mean"]) == len(stats["pi_mid_share"]) == L - 1
        assert len(stats["memorized_histogram"]) == L and sum(stats["memorized_histogram"]) == pytest.approx(1)
        assert sum(stats["refine_exit_histogram"]) == pytest.approx(1)
        assert isinstance(stats["collapsed"], bool) and 0 <= min(stats["train_layer_accuracy"])
    assert ctx.meta["estimator"] == est.GREEDY_EPSILON and set(ctx.meta["collapsed"]) == {"0.3"}
    assert ctx.meta["deviations"][0] == cee.ESTIMATOR_DEVIATIONS[est.GREEDY_EPSILON]
    assert ctx.meta["alpha_grid"]["rule"] == "fixed" and ctx.log["step1_heldout"]["layer_scores"]


def test_the_heldout_grid_is_chosen_after_step_1_and_recorded() -> None:
    model = tiny_model()
    ctx = fit_context(model, alphas=cee.HELDOUT_GRID, max_rounds=1)
    models = cee.METHOD.fit(ctx)
    grid = ctx.meta["alpha_grid"]
    assert list(models) == grid["values"] == ctx.log["step1_heldout"]["heldout_grid"] and grid["values"][0] == 0.0
    assert grid["rule"] == cee.HELDOUT_GRID_RULE
    assert cee.HELDOUT_GRID_DEVIATION in ctx.meta["deviations"]


# --- step 4 decides as inference does ---------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    not cpu_bf16_native(), reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)"))])
def test_step_4_exits_are_the_inference_rules_on_eval_mode_states(precision: str) -> None:
    """The exits step 4 trains at are the ones real inference takes on the training rows (eval mode, no dropout, the
    model's precision), and step 4 trains only the classifiers of those layers."""
    model = tiny_model()
    model.precision = precision
    ctx = fit_context(model)
    policies = model.extras["policy"]
    states = cee.collect_states(model, ctx.train, 16)
    with torch.no_grad():  # spread and centre each policy's logits so rows exit at different layers
        for layer, policy in enumerate(policies):
            policy.net[2].weight *= 100
            policy.net[2].bias -= torch.quantile(policy(states.pooled[:, layer]), 0.5)
    exits = cee.policy_exits(model, states.pooled)
    trace = compute_trace(model, ctx.train, split="train", batch_size=7)
    assert exits.tolist() == diag.exit_layers(trace.signals).tolist()
    assert len(set(exits.tolist())) > 1
    classifiers = model.heads.classifiers
    before = [params_of(c) for c in classifiers]
    cee.train_refine(ctx, None, 0.1, torch.zeros_like(exits))  # every row exits at layer 1
    assert not same(before[0], params_of(classifiers[0]))
    assert all(same(b, params_of(c)) for b, c in zip(before[1:], classifiers[1:]))


# --- the π sweep -----------------------------------------------------------------------------------------------------

def test_the_pi_sweeps_simulated_points_equal_real_early_exit() -> None:
    model = tiny_model()
    data = tiny_data(40, seed=1)
    pooled = cee.collect_states(model, data, 40).pooled
    with torch.no_grad():
        for layer, policy in enumerate(model.extras["policy"]):
            policy.net[2].bias -= torch.quantile(policy(pooled[:, layer]), 0.5)
    trace = compute_trace(model, data, split="dev", batch_size=7)
    seen = set()
    for threshold in cee.PI_SWEEP.thresholds([0.3]):
        rule = cee.PI_SWEEP.rule(model, threshold)
        sim_exits = simulate(trace.signals, rule)
        sim_preds = trace.signals["logits"][torch.arange(len(data)), sim_exits].argmax(-1)
        seen.add(tuple(sim_exits.tolist()))
        for batch_size in (1, 7):
            preds, exits = predict(model, rule, data, batch_size)
            assert exits.tolist() == sim_exits.tolist(), threshold
            assert preds.tolist() == sim_preds.tolist(), threshold
    assert len(seen) >= 3  # the thresholds really move the exits


def test_the_pi_sweep_reads_consistentees_models_on_a_pair_grid() -> None:
    sweep = cee.PI_SWEEP
    pairs = sweep.thresholds([0.0, 0.5])
    assert len(pairs) == 2 * len(cee.PI_GRID) and (0.5, 0.5) in pairs
    assert sweep.variant((0.5, 0.2)) == 0.5 and sweep.trained_as == cee.METHOD.name
    assert sweep.rule(None, (0.5, 0.2)).threshold == 0.2 and sweep.rule(None, 0.5).threshold == 0.5
    with pytest.raises(UserError, match="pi"):
        sweep.rule(None, (0.5, 1.5))
    with pytest.raises(UserError, match="alpha"):
        sweep.rule(None, -1.0)
    order = [pairs[i] for i in sweep.ltt_order(pairs)]
    assert order[0] == (0.0, max(cee.PI_GRID)) and order[-1] == (0.5, min(cee.PI_GRID))
    assert sweep.stages == cee.METHOD.stages
