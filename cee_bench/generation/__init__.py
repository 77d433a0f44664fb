"""The generation kind of task: multi-exit decoders, token-level early exit with state copying, Learn-then-Test, and
the generation recipe the run shell hands generation tasks to. Its methods live where classification's do: CALM in
`baselines/calm.py`, ConsistentEE-LLM in `generation/consistentee.py`, both registered in `cee_bench.registry`.

Heavy libraries (transformers, bert_score) are imported inside functions so that importing this package stays
instant.
"""
