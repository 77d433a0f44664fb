"""The options of one `cee-bench run`, both kinds, typed, and the parsing of the values the command line gives as text.

Both recipes read their options from `RunOptions` (`cee_bench.classification.recipe`, `cee_bench.generation.recipe`),
so it lives in the shell, below both wings. `validate` checks what both kinds share; each kind's recipe checks the
rest (`Recipe.check`), and `runner.check_options` runs the two once per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cee_bench.errors import UserError
from cee_bench.precision import DEFAULT_DTYPE, check_dtype
from cee_bench.presets import PRESETS, GenerationPreset
from cee_bench.tasks import get_task
from cee_bench.validation import check_folder, check_numbers, check_output_folder

DEFAULT_POOLING = "mean"


@dataclass
class RunOptions:
    """Every option of a run, both kinds (the command line's `--delta/--epsilon/--greedy` are generation's,
    `--pooling`, the stage overrides and the input/latency limits classification's: `cli.py` refuses a flag of the
    other kind)."""

    task: str
    methods: str = "all"
    model: str | None = None
    data_dir: Path | None = None
    output_dir: Path = Path("results")
    preset: str = "cpu"
    seed: int = 42
    seeds: list[int] | None = None  # several seeds: one run of every method per seed (`seed` is then ignored)
    revision: str | None = None  # hub revision of `model`
    device: str = "auto"
    dtype: str = DEFAULT_DTYPE  # numeric precision of training and inference (`cee_bench.precision`)
    force: bool = False
    quiet: bool = False
    pooling: str = DEFAULT_POOLING
    trust_remote_code: bool = False
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_seq_length: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    latency_examples: int | None = None
    grid: list[float] | None = None  # one method's grid (`--grid`)
    grids: dict[str, list[Any]] = field(default_factory=dict)  # method name → grid (a config file's `grids`)
    delta: float | None = None  # generation: Learn-then-Test tolerance
    epsilon: float | None = None  # generation: Learn-then-Test risk level
    greedy: bool = False  # generation: greedy decoding instead of the paper's sampling
    limits: dict[str, Any] = field(default_factory=dict)  # classification: the preset's limits with the overrides
    generation: GenerationPreset | None = None  # generation: the resolved preset with the overrides
    retrain: bool = False  # train again rather than reuse the model store (implies `force`: new weights, new record)
    share: bool = True  # internal: sharing of trainings and the model store; off only to measure what they save
    fresh: set[str] = field(default_factory=set, repr=False)  # store keys written by this run (what `retrain` reuses)
    # Set by `runner.check_options` once the request is checked and its derived fields (`limits` or `generation`,
    # `grids`) are resolved: a checked request is not checked, nor its grids rewritten, again.
    checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.force = self.force or self.retrain

    def validate(self) -> None:
        """What both kinds check before any data or model: preset, task, device, numbers and folders."""
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset '{self.preset}'; choose one of {', '.join(PRESETS)}")
        get_task(self.task, kind=None)
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"unknown device '{self.device}'; choose auto, cpu or cuda")
        if self.device == "cuda" and not _cuda_available():
            raise UserError("--device cuda asked for, but no CUDA device is available")
        check_dtype(self.dtype, self.resolved_device)
        check_numbers({name: getattr(self, name) for name in ("epochs", "batch_size", "lr", "max_seq_length",
                                                             "max_train_samples", "max_eval_samples",
                                                             "latency_examples", "seed")})
        for seed in self.seeds or ():
            check_numbers({"seed": seed})
        if self.data_dir is not None:
            check_folder(self.data_dir, "data folder", must_exist=True)
        check_output_folder(self.output_dir, self.task.lower())  # the records' folder, as `get_task` names it

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if _cuda_available() else "cpu"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_seeds(seeds: list[Any]) -> list[int]:
    """Seeds must be a non-empty list of distinct integers."""
    if not seeds:
        raise UserError("--seeds is empty")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise UserError(f"--seeds must be integers, got {', '.join(map(str, seeds))}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds repeats {', '.join(map(str, repeated))}")
    return list(seeds)


def parse_seeds(spec: str) -> list[int]:
    """`--seeds 42,43,44` as integers (empty, repeated or non-integer values are user errors)."""
    if not spec.strip():
        return check_seeds([])
    seeds = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            seeds.append(int(part))
        except ValueError:
            raise UserError(f"--seeds: '{part}' is not an integer") from None
    return check_seeds(seeds)


def parse_grid(spec: str) -> list[float]:
    """`--grid 0.1,0.2,0.5` as numbers (whole numbers stay integers, for patience-style grids)."""
    values = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            number = float(part)
        except ValueError:
            raise UserError(f"--grid: '{part}' is not a number") from None
        if not math.isfinite(number):
            raise UserError(f"--grid: '{part}' is not a finite number")
        values.append(int(number) if number.is_integer() and "." not in part else number)
    if not values:
        raise UserError("--grid is empty")
    return values
