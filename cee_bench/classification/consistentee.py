"""ConsistentEE for classification (Zeng et al., AAAI 2024), docs/METHODS.md §1 and the paper's "Model Training and
Inference" (authoritative where the two differ). Its estimators, diagnostics and π sweep: docs/consistentee.md.

Heads: the backbone's shared pooler, dropout and a `Linear(H, C)` per layer, plus one policy network per layer
(`Linear(H, 32) → GELU → Linear(32, 1) → sigmoid` on the pooled vector, no dropout) giving P(exit | s_t). The top
layer has no policy: it always answers (its `exit_prob` signal is 1), so only L−1 exit decisions exist.

Training, the paper's iterative steps 1-5:
1. `init`: every head and the backbone on the weighted CE of Eq. 1 (Σ i·CE_i / Σ i);
then for each α of the grid, starting again from the step-1 weights:
2. the memorized layer M of every training instance (Eq. 7; M = L when the top layer is wrong);
3. `policy`: the policy alone by REINFORCE (Eq. 5) with backbone and classifiers frozen — K trajectories per
   instance drawn by the stage's estimator (`cee_bench.classification.estimators`: `on-policy`, the default, or the
   reference's `greedy-epsilon`), reward Eq. 4 (hardness-guided) or Eq. 3 (vanilla). Because the backbone is frozen,
   the pooled states and per-layer CE of the training set are computed once per round (one backbone pass, eval
   mode) and reused for every epoch and every trajectory;
4. `refine`: backbone and classifiers on Eq. 6 (CE only at each instance's exit layer) with the policy frozen. The
   exit layers are decided as inference decides them: the frozen policy's first P(exit) > 0.5 on the eval-mode
   states of the round's pass (no dropout), once at the start of the step;
5. repeat 2-4 until converged: after a round, stop when the held-out exit-layer distribution moved by at most
   `exit_tolerance` (total variation) *and* the held-out main score of the task (accuracy; F1 on MRPC/QQP) by at most
   `score_tolerance` since the previous round, or after `max_rounds` rounds, whichever comes first. A round whose
   model has *collapsed* (≥ 95% of held-out rows at one layer, scoring within noise of a constant predictor:
   `cee_bench.classification.policy_diagnostics`) never counts as converged. Each α's record says whether it
   converged and whether it collapsed (`method_meta.converged` and `method_meta.collapsed`, α → bool).
Every round's record row carries its diagnostics (`policy_diagnostics`): held-out exit histogram, π per deciding
layer, per-layer scores, training CE and accuracy per layer, the histogram of M; `cee-bench analyze policy` draws them.
Step 1 is trained once and shared by every α (each α restarts from the step-1 weights), so more α values cost only
steps 2-4 each.
Step 1 is PABEE's training (same heads, loss and trainable set), so `cee-bench run` trains it once for PABEE,
PCEE-BERT and both ConsistentEE variants wherever their stage settings agree (`shares`,
`cee_bench.classification.sharing`); every finished round of every α is kept in the model store, so an interrupted
run resumes at the round it was in.
`released_variant=True` runs the released BERT code's shape instead: one round, policy trainable in step 4 (loss =
CE at each of K sampled exits + the policy loss).

Inference: exit at the first layer whose P(exit) > 0.5; the prediction is that layer's classifier's. The curve is one
trained model per α (the paper's Figure 3/4 way); `fit` returns {α_depth: model}. `consistentee-pi` reads the same
models at other exit thresholds (`ConsistentEEPiSweep`, a labelled extra).

The α grid is depth-free. A grid value α_depth is the depth cost, in nats of the reward, of exiting at the top layer
L instead of layer 1 under the vanilla reward (Eq. 3): α_depth = α·(L − 1), so the reward uses α = α_depth / (L − 1)
(`alpha_per_layer`); under Eq. 4 the cost is scaled further by the instance's (1 − M/L). The reference code's α
(0.01-0.08 for 12-layer BERT) is α_depth 0.11-0.88. The `cpu` preset's grid is chosen on held-out rows of the run
itself, after step 1 (`HELDOUT_GRID`, `heldout_grid`), so it follows the budget in use; `--grid` gives a fixed one.
"""

from __future__ import annotations

import copy
import math
import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from cee_bench.classification.data import Encoded
from cee_bench.classification.estimators import (ESTIMATORS, GREEDY_EPSILON, ON_POLICY, first_exit,
                                                 sample_greedy_epsilon)
from cee_bench.classification.exits import ExitRule, ScoreAbove
from cee_bench.classification.fit import FitContext, per_layer_ce, weighted_ce
from cee_bench.classification.frozen import frozen_states, train_on_states
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.multiexit import MultiExitModel, at_precision
from cee_bench.classification.policy_diagnostics import EXIT_THRESHOLD, heldout_stats, layers_with, train_figures
from cee_bench.classification.trace import compute_trace
from cee_bench.distributed import from_main
from cee_bench.errors import UserError
from cee_bench.training import Stage

POLICY_HIDDEN = 32
CONVERGENCE = ("after each round r >= 2: stop when the held-out exit-layer distribution moved by <= exit_tolerance "
               "(total variation) and the held-out main score (accuracy; F1 on MRPC/QQP) by <= score_tolerance since "
               "round r-1; always stop after max_rounds rounds; a collapsed round (>= 95% of held-out rows at one "
               "layer, within noise of a constant predictor) is never converged")
ALPHA_RULE = "alpha = alpha_depth / (L - 1): alpha_depth is the vanilla reward's depth cost of layer L over layer 1"
# The α grid chosen on the run's own held-out rows after step 1 (`heldout_grid`): no number from any other
# method's results, and it follows the budget in use (more rows → better early layers → other break-even costs).
HELDOUT_GRID = "heldout-break-even"
HELDOUT_GRID_RULE = ("alpha_depth 0, the break-even costs at which the best single exit layer of the held-out rows "
                     "moves shallower (lower convex hull of the step-1 model's mean held-out CE per layer against "
                     "depth, each layer's cost weighted by mean(1 - M/L)), and the geometric midpoints between "
                     "them (half of the first)")
# Which layers count in Eq. 7's "correct from M to the top": every layer (the paper), or only layers whose classifier
# is above a constant predictor on held-out (when early layers are at chance, "correct from layer 1" is only the
# majority class, and the hardness reward then pays the majority class to exit at layer 1: issue 20).
MEMORIZED_RULES = ("every", "above-constant")
PI_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)  # the π sweep's exit thresholds, conservative first


@dataclass(frozen=True)
class PolicyStage(Stage):
    """The policy stage's optimiser settings plus the RL settings of the rounds around it (they live here so each
    preset carries its own and the results record stores them with the stages)."""

    samples: int = 8  # K trajectories per instance
    epsilon: float = 0.1  # per-decision probability of a coin-flip action (mixed into π on-policy)
    alphas: tuple[float, ...] | str = (0.1,)  # the α_depth grid (ALPHA_RULE), or HELDOUT_GRID: one model per value
    max_rounds: int = 2
    exit_tolerance: float = 0.02
    score_tolerance: float = 0.005
    released_variant: bool = False
    estimator: str = ON_POLICY  # `cee_bench.classification.estimators.ESTIMATORS`
    memorized_layers: str = "every"  # MEMORIZED_RULES

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.samples, bool) or int(self.samples) != self.samples or self.samples < 2:
            raise UserError(f"K (samples per instance) must be a whole number >= 2 — the per-instance mean baseline "
                            f"of one trajectory is its own reward, so nothing is learnt — got {self.samples}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise UserError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if isinstance(self.alphas, str):
            if self.alphas != HELDOUT_GRID:
                raise UserError(f"the alpha grid must be numbers or '{HELDOUT_GRID}', got '{self.alphas}'")
        elif not self.alphas:
            raise UserError("the alpha grid is empty")
        else:
            for alpha in self.alphas:
                check_alpha(alpha)
        if isinstance(self.max_rounds, bool) or int(self.max_rounds) != self.max_rounds or self.max_rounds < 1:
            raise UserError(f"max_rounds must be a whole number >= 1 so training always stops, got {self.max_rounds}")
        for name in ("exit_tolerance", "score_tolerance"):
            value = getattr(self, name)
            if not value >= 0 or math.isinf(value):
                raise UserError(f"{name} must be a finite number >= 0, got {value}")
        if self.estimator not in ESTIMATORS:
            raise UserError(f"unknown policy estimator '{self.estimator}'; choose one of {', '.join(ESTIMATORS)}")
        if self.memorized_layers not in MEMORIZED_RULES:
            raise UserError(f"unknown memorized_layers rule '{self.memorized_layers}'; choose one of "
                            f"{', '.join(MEMORIZED_RULES)}")


def check_alpha(alpha: Any) -> float:
    """α must be a finite number >= 0 (α = 0 means 'accuracy only')."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise UserError(f"alpha must be a number, got {alpha!r}") from None
    if not value >= 0 or math.isinf(value):
        raise UserError(f"alpha must be a finite number >= 0, got {alpha}")
    return value


class PolicyNetwork(nn.Module):
    """The paper's two-layer MLP on a layer's pooled state; returns the exit *logit* so log-probabilities are
    computed stably (log π = logsigmoid(z), log(1 − π) = logsigmoid(−z))."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, POLICY_HIDDEN), nn.GELU(), nn.Linear(POLICY_HIDDEN, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled).squeeze(-1)


def alpha_per_layer(alpha_depth: float, num_layers: int) -> float:
    """The per-layer α of Eq. 3/4 for a depth-free grid value (`ALPHA_RULE`); a 1-layer model has no decision."""
    return float(alpha_depth) / max(num_layers - 1, 1)


def policy_logits(policies: nn.ModuleList, pooled: torch.Tensor) -> torch.Tensor:
    """Exit logits [B, L−1] of the L−1 deciding layers from pooled states [B, ≥L−1, H]."""
    # fp32 whatever the run's dtype: the trajectory log-probabilities and P(exit) > 0.5 are computed from these
    return torch.stack([policy(pooled[:, i]) for i, policy in enumerate(policies)], dim=1).float()


def policy_signals(model: MultiExitModel, layer: int, signals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `exit_prob` signal of 0-based `layer`: the policy's P(exit); 1 at the top layer, which always answers."""
    policies = model.extras["policy"]
    pooled = signals["pooled"]
    if layer < len(policies):
        return {"exit_prob": torch.sigmoid(policies[layer](pooled))}
    return {"exit_prob": torch.ones(pooled.shape[0], dtype=pooled.dtype, device=pooled.device)}


@torch.no_grad()
@at_precision
def policy_exits(model: MultiExitModel, pooled: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """0-based exit layers [N] of the inference rule (first P(exit) > 0.5, computed as `policy_signals` computes it,
    at the model's precision) from pooled states [N, L−1, H]: step 4's decisions, made from the round's eval-mode
    states."""
    policies = model.extras["policy"]
    exits = []
    for start in range(0, len(pooled), batch_size):
        chunk = pooled[start:start + batch_size].to(model.device)
        exit_prob = torch.stack([torch.sigmoid(p(chunk[:, i])).float() for i, p in enumerate(policies)], dim=1)
        exits.append(first_exit(exit_prob > EXIT_THRESHOLD).cpu())
    return torch.cat(exits)


def memorized_layer(preds: torch.Tensor, labels: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 7: the 1-based layer from which every classifier up to the top predicts the gold label; L when the top
    layer is wrong (never correct through the top). `preds`: [N, L] argmax per layer, `labels`: [N]. `counted` [L]
    (bool) keeps only some layers as possibly correct (`MEMORIZED_RULES`); None counts every layer (the paper)."""
    num_layers = preds.shape[1]
    correct = (preds == labels.unsqueeze(1)).long()
    if counted is not None:
        correct = correct * counted.to(correct.device).long().unsqueeze(0)
    trailing_correct = correct.flip(1).cumprod(1).sum(1)
    return (num_layers - trailing_correct + 1).clamp(max=num_layers)


def counted_layers(stage: PolicyStage, above_constant: Sequence[bool]) -> torch.Tensor | None:
    """The layers Eq. 7 counts under the stage's rule, from the current model's held-out `layer_above_constant`."""
    return None if stage.memorized_layers == "every" else torch.tensor(list(above_constant), dtype=torch.bool)


def reward(ce_exit: torch.Tensor, exit_layer: torch.Tensor, alpha: float, *, num_layers: int,
           memorized: torch.Tensor | None = None) -> torch.Tensor:
    """Reward of exiting at 1-based `exit_layer` with cross-entropy `ce_exit` there: Eq. 3 (vanilla, `memorized`
    None) −CE − α·t, or Eq. 4 (hardness-guided) −CE − α·(1 − M/L)·t, so easy instances (small M) pay more per layer.
    `memorized` broadcasts against `ce_exit` (e.g. [N, 1] against [N, K])."""
    coefficient = alpha if memorized is None else alpha * (1.0 - memorized.to(ce_exit.dtype) / num_layers)
    return -ce_exit - coefficient * exit_layer.to(ce_exit.dtype)


def policy_loss(exit_logits: torch.Tensor, ce: torch.Tensor, labels_memorized: torch.Tensor | None, alpha: float,
                stage: PolicyStage, generator: torch.Generator | None = None) -> torch.Tensor:
    """One REINFORCE step's loss for a batch by the stage's estimator: K trajectories from `exit_logits` [B, L−1],
    rewarded with the per-layer CE `ce` [B, L] at their exit layers (and M [B] for the hardness-guided reward)."""
    ce = ce.detach()
    memorized = None if labels_memorized is None else labels_memorized.unsqueeze(1)

    def reward_of(exits: torch.Tensor) -> torch.Tensor:
        return reward(ce.gather(1, exits), exits + 1, alpha, num_layers=ce.shape[1], memorized=memorized)

    return ESTIMATORS[stage.estimator](exit_logits, reward_of, stage.samples, stage.epsilon, generator)


@dataclass
class TrainStates:
    """What one eval-mode backbone pass over the training set gives a round: pooled states of the deciding layers
    [N, L−1, H], per-layer CE [N, L] and per-layer predictions [N, L]."""

    pooled: torch.Tensor
    ce: torch.Tensor
    preds: torch.Tensor


def collect_states(model: MultiExitModel, data: Encoded, batch_size: int) -> TrainStates:
    """One backbone pass over `data` in eval mode (no dropout: exploration comes from the estimator's sampling, see
    `deviations`), in its row order; batches are length-bucketed."""
    states = frozen_states(model, data, batch_size, lambda out, batch: {
        "pooled": out["pooled"][:, :-1], "ce": per_layer_ce(out["logits"], batch["labels"]),
        "preds": out["logits"].argmax(-1)})
    return TrainStates(states["pooled"], states["ce"], states["preds"])


def train_init(ctx: FitContext, on_epoch_end: Callable[[int], None] | None = None) -> list[float]:
    """Step 1 on this model: backbone and classifiers on the weighted CE of Eq. 1 (the policy has no part in it).
    `cee-bench run` trains step 1 as PABEE's training instead (`ConsistentEE.shares`); `analyze hardness` calls this
    for its per-epoch hook."""
    model = ctx.model
    weights = torch.arange(1, model.num_layers + 1, dtype=torch.float)
    return ctx.train_stage("init", _non_policy_params(model),
                           lambda batch, step: weighted_ce(ctx.forward(batch)["logits"], batch["labels"], weights),
                           on_epoch_end=on_epoch_end)


def train_policy(ctx: FitContext, states: TrainStates, memorized: torch.Tensor | None, alpha: float,
                 round_index: int) -> list[float]:
    """Step 3 on the cached states: the policy alone, many epochs, no backbone pass."""
    stage: PolicyStage = ctx.stages["policy"]
    policies = ctx.model.extras["policy"]
    sampler = torch.Generator().manual_seed(ctx.seed * 7919 + round_index)
    cached = {"pooled": states.pooled, "ce": states.ce}
    if memorized is not None:
        cached["memorized"] = memorized

    def loss_fn(rows: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        return policy_loss(policy_logits(policies, rows["pooled"]), rows["ce"], rows.get("memorized"), alpha, stage,
                           sampler)

    return train_on_states(ctx, "policy", list(policies.parameters()), cached, loss_fn,
                           order_seed=ctx.seed * 1000 + 100 * round_index)


def train_refine(ctx: FitContext, memorized: torch.Tensor | None, alpha: float,
                 exits: torch.Tensor | None = None) -> list[float]:
    """Step 4, Eq. 6: CE only at each training row's exit layer `exits` [N] (0-based, `policy_exits` of the round's
    eval-mode states; the policy frozen). In the released-code variant the policy is trainable too: CE averaged over
    K ε-greedy exits on the training pass (dropout on) plus the policy loss."""
    stage: PolicyStage = ctx.stages["policy"]
    model = ctx.model
    policies = model.extras["policy"]
    sampler = torch.Generator().manual_seed(ctx.seed * 104729)
    if not stage.released_variant and exits is None:
        raise ValueError("step 4 needs the exit layer of every training row (policy_exits)")

    def loss_fn(batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        out = ctx.forward(batch)
        labels = batch["labels"]
        rows = torch.arange(len(labels), device=labels.device)
        if not stage.released_variant:
            return nn.functional.cross_entropy(out["logits"][rows, exits.to(labels.device)[batch["index"]]], labels)
        ce = per_layer_ce(out["logits"], labels)
        logits = policy_logits(policies, out["pooled"])
        sampled = sample_greedy_epsilon(logits.detach(), stage.samples, stage.epsilon, sampler)
        mem = None if memorized is None else memorized.to(labels.device)[batch["index"]]
        return ce.gather(1, sampled).mean() + policy_loss(logits, ce, mem, alpha, stage, sampler)

    params = list(model.parameters()) if stage.released_variant else _non_policy_params(model)
    return ctx.train_stage("refine", params, loss_fn)


def heldout_trace_stats(model: MultiExitModel, data: Encoded, batch_size: int, metric: str) -> dict[str, Any]:
    """`policy_diagnostics.heldout_stats` of `model` on held-out `data` (one eval-mode pass)."""
    return heldout_stats(compute_trace(model, data, split="heldout", batch_size=batch_size), metric)


def heldout_grid(ce: torch.Tensor, memorized: torch.Tensor | None) -> tuple[list[float], list[dict[str, Any]]]:
    """(α_depth grid, break-even points) from held-out per-layer CE [N, L] and memorized layers [N] (None under the
    vanilla reward), rounded to 3 decimals.

    Sending every row to 1-based layer t costs, in the mean reward, mean CE_t + α·w·t, with w = mean(1 − M/L)
    (Eq. 4; w = 1 under Eq. 3). As α grows from 0 the best single layer moves from the lowest-CE layer towards layer
    1, at the break-even points α·w = (CE_s − CE_t)/(t − s) of the lower convex hull of (t, mean CE_t): each is the α
    where the bulk of the rows has a reason to exit one hull layer shallower, and between them rows differ. The grid
    is 0 (accuracy only), every break-even point, and the geometric midpoint of each pair of neighbours (half of the
    first): one trained model per value."""
    num_layers = ce.shape[1]
    weight = 1.0 if memorized is None else float((1.0 - memorized.float() / num_layers).mean())
    mean_ce = [float(x) for x in ce.float().mean(0)]
    layer = min(range(num_layers), key=lambda t: (mean_ce[t], t))  # 0-based; ties go to the shallower layer
    points: list[dict[str, Any]] = []
    while layer > 0 and weight > 0:
        costs = {s: (mean_ce[s] - mean_ce[layer]) / ((layer - s) * weight) for s in range(layer)}
        shallower = min(costs, key=lambda s: (costs[s], s))
        points.append({"alpha_depth": round((num_layers - 1) * max(costs[shallower], 0.0), 3),
                       "from_layer": layer + 1, "to_layer": shallower + 1})
        layer = shallower
    values = [p["alpha_depth"] for p in points if p["alpha_depth"] > 0]
    middles = [values[0] / 2, *(math.sqrt(a * b) for a, b in zip(values, values[1:]))] if values else []
    return sorted({0.0, *values, *(round(m, 3) for m in middles)}), points


def step1_summary(ctx: FitContext, reward_kind: str) -> dict[str, Any]:
    """The step-1 model on held-out, before any α: each layer's score and CE and whether it is above a constant
    predictor (Eq. 7's counted layers in round 1 under `above-constant`), and the break-even α_depth per layer
    (`heldout_grid`) — the grid when the preset asks for `HELDOUT_GRID`."""
    stage: PolicyStage = ctx.stages["policy"]
    trace = compute_trace(ctx.model, ctx.heldout, split="heldout", batch_size=ctx.eval_batch_size)
    stats = heldout_stats(trace, ctx.main_metric)
    logits, labels = trace.signals["logits"], trace.labels
    memorized = memorized_layer(logits.argmax(-1), labels, counted_layers(stage, stats["layer_above_constant"]))
    grid, points = heldout_grid(per_layer_ce(logits, labels), memorized if reward_kind == "hardness" else None)
    return {**{k: stats[k] for k in ("layer_scores", "layer_ce", "layer_above_constant", "constant_score")},
            "break_even": points, "heldout_grid": grid}


def converged(previous: dict[str, Any], current: dict[str, Any], stage: PolicyStage) -> bool:
    """The stopping test of step 5 (see `CONVERGENCE`): the exit distribution and the score settled, not collapsed."""
    moved = 0.5 * sum(abs(a - b) for a, b in zip(previous["exit_histogram"], current["exit_histogram"]))
    return (moved <= stage.exit_tolerance and abs(previous["score"] - current["score"]) <= stage.score_tolerance
            and not current.get("collapsed", False))


def train_rounds(ctx: FitContext, alpha: float, reward_kind: str, series: str | None = None,
                 step1: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Steps 2-5 for one α on `ctx.model` (already initialised by step 1); returns one stats row per round, with its
    diagnostics (module docstring). `step1` is `step1_summary` of the starting model (computed when not given).

    With a `series` name, every finished round is kept through `ctx.checkpoints`, and a run that stopped during round
    r starts again at round r from round r−1's weights. Each round seeds the global RNG (the refinement's dropout)
    from (seed, α, round), so a resumed round trains exactly what the uninterrupted run trained."""
    stage: PolicyStage = ctx.stages["policy"]
    rounds = 1 if stage.released_variant else stage.max_rounds
    settings = {"alpha": alpha, "reward": reward_kind, "refine": asdict(ctx.stages["refine"]),
                "policy": {k: v for k, v in asdict(stage).items() if k != "alphas"}}
    log: list[dict[str, Any]] = (ctx.checkpoints.resume(series, settings, rounds, ctx.model) or []) if series else []
    if log and log[-1]["converged"]:
        return log
    for round_index in range(len(log), rounds):
        torch.manual_seed(zlib.crc32(f"{ctx.seed}:{alpha!r}:{round_index}".encode()))
        start = log[-1] if log else (step1 or step1_summary(ctx, reward_kind))
        states = collect_states(ctx.model, ctx.train, ctx.eval_batch_size)
        memorized = memorized_layer(states.preds.cpu(), ctx.train.labels,
                                    counted_layers(stage, start["layer_above_constant"]))
        hardness = memorized if reward_kind == "hardness" else None
        policy_losses = train_policy(ctx, states, hardness, alpha, round_index)
        exits = policy_exits(ctx.model, states.pooled)
        figures = train_figures(states.ce, states.preds, ctx.train.labels, memorized, exits)
        del states
        refine_losses = train_refine(ctx, hardness, alpha, exits)
        stats = heldout_trace_stats(ctx.model, ctx.heldout, ctx.eval_batch_size, ctx.main_metric)
        stats.update(round=round_index + 1, policy_loss=policy_losses, refine_loss=refine_losses,
                     mean_memorized_layer=float(memorized.float().mean()), **figures)
        ctx.progress.log(f"  α={alpha:g} round {stats['round']}: held-out {stats['metric']} {stats['score']:.4f}, "
                         f"mean exit layer {stats['mean_exit_layer']:.2f}, "
                         f"{layers_with(stats['exit_histogram'])} layer(s) with >= 5% of rows"
                         + (" [collapsed]" if stats["collapsed"] else ""))
        # every process holds the same weights, but one float apart would make them run different numbers of
        # rounds and wait for each other forever: the main process decides
        stats["converged"] = from_main(bool(log) and converged(log[-1], stats, stage))
        log.append(stats)
        if series:
            ctx.checkpoints.save(series, settings, round_index + 1, ctx.model, log)
        if stats["converged"]:
            break
    return log


def _non_policy_params(model: MultiExitModel) -> list[nn.Parameter]:
    policy = {id(p) for p in model.extras["policy"].parameters()}
    return [p for p in model.parameters() if id(p) not in policy]


# Where the policy stage departs from the reference, by setting (the record lists the lines of its own settings).
ESTIMATOR_DEVIATIONS = {
    ON_POLICY: "policy gradient on-policy (estimator 'on-policy'): trajectories drawn from pi mixed with a coin flip "
               "(q = (1 - epsilon) pi + epsilon/2) on eval-mode states computed once per round, weighted by "
               "pi(tau)/q(tau), with a leave-one-out mean baseline; the reference acts greedily (pi > 0.5) on K "
               "dropout-perturbed passes, with epsilon = 0 and no importance weight",
    GREEDY_EPSILON: "policy stage as the reference estimates it (estimator 'greedy-epsilon': greedy actions, K "
                    "copies, mean baseline, no importance weight), but on eval-mode states computed once per round "
                    "(no dropout), so the K trajectories differ by epsilon coin flips (epsilon > 0) where the "
                    "reference sets epsilon = 0 and relies on dropout noise",
}
MEMORIZED_DEVIATION = ("memorized layer (Eq. 7) counts a layer as correct only where its classifier is above a "
                       "constant predictor on held-out (memorized_layers 'above-constant'; the paper counts every "
                       "layer)")
HELDOUT_GRID_DEVIATION = (f"alpha grid chosen on held-out after step 1 ({HELDOUT_GRID}: {HELDOUT_GRID_RULE}); the "
                          "paper sweeps alpha by hand")


class ConsistentEE(Method):
    name = "consistentee"
    display = "ConsistentEE"
    pooler = "shared"
    threshold_name = "alpha_depth"
    reward_kind = "hardness"
    deviations = (
        "step 4 follows the paper (policy frozen, CE at the exit layer, one pass per batch); its exit layers are "
        "the inference rule's on eval-mode states of the training set (no dropout), decided once at the start of "
        "the step; the released BERT code trains the policy too with K copies (PolicyStage.released_variant=True, "
        "off by default)",
        "iterated rounds until the stated convergence test or max_rounds (the released code runs one round)",
        "the top layer has no policy network: it always answers, so only L-1 exit decisions are learnt",
        "final checkpoint kept (reference: best dev checkpoint); operating point (alpha) chosen on held-out train",
        "step 1 is trained as PABEE's training on PABEE's heads (the same loss on the same parameters; the policy "
        "networks, untouched by step 1, keep this model's initialisation), so it is shared with PABEE and PCEE-BERT "
        "when the stage settings agree",
    )
    stages = {
        "smoke": {"init": SMOKE_STAGE,
                  "policy": PolicyStage(epochs=2, batch_size=32, lr=1e-3, samples=4, alphas=(0.1, 1.0),
                                        max_rounds=1),
                  "refine": Stage(epochs=1, batch_size=16, lr=5e-5)},
        "cpu": {"init": CPU_STAGE,
                "policy": PolicyStage(epochs=10, batch_size=32, lr=1e-3, samples=8, alphas=HELDOUT_GRID,
                                      max_rounds=2),
                "refine": Stage(epochs=1, batch_size=16, lr=3e-5)},
        # the reference code's settings: its alpha values (as alpha_depth) and the paper's epsilon-greedy estimator
        "paper": {"init": Stage(epochs=5, batch_size=16, lr=1e-5),
                  "policy": PolicyStage(epochs=2, batch_size=32, lr=3e-4, samples=8, epsilon=0.05,
                                        alphas=(0.11, 0.22, 0.44, 0.88), max_rounds=3, estimator=GREEDY_EPSILON),
                  "refine": Stage(epochs=2, batch_size=32, lr=3e-5)},
    }
    preset_notes = {preset: f"{ALPHA_RULE}; alpha_depth grid "
                    + (f"chosen on held-out after step 1: {HELDOUT_GRID_RULE}" if s["policy"].alphas == HELDOUT_GRID
                       else ", ".join(f"{a:g}" for a in s["policy"].alphas))
                    + f"; estimator {s['policy'].estimator}"
                    for preset, s in stages.items()}
    signal_fn = staticmethod(policy_signals)
    shares = {"init": "pabee"}  # step 1 (Eq. 1) is PABEE's training: trained once per training key (`sharing`)
    resumes_rounds = True

    def grid(self, num_layers: int) -> Sequence[Any]:
        """Only documentary: `fit` always returns one model per α_depth (a fixed grid, or the held-out one)."""
        alphas = self.stages["cpu"]["policy"].alphas
        return [] if isinstance(alphas, str) else list(alphas)

    def ltt_order(self, grid: Sequence[Any]) -> list[int]:
        """The larger α, the more the reward pays for exiting early."""
        return sorted(range(len(grid)), key=lambda i: grid[i])

    def with_grid(self, stages: dict[str, Stage], grid: list[Any]) -> dict[str, Stage]:
        """`--grid` is the α_depth grid (depth-free, `ALPHA_RULE`): one policy (and refinement) per value."""
        return {**stages, "policy": replace(stages["policy"], alphas=tuple(float(a) for a in grid))}

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        check_alpha(threshold)
        return ScoreAbove("exit_prob", EXIT_THRESHOLD)

    def build_extras(self, model: MultiExitModel) -> nn.ModuleDict:
        hidden = model.backbone.config.hidden_size
        return nn.ModuleDict({"policy": nn.ModuleList([PolicyNetwork(hidden) for _ in range(model.num_layers - 1)])})

    def deviations_for(self, stage: PolicyStage) -> list[str]:
        """The record's `deviations`: the method's own, plus those of the policy stage's settings."""
        lines = [ESTIMATOR_DEVIATIONS[stage.estimator], *self.deviations]
        if stage.memorized_layers != "every":
            lines.append(MEMORIZED_DEVIATION)
        if stage.alphas == HELDOUT_GRID:
            lines.append(HELDOUT_GRID_DEVIATION)
        return lines

    def fit(self, ctx: FitContext) -> dict[float, MultiExitModel]:
        """Steps 2-5 per α from the step-1 weights that `ctx.model` holds (step 1 is `shares`' stage, trained once and
        shared by every α) — policy included, so every α starts from the same untrained policy — restored in place
        because `train_stage` is bound to `ctx.model`; each α's trained model is kept as a copy, keyed by its
        α_depth, and each α's rounds are checkpointed as the series `alpha_depth=<value>`."""
        from cee_bench.classification.store import variant_name

        stage: PolicyStage = ctx.stages["policy"]
        initial = copy.deepcopy(ctx.model.state_dict())
        step1 = step1_summary(ctx, self.reward_kind)
        alphas = step1["heldout_grid"] if stage.alphas == HELDOUT_GRID else list(stage.alphas)
        models: dict[float, MultiExitModel] = {}
        rounds_log: dict[str, Any] = {}
        per_layer: dict[str, float] = {}
        for alpha_depth in alphas:
            ctx.model.load_state_dict(initial)
            key = f"{alpha_depth:g}"
            per_layer[key] = alpha_per_layer(alpha_depth, ctx.model.num_layers)
            rounds_log[key] = train_rounds(ctx, per_layer[key], self.reward_kind,
                                           variant_name(ConsistentEE.threshold_name, alpha_depth), step1)
            models[alpha_depth] = copy.deepcopy(ctx.model).eval()
        ctx.meta.update(alpha_rule=ALPHA_RULE, alpha_per_layer=per_layer, step1_shared_across_alphas=True,
                        alpha_grid={"rule": HELDOUT_GRID_RULE if stage.alphas == HELDOUT_GRID else "fixed",
                                    "values": list(alphas),
                                    "break_even": step1["break_even"]},
                        estimator=stage.estimator, memorized_layers=stage.memorized_layers,
                        deviations=self.deviations_for(stage),
                        converged={key: bool(log[-1]["converged"]) for key, log in rounds_log.items()},
                        collapsed={key: bool(log[-1]["collapsed"]) for key, log in rounds_log.items()})
        ctx.log.update(reward=self.reward_kind, convergence=CONVERGENCE, step1_heldout=step1, rounds=rounds_log)
        ctx.log.pop("policy", None)
        ctx.log.pop("refine", None)  # per-round losses live under "rounds"
        return models


class ConsistentEEVanilla(ConsistentEE):
    """The reward ablation (Figure 4): Eq. 3's uniform trade-off −CE − α·t instead of the hardness-guided Eq. 4."""

    name = "consistentee-vanilla"
    display = "ConsistentEE (vanilla reward)"
    reward_kind = "vanilla"


class ConsistentEEPiSweep(ConsistentEE):
    """ConsistentEE's models read at other exit thresholds: each α's model (the very weights `consistentee` trains:
    same training keys, so a run with both trains them once) with "exit at the first layer whose P(exit) > π" for π
    in `PI_GRID` — the labelled extra of DESIGN.md and METHODS.md §1.3 (the paper has only π = 0.5), giving the
    method the threshold methods' resolution. The curve's thresholds are (α_depth, π) pairs; `--grid` stays the
    α_depth grid, so both methods train the same models."""

    name = "consistentee-pi"
    display = "ConsistentEE (π sweep)"
    threshold_name = "alpha_depth,pi"
    trained_as = "consistentee"
    deviations = (*ConsistentEE.deviations,
                  "pi sweep (not in the paper): every alpha's model is also read with the exit threshold P(exit) > pi "
                  "for pi in " + ", ".join(f"{p:g}" for p in PI_GRID) + ", not only 0.5; operating points are "
                  "chosen over all (alpha_depth, pi) pairs on held-out")
    preset_notes = {preset: f"{note}; each alpha's model read at P(exit) > pi, pi " + ", ".join(f"{p:g}" for p in PI_GRID)
                    + " (consistentee's trainings)" for preset, note in ConsistentEE.preset_notes.items()}

    def thresholds(self, grid: Sequence[Any]) -> list[Any]:
        return [(float(alpha), pi) for alpha in grid for pi in PI_GRID]

    def variant(self, threshold: Any) -> Any:
        """The α_depth of an (α_depth, π) pair; an α_depth alone is its own."""
        return threshold[0] if isinstance(threshold, (tuple, list)) else threshold

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        """An α_depth alone (a `--grid` value) is checked and read at π = 0.5; an (α_depth, π) pair at π."""
        if not isinstance(threshold, (tuple, list)):
            return super().rule(model, threshold)
        alpha, pi = threshold
        check_alpha(alpha)
        if not 0.0 <= pi <= 1.0:
            raise UserError(f"the exit threshold pi must be in [0, 1], got {pi}")
        return ScoreAbove("exit_prob", float(pi))

    def ltt_order(self, grid: Sequence[Any]) -> list[int]:
        """α ascending (the reward pays more for exiting), and within one α's model π descending (fewer exits)."""
        return sorted(range(len(grid)), key=lambda i: (grid[i][0], -grid[i][1]))


METHOD = ConsistentEE()
VANILLA = ConsistentEEVanilla()
PI_SWEEP = ConsistentEEPiSweep()
