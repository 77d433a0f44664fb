"""Early-exit decoding: equals plain `generate` when nothing exits; state copying fills every layer's cache."""

from __future__ import annotations

import pytest
import torch

from baselines.calm import CalmRule
from cee_bench.errors import UserError
from cee_bench.generation.decoding import Decoding, generate
from cee_bench.generation.model import MultiExitLM, every_layer

PROMPT = torch.tensor([[1, 5, 9, 17, 33, 65, 3, 7]])


@pytest.mark.parametrize("measure", ["softmax", "state"])
def test_never_exiting_threshold_equals_plain_generate(tiny_lm, measure):
    mlm = MultiExitLM(tiny_lm, every_layer(4))
    reference = tiny_lm.generate(PROMPT, do_sample=False, max_new_tokens=12, min_new_tokens=12,
                                 pad_token_id=0)[0, PROMPT.shape[1]:].tolist()
    rule = CalmRule(measure, threshold=1.0, max_steps=12)
    out = generate(mlm, PROMPT, rule=rule, max_new_tokens=12, decoding=Decoding(greedy=True))
    assert out.tokens == reference
    assert out.exit_layers == [4] * 12


def test_state_copying_fills_every_layer_cache(tiny_lm):
    mlm = MultiExitLM(tiny_lm, every_layer(4))
    rule = CalmRule("softmax", threshold=0.0, max_steps=10)  # always exit at the first exit layer
    out, cache = generate(mlm, PROMPT, rule=rule, max_new_tokens=10, decoding=Decoding(greedy=True),
                          return_cache=True)
    assert out.decode_exit_layers == [1] * 9
    positions = PROMPT.shape[1] + len(out.tokens) - 1  # the last token is emitted, never fed back
    for layer in range(4):
        keys, values = cache.layers[layer].keys, cache.layers[layer].values
        assert keys.shape[-2] == positions and values.shape[-2] == positions


def test_copied_state_keys_match_a_layer_fed_the_exited_state(tiny_lm):
    """The K/V appended to a skipped layer equal that layer's own K/V projection of the exited state."""
    from transformers import DynamicCache

    from cee_bench.generation.decoding import propagate_state

    mlm = MultiExitLM(tiny_lm, every_layer(4))
    hidden = torch.randn(1, 1, 64)
    positions = torch.tensor([[0]])
    embeddings = mlm.rotary(hidden, positions)
    copied, direct = DynamicCache(config=mlm.config), DynamicCache(config=mlm.config)
    propagate_state(mlm, hidden, 1, copied, embeddings)
    for index in range(1, 4):
        mlm.layers[index](hidden, cache=direct, position_embeddings=embeddings)
        torch.testing.assert_close(copied.layers[index].keys, direct.layers[index].keys)
        torch.testing.assert_close(copied.layers[index].values, direct.layers[index].values)


def test_sampling_is_seeded_and_respects_top_k():
    decoding = Decoding(top_k=2, top_p=1.0)
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0])
    picks = {decoding.pick(logits, torch.Generator().manual_seed(s)) for s in range(50)}
    assert picks == {0, 1}
    first = [decoding.pick(logits, torch.Generator().manual_seed(3)) for _ in range(3)]
    assert len(set(first)) == 1


def test_prompt_longer_than_context_is_a_user_error(tiny_lm):
    mlm = MultiExitLM(tiny_lm, every_layer(4))
    with pytest.raises(UserError, match="context"):
        generate(mlm, torch.ones(1, 60, dtype=torch.long), rule=None, max_new_tokens=8,
                 decoding=Decoding(greedy=True))


def test_threshold_outside_unit_interval_is_a_user_error():
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        CalmRule("softmax", threshold=1.5, max_steps=4)


def test_a_curve_points_latency_holds_prefill_and_per_token_statistics(tiny_lm):
    """docs/timing.md's generation figures: one prefill time and one mean per-token time per prompt, with tokens/s
    and the peak memory growth of the decoding."""
    from cee_bench.generation.evaluation import decode_speed, latency_figures

    mlm = MultiExitLM(tiny_lm, every_layer(4))
    outputs = [generate(mlm, PROMPT[:, :k], rule=None, max_new_tokens=6, decoding=Decoding(greedy=True))
               for k in (4, 6, 8)]
    assert all(o.prefill_seconds > 0 and o.token_seconds == o.decode_seconds / 5 for o in outputs)
    figures = latency_figures(outputs)
    for phase, times in (("prefill_ms", [o.prefill_seconds for o in outputs]),
                         ("token_ms", [o.token_seconds for o in outputs])):
        assert figures[phase]["count"] == 3 and figures[phase]["raw"] == pytest.approx([1e3 * t for t in times])
        assert set(figures[phase]) == {"count", "mean", "p50", "p90", "p95", "p99", "stdev", "raw"}
    assert figures["tokens_per_s"] == decode_speed(outputs) > 0 and figures["peak_memory_mb"] >= 0
    single = generate(mlm, PROMPT, rule=None, max_new_tokens=1, decoding=Decoding(greedy=True))
    assert single.token_seconds is None and latency_figures([single])["token_ms"] is None
