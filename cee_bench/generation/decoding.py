"""Token-level early-exit decoding with a KV cache and state copying (batch 1).

The prompt runs every layer (docs/METHODS.md §2.3). Each later token runs layer by layer; after every exit layer the
method's rule decides whether to stop. When a token exits at layer i, every deeper layer j > i still needs a key and
value for that position, or later tokens would attend to a hole: we run only layer j's input norm and K/V
projections (with rotary) on the *exited* state h_i and append them to layer j's cache — CALM's state propagation
(§8.5), which ConsistentEE-LLM's inference code also uses. The cost is one K/V projection per skipped layer,
stacked into a single matmul (`StatePropagator`).

Sampling follows the paper (beam 1, top-k 40, top-p 0.75, temperature 1) with one uniform draw per token from a
generator seeded per example, so runs of different methods on one prompt are *coupled*: where their distributions
agree they pick the same token, and differences measure the method rather than the dice. Greedy is an option
(and what the tests use).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from cee_bench.errors import UserError
from cee_bench.generation.model import MultiExitLM


class TokenExitRule(Protocol):
    """A method's per-token exit decision at one intermediate exit layer.

    `previous` is the state at the previous exit layer (None at the first), `step` the 0-based decoding position.
    Returns (exit now?, confidence, logits if the rule already computed them, else None)."""

    def decide(self, mlm: MultiExitLM, layer: int, hidden: torch.Tensor, previous: torch.Tensor | None,
               step: int) -> tuple[bool, float, torch.Tensor | None]: ...


@dataclass(frozen=True)
class Decoding:
    """How a token is picked from logits: greedy, or temperature + top-k + top-p with one coupled uniform draw."""

    greedy: bool = False
    top_k: int = 40
    top_p: float = 0.75
    temperature: float = 1.0

    def pick(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        """One token id from 1-D (or [1, V]) logits."""
        logits = logits.reshape(-1).float()
        if self.greedy:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.temperature, dim=-1)
        top, ids = probs.topk(min(self.top_k, probs.numel()))
        keep = (top.cumsum(0) - top) < self.top_p  # the smallest prefix whose mass reaches top_p
        top = top * keep
        cdf = (top / top.sum()).cumsum(0)
        u = torch.rand((), generator=generator).to(cdf.device)
        return int(ids[min(int(torch.searchsorted(cdf, u)), len(ids) - 1)])


@dataclass
class Generation:
    """One generated continuation with its per-token audit trail.

    The first token comes from the prompt pass (all layers); `decode_seconds` and the layer statistics used for
    speed-ups cover the later tokens, the ones a method can accelerate."""

    tokens: list[int] = field(default_factory=list)
    exit_layers: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def decode_exit_layers(self) -> list[int]:
        return self.exit_layers[1:]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Llama's rotary helper (kept local: its import path moves between transformers releases)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StatePropagator:
    """All skipped layers' K/V from one exited state with a single matmul.

    Layer j's K/V of state h are `k_proj(w_j ⊙ rms(h))` and `v_proj(w_j ⊙ rms(h))`; the RMS factor is the same for
    every j, so folding each layer's norm weight into its projections gives one stacked [H, L·2·kv] matrix and
    the K/V of every deeper layer come out of one product — instead of a norm and two projections per layer,
    whose Python overhead is comparable to the arithmetic on a small model. Llama-style RMSNorm is assumed
    (`weight`, `variance_epsilon`); projection biases (Qwen2) are kept."""

    def __init__(self, mlm: MultiExitLM) -> None:
        blocks, biases = [], []
        for layer in mlm.layers:
            attn, weight = layer.self_attn, layer.input_layernorm.weight
            for proj in (attn.k_proj, attn.v_proj):
                blocks.append(weight[:, None] * proj.weight.T)
                biases.append(proj.bias if proj.bias is not None else proj.weight.new_zeros(proj.out_features))
        self.kv_dim = blocks[0].shape[1]
        self.head_dim = mlm.layers[0].self_attn.head_dim
        self.weight = torch.cat(blocks, dim=1).detach()
        self.bias = torch.cat(biases).detach()
        self.eps = mlm.layers[0].input_layernorm.variance_epsilon

    def __call__(self, hidden: torch.Tensor, exit_layer: int, num_layers: int, cache: object,
                 position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
        start = exit_layer * 2 * self.kv_dim
        normed = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
        kv = normed @ self.weight[:, start:] + self.bias[start:]  # [1, 1, (L-i)·2·kv]
        kv = kv.view(num_layers - exit_layer, 2, 1, -1, 1, self.head_dim)  # [L-i, K|V, batch, heads, seq, hd]
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        keys = kv[:, 0] * cos + rotate_half(kv[:, 0]) * sin
        for offset in range(num_layers - exit_layer):
            cache.update(keys[offset], kv[offset, 1], exit_layer + offset)


def propagate_state(mlm: MultiExitLM, hidden: torch.Tensor, exit_layer: int, cache: object,
                    position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Append K/V computed from the exited state `hidden` to the cache of every layer deeper than `exit_layer`."""
    if mlm.propagator is None:
        mlm.propagator = StatePropagator(mlm)
    mlm.propagator(hidden, exit_layer, mlm.num_layers, cache, position_embeddings)


def check_fits(mlm: MultiExitLM, prompt_length: int, max_new_tokens: int) -> None:
    """Refuse a prompt that does not fit the model's context with room for the continuation."""
    if prompt_length + max_new_tokens > mlm.context_length:
        raise UserError(f"prompt of {prompt_length} tokens + {max_new_tokens} new tokens exceeds the model's "
                        f"context of {mlm.context_length} tokens")


def _layers_forward(mlm: MultiExitLM, hidden: torch.Tensor, cache: object, position_embeddings: tuple,
                    rule: TokenExitRule | None, step: int) -> tuple[int, float, torch.Tensor]:
    """Run one new token up the layers until the rule exits; returns (exit layer, confidence, logits)."""
    previous = None
    last = mlm.num_layers
    for index, layer in enumerate(mlm.layers):
        hidden = layer(hidden, cache=cache, position_embeddings=position_embeddings)
        depth = index + 1
        if rule is None or depth == last or not mlm.is_exit[depth]:
            continue
        exit_now, confidence, logits = rule.decide(mlm, depth, hidden, previous, step)
        if exit_now:
            propagate_state(mlm, hidden, depth, cache, position_embeddings)
            return depth, confidence, logits if logits is not None else mlm.exit_logits(hidden, depth)
        previous = hidden
    return last, 1.0, mlm.exit_logits(hidden, last)


@torch.no_grad()
def generate(mlm: MultiExitLM, prompt_ids: torch.Tensor, *, rule: TokenExitRule | None, max_new_tokens: int,
             decoding: Decoding, eos_ids: frozenset[int] = frozenset(), seed: int = 0,
             return_cache: bool = False) -> Generation | tuple[Generation, object]:
    """Early-exit decoding of one prompt ([1, T] ids). `rule=None` is the full model through the same code path,
    which is what measured speed-ups compare against."""
    from transformers import DynamicCache

    check_fits(mlm, prompt_ids.shape[-1], max_new_tokens)
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache(config=mlm.config)
    out = Generation()
    length = prompt_ids.shape[-1]

    start = time.perf_counter()
    hidden = mlm.embed(prompt_ids)
    position_embeddings = mlm.rotary(hidden, torch.arange(length, device=prompt_ids.device)[None])
    for layer in mlm.layers:
        hidden = layer(hidden, cache=cache, position_embeddings=position_embeddings)
    token = decoding.pick(mlm.exit_logits(hidden[:, -1], mlm.num_layers), generator)
    out.prefill_seconds = time.perf_counter() - start
    out.tokens.append(token)
    out.exit_layers.append(mlm.num_layers)
    out.confidences.append(1.0)

    start = time.perf_counter()
    while len(out.tokens) < max_new_tokens and token not in eos_ids:
        position = length + len(out.tokens) - 1
        ids = torch.tensor([[token]], device=prompt_ids.device)
        hidden = mlm.embed(ids)
        position_embeddings = mlm.rotary(hidden, torch.tensor([[position]], device=prompt_ids.device))
        layer, confidence, logits = _layers_forward(mlm, hidden, cache, position_embeddings, rule,
                                                    len(out.tokens))
        token = decoding.pick(logits, generator)
        out.tokens.append(token)
        out.exit_layers.append(layer)
        out.confidences.append(confidence)
    out.decode_seconds = time.perf_counter() - start
    return (out, cache) if return_cache else out
