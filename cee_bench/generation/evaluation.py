"""Decode a split with one exit rule and turn the outputs into one curve point (quality, layers, measured speed).

Measured speed-up = the rule's decode tokens/s ÷ the full model's decode tokens/s, both measured in this process on
the same prompts through the same decoding code (`rule=None` is the full model). With paired timing (the default)
the full model decodes each prompt again right before the rule does, so load that drifts during a long run (a
shared machine) hits both sides of each ratio alike. Tokens/s and layers per token count the tokens after the
first: the first comes from the prompt pass, which always runs every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cee_bench.generation.decoding import Decoding, Generation, TokenExitRule, generate
from cee_bench.generation.metrics import bert_f, layer_stats, mean, rouge_l
from cee_bench.generation.model import MultiExitLM

AUDIT_EXAMPLES = 5  # per curve point, the per-token exit layers of this many examples are kept in the record


@dataclass
class Prompts:
    """Encoded prompts of one split with the per-example sampling seeds (shared by every method: coupled)."""

    ids: list[str]
    input_ids: list[torch.Tensor]
    seeds: list[int]


def decode_split(mlm: MultiExitLM, prompts: Prompts, rule: TokenExitRule | None, *, max_new_tokens: int,
                 decoding: Decoding, eos_ids: frozenset[int]) -> list[Generation]:
    """Decode every prompt of a split with `rule` (None = full model)."""
    return [generate(mlm, ids, rule=rule, max_new_tokens=max_new_tokens, decoding=decoding, eos_ids=eos_ids,
                     seed=seed) for ids, seed in zip(prompts.input_ids, prompts.seeds)]


def decode_split_paired(mlm: MultiExitLM, prompts: Prompts, rule: TokenExitRule, *, max_new_tokens: int,
                        decoding: Decoding, eos_ids: frozenset[int]) -> tuple[list[Generation], list[Generation]]:
    """(rule's generations, full model's) with the full model decoding each prompt just before the rule."""
    early, full = [], []
    for ids, seed in zip(prompts.input_ids, prompts.seeds):
        for out, chosen in ((full, None), (early, rule)):
            out.append(generate(mlm, ids, rule=chosen, max_new_tokens=max_new_tokens, decoding=decoding,
                                eos_ids=eos_ids, seed=seed))
    return early, full


def decode_speed(generations: Sequence[Generation]) -> float:
    """Decode tokens per second over a split (tokens after the first of each output)."""
    tokens = sum(len(g.tokens) - 1 for g in generations)
    seconds = sum(g.decode_seconds for g in generations)
    return tokens / seconds if seconds > 0 else 0.0


def curve_point(generations: Sequence[Generation], texts: Sequence[str], references: Sequence[str],
                full_texts: Sequence[str], *, full_tokens_per_s: float, num_layers: int,
                example_ids: Sequence[str], **labels: object) -> dict:
    """One point of the quality-speed curve; `labels` (threshold, alpha, ...) are stored as given. Its `examples`
    are the per-prompt values the means come from — ROUGE-L, BERT-F, the layers its decode tokens ran and how many
    there were — which the recipe moves to the record's per-example log, so the report can resample prompts and seeds
    (two-level intervals and the verdict, as for classification)."""
    layers = [layer for g in generations for layer in g.decode_exit_layers]
    tokens_per_s = decode_speed(generations)
    rouge, bert = rouge_l(texts, references), bert_f(texts, references)
    return {
        **labels,
        "rouge_l": mean(rouge),
        "bert_f": mean(bert),
        "rouge_l_vs_full": mean(rouge_l(texts, full_texts)),
        **layer_stats(layers, num_layers),
        "tokens_per_s": tokens_per_s,
        "speedup_measured": tokens_per_s / full_tokens_per_s if full_tokens_per_s else 0.0,
        "generated_tokens": sum(len(g.tokens) for g in generations),
        "audit": [{"id": i, "exit_layers": g.exit_layers}
                  for i, g in zip(example_ids[:AUDIT_EXAMPLES], generations[:AUDIT_EXAMPLES])],
        "examples": {"rouge_l": [round(v, 5) for v in rouge], "bert_f": [round(v, 5) for v in bert],
                     "layers": [sum(g.decode_exit_layers) for g in generations],
                     "tokens": [len(g.decode_exit_layers) for g in generations]},
    }


def consistency_risks(texts: Sequence[str], full_texts: Sequence[str]) -> list[float]:
    """Per-example textual-consistency risk D = 1 − ROUGE-L(early output, full output) ∈ [0, 1] for LTT."""
    return [min(1.0, max(0.0, 1.0 - r)) for r in rouge_l(texts, full_texts)]
