"""REINFORCE for an exit policy: how trajectories are drawn and how their gradient is estimated (ConsistentEE's Eq. 5).

A trajectory of one instance is its exit layer e: "continue" at every deciding layer before e, "exit" at e (the top
layer has no decision: it always answers). With π_i = P(exit | s_i) = sigmoid(z_i),
log π(τ) = Σ_{i<e} log(1 − π_i) + log π_e (no exit term when e is the top layer).

Two estimators, each drawing K trajectories per instance (`ESTIMATORS`):
- `greedy-epsilon`, the reference's behaviour: at every deciding layer the greedy action (exit iff π > 0.5) or, with
  probability ε, a fair coin flip; the loss is −mean((r − mean_K r)·log π(τ)), with no importance weight. Its
  expected push on a decision's logit is about (ε/2)(1 − ε/2)·Δ whatever π is, so logits drift without bound and the
  bias term, driven by the advantage averaged over all rows, wins over a weak dependence on the state: the policy
  settles into one decision per layer for the whole population (issue 20).
- `on-policy`: actions drawn from the behaviour policy q_i = (1 − ε)·π_i + ε/2 (π mixed with a coin flip), each
  trajectory weighted by w = π(τ)/q(τ) (detached; at most (1 − ε)^−(L−1)), and a leave-one-out baseline
  A_k = K/(K−1)·(r_k − mean_j r_j) = r_k − mean_{j≠k} r_j; the loss is −mean(w·A·log π(τ)), an unbiased estimate of
  −∇E_π[r]. Its push vanishes as π saturates, so the loss stays bounded.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

ON_POLICY = "on-policy"
GREEDY_EPSILON = "greedy-epsilon"


def sample_greedy_epsilon(exit_logits: torch.Tensor, samples: int, epsilon: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """K ε-greedy roll-outs per row: at every deciding layer the greedy action (exit iff P(exit) > 0.5) or, with
    probability ε, a fair coin flip; the first exit ends the trajectory. `exit_logits` [N, L−1] → 0-based exit
    layers [N, K] (L−1, the top layer, when no deciding layer exits)."""
    shape = (exit_logits.shape[0], samples, exit_logits.shape[1])
    draws = torch.rand((2, *shape), generator=generator, device="cpu").to(exit_logits.device)
    greedy = (exit_logits > 0).unsqueeze(1).expand(shape)
    return first_exit(torch.where(draws[0] < epsilon, draws[1] < 0.5, greedy))


def behaviour_log_probs(exit_logits: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q, log(1 − q)) per decision of the behaviour policy q = (1 − ε)·π + ε/2, computed in log space so a
    saturated π (and ε = 0, where q = π) stays finite."""
    mix = math.log1p(-epsilon) if epsilon < 1 else -math.inf
    coin = math.log(epsilon / 2) if epsilon > 0 else -math.inf
    coin_t = torch.full_like(exit_logits, coin)
    log_exit = torch.logaddexp(mix + nn.functional.logsigmoid(exit_logits), coin_t)
    log_stay = torch.logaddexp(mix + nn.functional.logsigmoid(-exit_logits), coin_t)
    return log_exit, log_stay


def sample_behaviour(exit_logits: torch.Tensor, samples: int, epsilon: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """K roll-outs per row from q = (1 − ε)·π + ε/2: 0-based exit layers [N, K]."""
    q = behaviour_log_probs(exit_logits.detach(), epsilon)[0].exp()
    shape = (exit_logits.shape[0], samples, exit_logits.shape[1])
    draws = torch.rand(shape, generator=generator, device="cpu").to(exit_logits.device)
    return first_exit(draws < q.unsqueeze(1))


def first_exit(actions: torch.Tensor) -> torch.Tensor:
    """The first deciding layer whose action is "exit" ([..., L−1] bool → [...]); L−1 (the top) when none is."""
    first = actions.float().argmax(-1)  # argmax returns the first maximum
    return torch.where(actions.any(-1), first, torch.full_like(first, actions.shape[-1]))


def path_log_prob(log_exit: torch.Tensor, log_stay: torch.Tensor, exits: torch.Tensor) -> torch.Tensor:
    """Σ_{i<e} log_stay_i + log_exit_e for per-decision log-probabilities [N, L−1] and exits [N, K] → [N, K]."""
    layers = torch.arange(log_exit.shape[1], device=log_exit.device)
    before = (layers < exits.unsqueeze(-1)).to(log_exit.dtype)
    at = (layers == exits.unsqueeze(-1)).to(log_exit.dtype)
    return (log_stay.unsqueeze(1) * before + log_exit.unsqueeze(1) * at).sum(-1)


def trajectory_log_prob(exit_logits: torch.Tensor, exits: torch.Tensor) -> torch.Tensor:
    """log π(τ) of exits [N, K] (0-based) under the policy's exit logits [N, L−1]."""
    return path_log_prob(nn.functional.logsigmoid(exit_logits), nn.functional.logsigmoid(-exit_logits), exits)


def greedy_epsilon_loss(exit_logits: torch.Tensor, reward_of: Callable[[torch.Tensor], torch.Tensor], samples: int,
                        epsilon: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference's estimator (module docstring): ε-greedy roll-outs, mean baseline, no importance weight.
    `reward_of(exits [N, K]) → rewards [N, K]`."""
    exits = sample_greedy_epsilon(exit_logits.detach(), samples, epsilon, generator)
    rewards = reward_of(exits)
    advantage = (rewards - rewards.mean(1, keepdim=True)).detach()
    return -(advantage * trajectory_log_prob(exit_logits, exits)).mean()


def on_policy_loss(exit_logits: torch.Tensor, reward_of: Callable[[torch.Tensor], torch.Tensor], samples: int,
                   epsilon: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The on-policy estimator (module docstring): roll-outs from q, weight π(τ)/q(τ), leave-one-out baseline."""
    exits = sample_behaviour(exit_logits, samples, epsilon, generator)
    log_pi = trajectory_log_prob(exit_logits, exits)
    weight = (log_pi.detach() - path_log_prob(*behaviour_log_probs(exit_logits.detach(), epsilon), exits)).exp()
    rewards = reward_of(exits)
    advantage = samples / (samples - 1) * (rewards - rewards.mean(1, keepdim=True))
    return -(weight * advantage.detach() * log_pi).mean()


Estimator = Callable[..., torch.Tensor]
ESTIMATORS: dict[str, Estimator] = {ON_POLICY: on_policy_loss, GREEDY_EPSILON: greedy_epsilon_loss}
