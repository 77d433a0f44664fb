"""The classification kind of task: multi-exit encoders, exit rules replayed over a trace, real early exit and its
timing, the classification recipe the run shell hands classification tasks to, and ConsistentEE itself. Its
baselines live in `baselines/`, registered beside ConsistentEE in `cee_bench.registry`.

Heavy libraries (transformers, safetensors) are imported inside functions where a command that does not need them
imports the module.
"""
