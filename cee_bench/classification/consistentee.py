"""ConsistentEE for classification (Zeng et al., AAAI 2024), docs/METHODS.md §1 and the paper's "Model Training and
Inference" (authoritative where the two differ).

Heads: the backbone's shared pooler, dropout and a `Linear(H, C)` per layer, plus one policy network per layer
(`Linear(H, 32) → GELU → Linear(32, 1) → sigmoid` on the pooled vector, no dropout) giving P(exit | s_t). The top
layer has no policy: it always answers (its `exit_prob` signal is 1), so only L−1 exit decisions exist.

Training, the paper's iterative steps 1-5:
1. `init`: every head and the backbone on the weighted CE of Eq. 1 (Σ i·CE_i / Σ i);
then for each α of the grid, starting again from the step-1 weights:
2. the memorized layer M of every training instance (Eq. 7; M = L when the top layer is wrong);
3. `policy`: the policy alone by REINFORCE (Eq. 5) with backbone and classifiers frozen — K ε-greedy trajectories
   per instance, per-instance mean-reward baseline, reward Eq. 4 (hardness-guided) or Eq. 3 (vanilla). Because the
   backbone is frozen, the pooled states and per-layer CE of the training set are computed once per round (one
   backbone pass, eval mode) and reused for every epoch and every trajectory;
4. `refine`: backbone and classifiers on Eq. 6 (CE only at each instance's exit layer) with the policy frozen;
5. repeat 2-4 until converged: after a round, stop when the held-out exit-layer distribution moved by at most
   `exit_tolerance` (total variation) *and* the held-out main score of the task (accuracy; F1 on MRPC/QQP) by at most
   `score_tolerance` since the previous round, or after `max_rounds` rounds, whichever comes first. Each α's record
   says whether it converged (`method_meta.converged`, α → bool); stopping at `max_rounds` is `False`.
Step 1 is trained once and shared by every α (each α restarts from the step-1 weights), so more α values cost only
steps 2-4 each.
Step 1 is PABEE's training (same heads, loss and trainable set), so `cee-bench run` trains it once for PABEE,
PCEE-BERT and both ConsistentEE variants wherever their stage settings agree (`shares`,
`cee_bench.classification.sharing`); every finished round of every α is kept in the model store, so an interrupted
run resumes at the round it was in.
`released_variant=True` runs the released BERT code's shape instead: one round, policy trainable in step 4 (loss =
CE at each of K sampled exits + the policy loss).

Inference: exit at the first layer whose P(exit) > 0.5; the prediction is that layer's classifier's. The curve is one
trained model per α (the paper's Figure 3/4 way); `fit` returns {α_depth: model}.

The α grid is depth-free. A grid value α_depth is the depth cost, in nats of the reward, of exiting at the top layer
L instead of layer 1 under the vanilla reward (Eq. 3): α_depth = α·(L − 1), so the reward uses α = α_depth / (L − 1)
(`alpha_per_layer`); under Eq. 4 the cost is scaled further by the instance's (1 − M/L). The reference code's α
(0.01-0.08 for 12-layer BERT) is α_depth 0.11-0.88; read as a per-layer α on our 6-layer backbone the same numbers
cost at most 0.4 nats, far less than the CE gaps between layers, so the policy never exits early (issue 9). One α
grid therefore serves every backbone depth, and the curve's thresholds, `--grid` and the config files all speak
α_depth. `cpu`'s grid: see `CPU_ALPHA_GRID`.
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
from cee_bench.classification.exits import ExitRule, ScoreAbove, simulate
from cee_bench.classification.fit import FitContext, per_layer_ce, weighted_ce
from cee_bench.classification.frozen import frozen_states, train_on_states
from cee_bench.classification.method import CPU_STAGE, SMOKE_STAGE, Method
from cee_bench.classification.metrics import METRICS
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.classification.trace import compute_trace
from cee_bench.distributed import from_main
from cee_bench.errors import UserError
from cee_bench.training import Stage

POLICY_HIDDEN = 32
EXIT_THRESHOLD = 0.5
CONVERGENCE = ("after each round r >= 2: stop when the held-out exit-layer distribution moved by <= exit_tolerance "
               "(total variation) and the held-out main score (accuracy; F1 on MRPC/QQP) by <= score_tolerance since "
               "round r-1; always stop after max_rounds rounds")
ALPHA_RULE = "alpha = alpha_depth / (L - 1): alpha_depth is the vanilla reward's depth cost of layer L over layer 1"
# The `cpu` α_depth grid, chosen on held-out train, never dev, to span from ~0% saved to past DeeBERT's ≤1% point
# (~39% saved on SST-2). Measured with `cee-bench run --task sst2 --methods consistentee --data-dir
# ../shared/data/glue --max-train-samples 400 --max-seq-length 64 --max-eval-samples 400 --grid ...` (cpu stages,
# seed 42; 400 held-out rows; layers 1-3 alone are at chance, 0.55, on so few rows). Held-out saved layers (accuracy):
# α_depth 0: 9.8% (0.833), 0.1: 16.7% (0.833), 0.25: 16.7% (0.828), 0.5: 10.4% (0.840), 0.6: 10% (0.838),
# 0.75, 1, 1.75, 3, 5: 83.3% (0.553: every example exits at layer 1, the majority class). The policy flips from
# "almost never exit" to "always exit at once" between 0.6 and 0.75, so the grid is dense there, and keeps values
# either side because better early layers (more training rows) move the edge. Rounds converged for 6 of the first
# sweep's 8 values (0-5; 0.6 and 0.75 are a second sweep).
CPU_ALPHA_GRID = (0.0, 0.3, 0.45, 0.6, 0.675, 0.75, 1.0)


@dataclass(frozen=True)
class PolicyStage(Stage):
    """The policy stage's optimiser settings plus the RL settings of the rounds around it (they live here so each
    preset carries its own and the results record stores them with the stages)."""

    samples: int = 8  # K trajectories per instance
    epsilon: float = 0.1  # per-decision probability of a coin-flip action instead of the greedy one
    alphas: tuple[float, ...] = (0.1,)  # the α_depth grid (depth-free, see ALPHA_RULE): one trained model each
    max_rounds: int = 2
    exit_tolerance: float = 0.02
    score_tolerance: float = 0.005
    released_variant: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.samples, bool) or int(self.samples) != self.samples or self.samples < 2:
            raise UserError(f"K (samples per instance) must be a whole number >= 2 — the per-instance mean baseline "
                            f"of one trajectory is its own reward, so nothing is learnt — got {self.samples}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise UserError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not self.alphas:
            raise UserError("the alpha grid is empty")
        for alpha in self.alphas:
            check_alpha(alpha)
        if isinstance(self.max_rounds, bool) or int(self.max_rounds) != self.max_rounds or self.max_rounds < 1:
            raise UserError(f"max_rounds must be a whole number >= 1 so training always stops, got {self.max_rounds}")
        for name in ("exit_tolerance", "score_tolerance"):
            value = getattr(self, name)
            if not value >= 0 or math.isinf(value):
                raise UserError(f"{name} must be a finite number >= 0, got {value}")


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


def memorized_layer(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 7: the 1-based layer from which every classifier up to the top predicts the gold label; L when the top
    layer is wrong (never correct through the top). `preds`: [N, L] argmax per layer, `labels`: [N]."""
    num_layers = preds.shape[1]
    correct = (preds == labels.unsqueeze(1)).long()
    trailing_correct = correct.flip(1).cumprod(1).sum(1)
    return (num_layers - trailing_correct + 1).clamp(max=num_layers)


def reward(ce_exit: torch.Tensor, exit_layer: torch.Tensor, alpha: float, *, num_layers: int,
           memorized: torch.Tensor | None = None) -> torch.Tensor:
    """Reward of exiting at 1-based `exit_layer` with cross-entropy `ce_exit` there: Eq. 3 (vanilla, `memorized`
    None) −CE − α·t, or Eq. 4 (hardness-guided) −CE − α·(1 − M/L)·t, so easy instances (small M) pay more per layer.
    `memorized` broadcasts against `ce_exit` (e.g. [N, 1] against [N, K])."""
    coefficient = alpha if memorized is None else alpha * (1.0 - memorized.to(ce_exit.dtype) / num_layers)
    return -ce_exit - coefficient * exit_layer.to(ce_exit.dtype)


def sample_exits(exit_logits: torch.Tensor, samples: int, epsilon: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """K ε-greedy roll-outs per row: at every deciding layer the greedy action (exit iff P(exit) > 0.5) or, with
    probability ε, a fair coin flip; the first exit ends the trajectory. `exit_logits` [N, L−1] → 0-based exit
    layers [N, K] (L−1, the top layer, when no deciding layer exits)."""
    n, deciding = exit_logits.shape
    shape = (n, samples, deciding)
    draws = torch.rand((2, *shape), generator=generator, device="cpu").to(exit_logits.device)
    greedy = (exit_logits > 0).unsqueeze(1).expand(shape)
    actions = torch.where(draws[0] < epsilon, draws[1] < 0.5, greedy)
    first = actions.float().argmax(-1)  # first exiting layer (argmax returns the first maximum)
    return torch.where(actions.any(-1), first, torch.full_like(first, deciding))


def trajectory_log_prob(exit_logits: torch.Tensor, exits: torch.Tensor) -> torch.Tensor:
    """log π(τ) = Σ_{i<e} log(1 − π_i) + log π_e (no exit term when e is the top layer, which has no decision).
    `exit_logits` [N, L−1], `exits` [N, K] 0-based → [N, K]."""
    layers = torch.arange(exit_logits.shape[1], device=exit_logits.device)
    logits = exit_logits.unsqueeze(1)
    before = (layers < exits.unsqueeze(-1)).to(logits.dtype)
    at = (layers == exits.unsqueeze(-1)).to(logits.dtype)
    return (nn.functional.logsigmoid(-logits) * before + nn.functional.logsigmoid(logits) * at).sum(-1)


def reinforce_loss(log_prob: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE on Eq. 5 with the per-instance mean reward of its K trajectories as the baseline: [N, K] → scalar."""
    advantage = (rewards - rewards.mean(1, keepdim=True)).detach()
    return -(advantage * log_prob).mean()


def policy_loss(exit_logits: torch.Tensor, ce: torch.Tensor, labels_memorized: torch.Tensor | None, alpha: float,
                stage: PolicyStage, generator: torch.Generator | None = None) -> torch.Tensor:
    """One REINFORCE step's loss for a batch: sample K trajectories from `exit_logits` [B, L−1], reward them with the
    per-layer CE `ce` [B, L] at their exit layers (and M [B] for the hardness-guided reward)."""
    exits = sample_exits(exit_logits.detach(), stage.samples, stage.epsilon, generator)
    rewards = reward(ce.detach().gather(1, exits), exits + 1, alpha, num_layers=ce.shape[1],
                     memorized=None if labels_memorized is None else labels_memorized.unsqueeze(1))
    return reinforce_loss(trajectory_log_prob(exit_logits, exits), rewards)


@dataclass
class TrainStates:
    """What one eval-mode backbone pass over the training set gives a round: pooled states of the deciding layers
    [N, L−1, H], per-layer CE [N, L] and per-layer predictions [N, L]."""

    pooled: torch.Tensor
    ce: torch.Tensor
    preds: torch.Tensor


def collect_states(model: MultiExitModel, data: Encoded, batch_size: int) -> TrainStates:
    """One backbone pass over `data` in eval mode (no dropout: exploration comes from ε, see `deviations`), in its
    row order; batches are length-bucketed."""
    states = frozen_states(model, data, batch_size, lambda out, batch: {
        "pooled": out["pooled"][:, :-1], "ce": per_layer_ce(out["logits"], batch["labels"]),
        "preds": out["logits"].argmax(-1)})
    return TrainStates(states["pooled"], states["ce"], states["preds"])


def exit_layers(signals: dict[str, torch.Tensor]) -> torch.Tensor:
    """0-based exit layers of the inference rule (first P(exit) > 0.5) over stacked signals [B, L, ...]."""
    return simulate({"logits": signals["logits"].detach(), "exit_prob": signals["exit_prob"].detach()},
                    ScoreAbove("exit_prob", EXIT_THRESHOLD))


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


def train_refine(ctx: FitContext, memorized: torch.Tensor | None, alpha: float) -> list[float]:
    """Step 4, Eq. 6: CE only at the layer where the (frozen) policy exits each instance. In the released-code
    variant the policy is trainable too: CE averaged over K ε-greedy exits plus the policy loss."""
    stage: PolicyStage = ctx.stages["policy"]
    model = ctx.model
    policies = model.extras["policy"]
    sampler = torch.Generator().manual_seed(ctx.seed * 104729)

    def loss_fn(batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        out = ctx.forward(batch)
        labels = batch["labels"]
        if not stage.released_variant:
            exits = exit_layers(out)
            return nn.functional.cross_entropy(out["logits"][torch.arange(len(labels)), exits], labels)
        ce = per_layer_ce(out["logits"], labels)
        logits = policy_logits(policies, out["pooled"])
        exits = sample_exits(logits.detach(), stage.samples, stage.epsilon, sampler)
        mem = None if memorized is None else memorized.to(labels.device)[batch["index"]]
        return ce.gather(1, exits).mean() + policy_loss(logits, ce, mem, alpha, stage, sampler)

    params = list(model.parameters()) if stage.released_variant else _non_policy_params(model)
    return ctx.train_stage("refine", params, loss_fn)


def heldout_stats(model: MultiExitModel, data: Encoded, batch_size: int,
                  metric: str = "accuracy") -> dict[str, Any]:
    """Exit-layer distribution (1-based layer → fraction), accuracy and the task's main score (`metric`, what the
    convergence test watches) of the inference rule on held-out data."""
    trace = compute_trace(model, data, split="heldout", batch_size=batch_size)
    exits = simulate(trace.signals, ScoreAbove("exit_prob", EXIT_THRESHOLD))
    preds = trace.signals["logits"][torch.arange(len(trace)), exits].argmax(-1)
    histogram = torch.bincount(exits, minlength=trace.num_layers).float() / max(len(trace), 1)
    return {"exit_histogram": [round(float(x), 4) for x in histogram],
            "accuracy": float((preds == trace.labels).float().mean()),
            "metric": metric, "score": METRICS[metric](preds.numpy(), trace.labels.numpy()),
            "mean_exit_layer": float(exits.float().mean() + 1)}


def converged(previous: dict[str, Any], current: dict[str, Any], stage: PolicyStage) -> bool:
    """The stopping test of step 5 (see `CONVERGENCE`)."""
    moved = 0.5 * sum(abs(a - b) for a, b in zip(previous["exit_histogram"], current["exit_histogram"]))
    return moved <= stage.exit_tolerance and abs(previous["score"] - current["score"]) <= stage.score_tolerance


def train_rounds(ctx: FitContext, alpha: float, reward_kind: str, series: str | None = None) -> list[dict[str, Any]]:
    """Steps 2-5 for one α on `ctx.model` (already initialised by step 1); returns one stats row per round.

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
        states = collect_states(ctx.model, ctx.train, ctx.eval_batch_size)
        memorized = memorized_layer(states.preds.cpu(), ctx.train.labels)
        hardness = memorized if reward_kind == "hardness" else None
        policy_losses = train_policy(ctx, states, hardness, alpha, round_index)
        del states
        refine_losses = train_refine(ctx, hardness, alpha)
        stats = heldout_stats(ctx.model, ctx.heldout, ctx.eval_batch_size, ctx.main_metric)
        stats.update(round=round_index + 1, policy_loss=policy_losses, refine_loss=refine_losses,
                     mean_memorized_layer=float(memorized.float().mean()))
        ctx.progress.log(f"  α={alpha:g} round {stats['round']}: held-out {stats['metric']} {stats['score']:.4f}, "
                         f"mean exit layer {stats['mean_exit_layer']:.2f}")
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


class ConsistentEE(Method):
    name = "consistentee"
    display = "ConsistentEE"
    pooler = "shared"
    threshold_name = "alpha_depth"
    reward_kind = "hardness"
    deviations = (
        "policy-stage states computed once per round in eval mode (no dropout); the K trajectories differ by "
        "epsilon-greedy exploration (epsilon > 0), where the reference sets epsilon = 0 and relies on dropout noise "
        "across K dropout-perturbed passes",
        "step 4 follows the paper (policy frozen, CE at the greedy exit layer, one pass per batch); the released "
        "BERT code trains the policy too with K copies (PolicyStage.released_variant=True, off by default)",
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
                "policy": PolicyStage(epochs=10, batch_size=32, lr=1e-3, samples=8, alphas=CPU_ALPHA_GRID,
                                      max_rounds=2),
                "refine": Stage(epochs=1, batch_size=16, lr=3e-5)},
        "paper": {"init": Stage(epochs=5, batch_size=16, lr=1e-5),
                  "policy": PolicyStage(epochs=2, batch_size=32, lr=3e-4, samples=8, epsilon=0.05,
                                        alphas=(0.11, 0.22, 0.44, 0.88), max_rounds=3),
                  "refine": Stage(epochs=2, batch_size=32, lr=3e-5)},
    }
    preset_notes = {preset: f"{ALPHA_RULE}; alpha_depth grid " + ", ".join(f"{a:g}" for a in s["policy"].alphas)
                    for preset, s in stages.items()}
    signal_fn = staticmethod(policy_signals)
    shares = {"init": "pabee"}  # step 1 (Eq. 1) is PABEE's training: trained once per training key (`sharing`)
    resumes_rounds = True

    def grid(self, num_layers: int) -> Sequence[Any]:
        """Only documentary: `fit` always returns one model per α_depth of the preset's policy stage."""
        return list(self.stages["cpu"]["policy"].alphas)

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

    def fit(self, ctx: FitContext) -> dict[float, MultiExitModel]:
        """Steps 2-5 per α from the step-1 weights that `ctx.model` holds (step 1 is `shares`' stage, trained once and
        shared by every α) — policy included, so every α starts from the same untrained policy — restored in place
        because `train_stage` is bound to `ctx.model`; each α's trained model is kept as a copy, keyed by its
        α_depth, and each α's rounds are checkpointed as the series `alpha_depth=<value>`."""
        from cee_bench.classification.store import variant_name

        stage: PolicyStage = ctx.stages["policy"]
        initial = copy.deepcopy(ctx.model.state_dict())
        models: dict[float, MultiExitModel] = {}
        rounds_log: dict[str, Any] = {}
        per_layer: dict[str, float] = {}
        for alpha_depth in stage.alphas:
            ctx.model.load_state_dict(initial)
            key = f"{alpha_depth:g}"
            per_layer[key] = alpha_per_layer(alpha_depth, ctx.model.num_layers)
            rounds_log[key] = train_rounds(ctx, per_layer[key], self.reward_kind,
                                           variant_name(self.threshold_name, alpha_depth))
            models[alpha_depth] = copy.deepcopy(ctx.model).eval()
        ctx.meta.update(alpha_rule=ALPHA_RULE, alpha_per_layer=per_layer, step1_shared_across_alphas=True,
                        converged={key: bool(log[-1]["converged"]) for key, log in rounds_log.items()})
        ctx.log.update(reward=self.reward_kind, convergence=CONVERGENCE, rounds=rounds_log)
        ctx.log.pop("policy", None)
        ctx.log.pop("refine", None)  # per-round losses live under "rounds"
        return models


class ConsistentEEVanilla(ConsistentEE):
    """The reward ablation (Figure 4): Eq. 3's uniform trade-off −CE − α·t instead of the hardness-guided Eq. 4."""

    name = "consistentee-vanilla"
    display = "ConsistentEE (vanilla reward)"
    reward_kind = "vanilla"


METHOD = ConsistentEE()
VANILLA = ConsistentEEVanilla()
