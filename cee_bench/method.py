"""What a method is (a small declarative class) and the registry that finds methods by name.

A method says: how its heads look (`pooler`), its extra modules and per-layer signals, its training stages per preset
and how it runs them (`fit`), its exit rule and threshold grid, and where it deviates from its paper or reference
code. The harness owns loops, devices, timing, storage and reporting. Adding a method is one new module plus one
line in `METHOD_MODULES`.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Sequence

from torch import nn

from cee_bench.errors import UserError
from cee_bench.classification.exits import ExitRule
from cee_bench.classification.multiexit import MultiExitModel, SignalFn
from cee_bench.presets import PRESETS  # noqa: F401  (each method keys its stages by these)
from cee_bench.training import FitContext, Stage

# The shared `smoke` and `cpu` stages (the `paper` stages are each method's own). `cpu` was tuned on the held-out
# slice of the training data, never on dev; see the README.
SMOKE_STAGE = Stage(epochs=1, batch_size=16, lr=1e-4)
CPU_STAGE = Stage(epochs=3, batch_size=16, lr=5e-5)

# name → module defining a `METHOD` instance (or "module:NAME" for another instance in it); imported lazily so
# `cee-bench --help` stays instant.
METHOD_MODULES: dict[str, str] = {
    "full": "baselines.full",
    "pabee": "baselines.pabee",
    "deebert": "baselines.deebert",
    "berxit": "baselines.berxit",
    "right-tool": "baselines.right_tool",
    "pcee-bert": "baselines.pcee",
    "consistentee": "cee_bench.classification.consistentee",
    "consistentee-vanilla": "cee_bench.classification.consistentee:VANILLA",
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


class Method:
    """Base class: override the class attributes and the few methods a method needs."""

    name: ClassVar[str]
    display: ClassVar[str]
    pooler: ClassVar[str] = "shared"
    threshold_name: ClassVar[str] = "threshold"
    deviations: ClassVar[tuple[str, ...]] = ()
    # preset → stage name → hyperparameters
    stages: ClassVar[dict[str, dict[str, Stage]]]
    # preset → one line on what the preset does for this method (shown by `cee-bench list`)
    preset_notes: ClassVar[dict[str, str]] = {}

    def grid(self, num_layers: int) -> Sequence[Any]:
        """The thresholds whose curve the trace replays, most aggressive last or first as the rule dictates."""
        raise NotImplementedError

    def rule(self, model: MultiExitModel | None, threshold: Any) -> ExitRule:
        """The exit rule at one grid value; with `model=None` it only validates the value (before any training), so
        an out-of-domain threshold is a `UserError` raised before anything is written."""
        raise NotImplementedError

    def ltt_order(self, grid: Sequence[Any]) -> list[int]:
        """Indices of `grid` from the most conservative value to the most aggressive, fixed without data, for
        Learn-then-Test's fixed-sequence testing (`curve.choose_ltt_point`). Grids are written conservative first
        unless a method says otherwise."""
        return list(range(len(grid)))

    def with_grid(self, stages: dict[str, Stage], grid: list[Any]) -> dict[str, Stage]:
        """Stages for a `--grid` given on the command line. Most methods replay their grid over one model, so the
        stages stay as they are; a method that trains one model per grid value puts the grid into its stages."""
        return stages

    def build_extras(self, model: MultiExitModel) -> nn.ModuleDict | None:
        """Extra modules beside the exit heads (policy networks, LTE, temperatures); none by default."""
        return None

    signal_fn: ClassVar[SignalFn | None] = None

    # Stage name → the method whose whole training that stage is (one stage of its own), for the first stages of
    # this method: the harness (`cee_bench.classification.sharing`) trains such a stage once per recipe, shares it with every method
    # naming the same recipe and keeps it in the model store; `fit` then trains only the stages not named here.
    shares: ClassVar[dict[str, str]] = {}
    # True when `fit` keeps and resumes its own rounds through `ctx.checkpoints` (one model per grid value); the
    # harness then stores the models those rounds leave instead of one model for the whole `fit`.
    resumes_rounds: ClassVar[bool] = False

    def adopt(self, model: MultiExitModel, trained: MultiExitModel) -> None:
        """Carry a shared stage's weights (`trained`, built in the layout of the method `shares` names) into this
        method's fresh `model`: by default every tensor the two name alike, the rest (e.g. policy networks) keeping
        `model`'s initialisation."""
        unexpected = model.load_state_dict(trained.state_dict(), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{self.name} cannot adopt tensors it lacks: {', '.join(unexpected[:3])}")

    def fit(self, ctx: FitContext) -> dict[Any, MultiExitModel] | None:
        """Train `ctx.model` through `ctx.train_stage` (the stages `shares` does not name). A method whose curve comes from several trained models (one
        per grid value, like ConsistentEE's α) returns {grid value: model}; the grid is then those values."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """What the results record says about this method beyond its hyperparameters."""
        return {"deviations": list(self.deviations), "pooler": self.pooler, "threshold_name": self.threshold_name}


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
