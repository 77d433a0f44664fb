"""The generation track: multi-exit decoders, token-level early exit with state copying, CALM and ConsistentEE-LLM.

Heavy libraries (transformers, peft, bert_score) are imported inside functions so that importing this package,
and `cee_bench.generation.run`, stays instant.
"""
