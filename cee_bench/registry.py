"""The method registry of both kinds: name → the module that defines it, imported only when asked for.

A classification method is a `cee_bench.classification.method.Method`, a generation method a
`cee_bench.generation.method.GenerationMethod`; either is a small declarative module defining `METHOD`. Adding a
method is that module plus one line here. The registry names modules as strings, so the shell imports no wing and
`cee-bench --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

from cee_bench.errors import UserError

# name → module defining a `METHOD` instance (or "module:NAME" for another instance in it).
METHOD_MODULES: dict[str, str] = {
    "full": "baselines.full",
    "pabee": "baselines.pabee",
    "deebert": "baselines.deebert",
    "berxit": "baselines.berxit",
    "right-tool": "baselines.right_tool",
    "pcee-bert": "baselines.pcee",
    "consistentee": "cee_bench.classification.consistentee",
    "consistentee-vanilla": "cee_bench.classification.consistentee:VANILLA",
    "consistentee-pi": "cee_bench.classification.consistentee:PI_SWEEP",
}
GENERATION_METHOD_MODULES: dict[str, str] = {
    "calm": "baselines.calm",
    "calm-softmax": "baselines.calm:SOFTMAX",
    "calm-meta": "baselines.calm:META",
    "calm-anytime": "baselines.calm:ANYTIME",
    "calm-softmax-anytime": "baselines.calm:SOFTMAX_ANYTIME",
    "consistentee": "cee_bench.generation.consistentee",
}
REGISTRY: dict[str, dict[str, str]] = {"classification": METHOD_MODULES, "generation": GENERATION_METHOD_MODULES}


def method_names(kind: str = "classification") -> list[str]:
    return list(REGISTRY[kind])


def get_method(name: str, kind: str = "classification") -> Any:
    """The method registered as (`kind`, `name`): a `Method` for classification, a `GenerationMethod` for
    generation."""
    modules = REGISTRY[kind]
    if name not in modules:
        label = "generation method" if kind == "generation" else "method"
        raise UserError(f"unknown {label} '{name}'; known methods: {', '.join(modules)}")
    module, _, attribute = modules[name].partition(":")  # "module:NAME" when a module defines several
    return getattr(importlib.import_module(module), attribute or "METHOD")


def parse_methods(spec: str, kind: str = "classification") -> list[str]:
    """`all` or a comma-separated list, validated, in registry order with `full` first (others use its score)."""
    names = method_names(kind) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError("no methods given")
    for name in names:
        get_method(name, kind)
    return sorted(dict.fromkeys(names), key=lambda n: (n != "full", method_names(kind).index(n)))
