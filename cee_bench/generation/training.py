"""Training text → cached frozen-backbone states, per-exit losses over them, and the exits' weighted-CE training that
both generation methods use (ConsistentEE-LLM's stage 1 and the anytime CALM variants).

Every generation method here trains with the backbone frozen (CALM's meta classifier, ConsistentEE's exits and
policies), so the per-layer residual states of the training tokens are computed once and reused by every stage
(docs/DESIGN.md: "evidence once"). Token = instance: each position predicts the next token (train_on_inputs=True, as
ConsistentEE-LLM's `finetune.sh`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cee_bench.generation.model import MultiExitLM
from cee_bench.generation.tasks import PromptExample
from cee_bench.progress import Progress
from cee_bench.training import train_steps


def chat_ids(tokenizer, user: str, assistant: str | None = None) -> torch.Tensor:
    """[1, T] ids of a user turn (plus the assistant's reply when given) in the model's chat format; plain text
    when the tokenizer has no chat template."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if assistant is None:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            messages.append({"role": "assistant", "content": assistant})
            text = tokenizer.apply_chat_template(messages, tokenize=False)
    else:
        text = user + ("\n" + assistant if assistant is not None else "\n")
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def truncate_text(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut to its first `max_tokens` tokens (used for long CNN/DM articles)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


@dataclass
class TrainingStates:
    """Residual states [L+1, N, H] of N training positions (index i = after layer i) and next-token labels [N]."""

    states: torch.Tensor
    labels: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.labels.numel())


def collect_token_states(mlm: MultiExitLM, tokenizer, examples: Sequence[PromptExample], *, cutoff: int,
                   max_tokens: int) -> TrainingStates:
    """Run the frozen backbone once over the training text (prompt + response, `cutoff` tokens per sequence) and
    keep at most `max_tokens` positions."""
    chunks, labels, total = [], [], 0
    for example in examples:
        if total >= max_tokens:
            break
        ids = chat_ids(tokenizer, truncate_text(tokenizer, example.prompt, cutoff), example.target or None)
        ids = ids[:, :cutoff]
        if ids.shape[-1] < 2:
            continue
        keep = min(ids.shape[-1] - 1, max_tokens - total)
        chunks.append(mlm.all_hidden_states(ids)[:, :keep])
        labels.append(ids[0, 1:keep + 1])
        total += keep
    if not chunks:
        raise ValueError("no training text")
    return TrainingStates(torch.cat(chunks, dim=1), torch.cat(labels))


def sample_batches(size: int, batch: int, steps: int, seed: int) -> list[torch.Tensor]:
    """`steps` batches of training positions drawn with replacement from a generator seeded by `seed` (the
    frozen-backbone stages sample steps, not epochs)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, size, (min(batch, size),), generator=generator) for _ in range(steps)]


@torch.no_grad()
def per_exit_outputs(mlm: MultiExitLM, data: TrainingStates, chunk: int = 512
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE [E, N], argmax [E, N]) of every exit layer's prediction of the next token, in chunks of positions."""
    ce = torch.empty(len(mlm.exit_layers), data.size)
    argmax = torch.empty(len(mlm.exit_layers), data.size, dtype=torch.long)
    for e, layer in enumerate(mlm.exit_layers):
        for start in range(0, data.size, chunk):
            logits = mlm.exit_logits(data.states[layer, start:start + chunk], layer)
            ce[e, start:start + chunk] = torch.nn.functional.cross_entropy(
                logits, data.labels[start:start + chunk], reduction="none")
            argmax[e, start:start + chunk] = logits.argmax(-1)
    return ce, argmax


def train_exits_weighted(mlm: MultiExitLM, data: TrainingStates, *, steps: int, lr: float, batch: int,
                         seed: int, progress: Progress | None = None) -> list[float]:
    """Adapters of every intermediate exit with `Σ_i i·CE_i / Σ_i i` (ConsistentEE-LLM's stage 1, CALM's
    anytime-prediction loss; `TrainingContext.anytime` trains it once per run for both); returns the loss per step."""
    layers = [i for i in mlm.exit_layers if i < mlm.num_layers]
    weights = torch.tensor(layers, dtype=torch.float32)
    weights = weights / weights.sum()

    def loss(rows: torch.Tensor, step: int) -> torch.Tensor:
        return sum(w * nn.functional.cross_entropy(mlm.exit_logits(data.states[i, rows], i), data.labels[rows])
                   for w, i in zip(weights, layers))

    return train_steps("exits (weighted CE)", mlm.adapters, loss, sample_batches(data.size, batch, steps, seed),
                       lr=lr, progress=progress)
