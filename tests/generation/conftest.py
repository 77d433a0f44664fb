"""Tiny Llama models built from config, so generation tests run in seconds without any download."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # tiny models: threads only add contention


@pytest.fixture(scope="session")
def tiny_lm():
    """A random 4-layer Llama (hidden 64, vocab 128) in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval()
