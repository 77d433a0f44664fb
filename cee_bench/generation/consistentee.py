"""ConsistentEE for generation (ConsistentEE-LLM, docs/METHODS.md §2), the whole method in one module: per-token policy
networks, their training stages, the inference rule and the method (`METHOD`: its candidates and record metadata).

Architecture: a policy `Linear(H, 1)` + sigmoid per exit layer on the final-RMS-normed state of the token (§2.1);
exits are the shared norm + head with low-rank residual adapters (see `model.py`; the paper uses per-layer LoRA
heads). Training, backbone frozen, token = instance, on cached states (`training.py`):
1. exits with the weighted CE `Σ_i i·CE_i / Σ_i i` (mode 1);
2. the policy with the vanilla reward `r = −CE_e − α·e` (the paper uses the vanilla reward for generation):
   the batch is tiled K = 4 times, the first copy never exits early and only serves the baseline (the group mean
   over the K copies), the trajectory log-probability is divided by the exit layer, loss = policy loss (mode 2);
3. the exits again, each token's CE at the policy's (greedy, π > 0.5) exit layer (mode 3).
Inference: exit at the first exit layer with π > 0.5.
Deviations, recorded in `method_meta`: roll-outs use the full model's cached states, so a token's state is not
the state-copied one it sees at inference when an earlier token exited (the reference recomputes with copying);
exits are adapters, not LoRA heads; optimiser steps and token counts are the preset's, not the paper's epochs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from cee_bench.errors import UserError
from cee_bench.generation.method import Candidate, GenerationMethod, TrainingContext
from cee_bench.generation.model import MultiExitLM
from cee_bench.generation.training import TrainingStates, sample_batches
from cee_bench.presets import GenerationPreset
from cee_bench.progress import Progress
from cee_bench.training import train_steps


class PolicyNetworks(nn.Module):
    """One `Linear(H, 1)` per layer (stacked), giving P(exit) at that layer from the normed state."""

    def __init__(self, num_layers: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_layers, hidden) / hidden ** 0.5)
        self.bias = nn.Parameter(torch.zeros(num_layers))

    def forward(self, normed: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """P(exit) for normed states [E, B, H] at 1-based `layers` [E]."""
        index = layers - 1
        return torch.sigmoid(torch.einsum("ebh,eh->eb", normed, self.weight[index]) + self.bias[index, None])


def normed_exit_states(mlm: MultiExitLM, data: TrainingStates) -> torch.Tensor:
    """[E', N, H] final-normed states at the intermediate exit layers (the policy's input), computed once."""
    with torch.no_grad():
        return torch.stack([mlm.norm(data.states[i]) for i in mlm.exit_layers if i < mlm.num_layers])


def train_token_policy(mlm: MultiExitLM, data: TrainingStates, ce: torch.Tensor, normed: torch.Tensor, *, alpha: float,
                 steps: int, lr: float, batch: int, copies: int = 4, seed: int = 0,
                 progress: Progress | None = None) -> PolicyNetworks:
    """Stage 2: REINFORCE with the vanilla reward on cached states.

    `ce` [E, N] is every exit's CE after stage 1 (`per_exit_outputs`, last row = top layer) and `normed` the
    policy inputs (`normed_exit_states`); both are computed once and shared by every α of a sweep."""
    torch.manual_seed(seed)
    policy = PolicyNetworks(mlm.num_layers, data.states.shape[-1])
    layers = torch.tensor(mlm.exit_layers)
    inner = layers[:-1]
    generator = torch.Generator().manual_seed(seed + 1)

    def loss(rows: torch.Tensor, step: int) -> torch.Tensor:
        probs = policy(normed[:, rows], inner).clamp(1e-6, 1 - 1e-6)  # [E', B]
        actions = torch.bernoulli(probs.expand(copies, -1, -1), generator=generator)
        actions[0] = 0  # the first copy is the full-depth roll-out
        exit_now = torch.cat([actions, torch.ones(copies, 1, len(rows))], dim=1)  # the top layer always exits
        exit_index = exit_now.argmax(dim=1)  # [K, B] first exit
        steps_before = torch.arange(len(inner))[None, :, None] < exit_index[:, None, :]
        log_continue = (torch.log1p(-probs)[None] * steps_before).sum(1)
        took_exit = exit_index < len(inner)
        log_exit = torch.log(probs).T[torch.arange(len(rows))[None], exit_index.clamp(max=len(inner) - 1)]
        log_prob = log_continue + log_exit.view(copies, -1) * took_exit
        exit_layer = layers[exit_index].float()
        reward = -ce[exit_index, rows[None]] - alpha * exit_layer
        advantage = reward - reward.mean(0, keepdim=True)
        return -(advantage * log_prob / exit_layer)[1:].mean()

    train_steps(f"policy (alpha {alpha:g})", policy, loss, sample_batches(data.size, batch, steps, seed), lr=lr,
                progress=progress)
    return policy.eval()


@torch.no_grad()
def policy_exit_layers(mlm: MultiExitLM, policy: PolicyNetworks, normed: torch.Tensor,
                       threshold: float = 0.5) -> torch.Tensor:
    """[N] greedy exit layer of every training position (first exit with π > threshold, else the top)."""
    layers = torch.tensor(mlm.exit_layers)
    probs = policy(normed, layers[:-1])
    exits = torch.cat([probs > threshold, torch.ones(1, normed.shape[1], dtype=torch.bool)])
    return layers[exits.float().argmax(0)]


def train_exits_at_policy(mlm: MultiExitLM, data: TrainingStates, exit_layers: torch.Tensor, *, steps: int,
                          lr: float, batch: int, seed: int, progress: Progress | None = None) -> None:
    """Stage 3: adapters trained on each token's CE at its policy exit layer (tokens reaching the top have no
    trainable exit and are skipped)."""
    early = torch.nonzero(exit_layers < mlm.num_layers).flatten()
    if early.numel() == 0:
        return

    def loss(rows: torch.Tensor, step: int) -> torch.Tensor:
        losses = [nn.functional.cross_entropy(mlm.exit_logits(data.states[layer, rows[exit_layers[rows] == layer]],
                                                              layer),
                                              data.labels[rows[exit_layers[rows] == layer]], reduction="sum")
                  for layer in exit_layers[rows].unique().tolist()]
        return sum(losses) / len(rows)

    train_steps("exits at the policy's layers", mlm.adapters, loss,
                [early[pick] for pick in sample_batches(early.numel(), batch, steps, seed)], lr=lr, progress=progress)


@dataclass
class PolicyRule:
    """ConsistentEE's inference rule (an `TokenExitRule`): exit when P(exit) > threshold (0.5 in the paper)."""

    policy: PolicyNetworks
    threshold: float = 0.5

    def decide(self, mlm: MultiExitLM, layer: int, hidden: torch.Tensor, previous: torch.Tensor | None,
               step: int) -> tuple[bool, float, torch.Tensor | None]:
        index = layer - 1
        prob = float(torch.sigmoid(mlm.norm(hidden).reshape(-1) @ self.policy.weight[index]
                                   + self.policy.bias[index]))
        return prob > self.threshold, prob, None


class ConsistentEELLM(GenerationMethod):
    """ConsistentEE-LLM as a generation method: stage 1 once (shared with the anytime CALM variants), then per α
    (ascending = most conservative first) the policy and the stage-3 exits; each α is one candidate with the 0.5
    rule (the paper's way of tracing its curve)."""

    name = "consistentee"
    display = "ConsistentEE"
    grid_name = "alpha"
    exits = "anytime"
    rule_name = "policy P(exit) > 0.5"

    def grid(self, preset: GenerationPreset) -> tuple[float, ...]:
        return tuple(sorted(preset.alphas))

    def order(self, grid: Sequence[float]) -> tuple[float, ...]:
        bad = [a for a in grid if not 0.0 <= a < math.inf]
        if bad:
            raise UserError(f"alpha must be a finite number >= 0, got {bad[0]}")
        return tuple(sorted(float(a) for a in grid))

    def candidates(self, ctx: TrainingContext, grid: Sequence[float]) -> tuple[list[Candidate], dict[str, Any]]:
        preset, base = ctx.preset, ctx.anytime
        normed: list[torch.Tensor] = []  # the policy's inputs, computed once when a policy trains
        info: dict[str, Any] = {"per_alpha": {}}
        candidates = []
        for alpha in grid:
            view = MultiExitLM(ctx.lm, ctx.exit_layers, copy.deepcopy(base.adapters))
            policy = PolicyNetworks(view.num_layers, ctx.hidden_size)

            def train(view: MultiExitLM = view, policy: PolicyNetworks = policy, alpha: float = alpha
                      ) -> dict[str, Any]:
                data = ctx.states
                if not normed:
                    normed.append(normed_exit_states(base, data))
                trained = train_token_policy(view, data, ctx.anytime_ce, normed[0], alpha=alpha,
                                             steps=preset.policy_steps, lr=preset.policy_lr,
                                             batch=preset.policy_batch, copies=preset.policy_copies, seed=ctx.seed,
                                             progress=ctx.progress)
                policy.load_state_dict(trained.state_dict())
                exits = policy_exit_layers(view, policy, normed[0])
                train_exits_at_policy(view, data, exits, steps=preset.stage3_steps, lr=preset.stage3_lr,
                                      batch=preset.exit_batch, seed=ctx.seed, progress=ctx.progress)
                return {"train_mean_exit_layer": float(exits.float().mean()), "training_positions": data.size}

            settings = {**ctx.anytime_settings, "alpha": alpha, "policy_steps": preset.policy_steps,
                        "policy_lr": preset.policy_lr, "policy_batch": preset.policy_batch,
                        "policy_copies": preset.policy_copies, "stage3_steps": preset.stage3_steps,
                        "stage3_lr": preset.stage3_lr}
            info["per_alpha"][str(alpha)] = ctx.obtain("consistentee-policy", settings,
                                                       {"policy": policy, "adapters": view.adapters}, train)
            candidates.append(Candidate({"threshold": 0.5, "alpha": alpha}, view, PolicyRule(policy.eval())))
        return candidates, info

    def metadata(self, preset: GenerationPreset) -> dict[str, Any]:
        return {"curve_parameter": "alpha", "reward": "vanilla: -CE_e - alpha*e (the paper's choice for generation)",
                "exit_rule": "P(exit) > 0.5",
                "exits": f"low-rank residual adapters (rank {preset.adapter_rank}) on the hidden state before the "
                         "shared norm + LM head, instead of per-layer LoRA LM heads",
                "deviations": ["policy roll-outs on cached full-model states (no state copying inside training)",
                               "exits are low-rank residual adapters, not LoRA heads",
                               f"{preset.exit_steps}/{preset.policy_steps}/{preset.stage3_steps} optimiser steps for "
                               "stages 1/2/3 instead of one epoch each"]}


METHOD = ConsistentEELLM()
