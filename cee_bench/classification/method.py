"""What a classification method is (a small declarative class), and the model a method trains (`build_model`, with its
stages for a run: `resolve_stages`).

A method says: how its heads look (`pooler`), its extra modules and per-layer signals, its training stages per preset
and how it runs them (`fit`), its exit rule and threshold grid, and where it deviates from its paper or reference
code. The harness owns loops, devices, timing, storage and reporting. Adding a method is one new module plus one
line in `cee_bench.registry.METHOD_MODULES`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
from torch import nn

from cee_bench.classification.exits import ExitRule
from cee_bench.classification.fit import FitContext
from cee_bench.classification.multiexit import MultiExitModel, SignalFn
from cee_bench.precision import DEFAULT_DTYPE
from cee_bench.tasks import Task
from cee_bench.training import Stage

if TYPE_CHECKING:
    from cee_bench.options import RunOptions

# The shared `smoke` and `cpu` stages (the `paper` stages are each method's own). `cpu` was tuned on the held-out
# slice of the training data, never on dev; see the README.
SMOKE_STAGE = Stage(epochs=1, batch_size=16, lr=1e-4)
CPU_STAGE = Stage(epochs=3, batch_size=16, lr=5e-5)

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

    def thresholds(self, grid: Sequence[Any]) -> list[Any]:
        """The curve's thresholds for a grid: the grid itself, except for a method that reads each grid value's model
        at several exit thresholds (ConsistentEE's π sweep: (α_depth, π) pairs)."""
        return list(grid)

    def variant(self, threshold: Any) -> Any:
        """The grid value (the trained model, for a method that trains one per value) a curve threshold belongs to."""
        return threshold

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
    # this method: `cee_bench.classification.sharing` trains such a stage once per training key, shares it with every
    # method whose stage has the same key and keeps it in the model store; `fit` then trains only the stages not named
    # here.
    shares: ClassVar[dict[str, str]] = {}
    # The method whose training this method's weights are (the same training keys, so a run with both trains them
    # once); None for its own. A method that only reads another's models differently (ConsistentEE's π sweep) names it.
    trained_as: ClassVar[str | None] = None
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


def resolve_stages(method: Method, opts: RunOptions) -> dict[str, Stage]:
    """The method's stages for the preset, with the command-line overrides applied to every stage."""
    return {name: stage.override(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr)
            for name, stage in method.stages[opts.preset].items()}


def build_model(method: Method, encoder: torch.nn.Module, task: Task, pooling: str, seed: int,
                precision: str = DEFAULT_DTYPE) -> MultiExitModel:
    """A fresh copy of the pretrained encoder with `method`'s heads and extras, initialised from `seed`, computing at
    `precision` (`cee_bench.precision`: its training stages and every inference pass)."""
    torch.manual_seed(seed)
    backbone = copy.deepcopy(encoder)
    dropout = getattr(backbone.config, "hidden_dropout_prob", 0.1)
    model = MultiExitModel(backbone, task.num_labels, pooling=pooling, pooler=method.pooler, dropout=dropout,
                           signal_fn=method.signal_fn)
    extras = method.build_extras(model)
    if extras is not None:
        model.extras = extras
    model.precision = precision
    return model
