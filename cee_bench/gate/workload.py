"""The latency suite's fixed workload: a BERT and a small Llama built from config with a fixed seed, and fixed inputs.

It lives in the package, not in the suite, because the gate must know which workload the suite runs (`BACKBONE`)
before it spends minutes timing it: a saved run of another workload is refused, not misread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from cee_bench.classification.data import Encoded

# The fixed workload. Changing any of it changes BACKBONE, so an old saved run is refused rather than misread.
BACKBONE_CONFIG = {"num_hidden_layers": 6, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024,
                   "vocab_size": 8192}
DECODER_CONFIG = {"num_hidden_layers": 6, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 256, "vocab_size": 2048, "max_position_embeddings": 128}
SEED = 0
NUM_INPUTS, MIN_TOKENS, MAX_TOKENS = 32, 8, 20
B1_INPUTS = 4  # the first inputs, run one by one in each batch-1 round (all of them form the batch of 32)
BACKBONE = (f"bert-L{BACKBONE_CONFIG['num_hidden_layers']}-H{BACKBONE_CONFIG['hidden_size']}"
            f"-A{BACKBONE_CONFIG['num_attention_heads']}-I{BACKBONE_CONFIG['intermediate_size']} and "
            f"llama-L{DECODER_CONFIG['num_hidden_layers']}-H{DECODER_CONFIG['hidden_size']}, random seed {SEED}; "
            f"{NUM_INPUTS} inputs of {MIN_TOKENS}-{MAX_TOKENS} tokens")


def build_backbone() -> nn.Module:
    """The suite's encoder: a BERT built from config with a fixed seed (no download, same weights every run)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    return BertModel(BertConfig(**BACKBONE_CONFIG)).eval()


def build_decoder() -> nn.Module:
    """The decode-step benchmark's model: a small Llama built from config with a fixed seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    return LlamaForCausalLM(LlamaConfig(**DECODER_CONFIG, bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()


def fixed_inputs() -> Encoded:
    """`NUM_INPUTS` seeded random token sequences of mixed lengths, with seeded labels, in the harness's own type."""
    import torch

    from cee_bench.classification.data import Encoded

    generator = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(MIN_TOKENS, MAX_TOKENS + 1, (NUM_INPUTS,), generator=generator).tolist()
    ids = [torch.randint(1000, BACKBONE_CONFIG["vocab_size"], (n,), generator=generator).tolist() for n in lengths]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 2, (NUM_INPUTS,), generator=generator))
