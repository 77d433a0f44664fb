"""The one training loop every method's stages go through, on Hugging Face Accelerate.

Methods say *what* to train (which parameters, which loss, which hyperparameters); this module owns *how*
(optimiser, schedule, clipping, devices, progress), so `accelerate launch -m cee_bench run ...` (or `torchrun`)
spreads any method over several processes and a CPU run is an ordinary process.

Under N processes: `Stage.batch_size` is the global batch, split evenly across processes (Accelerate's
`split_batches`); the schedule counts global steps, so it is the same for any N; every process builds the model from
the same seed and DDP averages the gradients, so every process holds the same weights after each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from cee_bench.classification.data import Encoded
from cee_bench.distributed import per_process_batch
from cee_bench.errors import UserError
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.progress import Progress

Batch = dict[str, torch.Tensor]
LossFn = Callable[[Batch, int], torch.Tensor]


@dataclass(frozen=True)
class Stage:
    """Hyperparameters of one training stage (AdamW with a linear schedule, as every reference script uses)."""

    epochs: float
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise UserError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise UserError(f"batch size must be positive, got {self.batch_size}")
        if self.lr <= 0:
            raise UserError(f"learning rate must be positive, got {self.lr}")

    def override(self, *, epochs: float | None = None, batch_size: int | None = None,
                 lr: float | None = None) -> "Stage":
        changes = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None}
        return replace(self, **changes)


class Checkpoints:
    """Where a method that trains in rounds saves each finished round and finds the last one again after an
    interruption (ConsistentEE's rounds per α). This base keeps nothing, so a bare `FitContext` trains from scratch;
    `cee_bench.classification.sharing` backs it with the model store."""

    def resume(self, series: str, settings: dict[str, Any], rounds: int, model: MultiExitModel) -> list[Any] | None:
        """The log of the last stored round (of at most `rounds`) of `series` under `settings`, its weights loaded
        into `model`; None when no round is stored."""
        return None

    def save(self, series: str, settings: dict[str, Any], round_number: int, model: MultiExitModel,
             log: list[Any]) -> None:
        """Keep `model` after round `round_number` of `series` with the log of every round so far."""


class FitContext:
    """What a method's `fit` gets: the model, the data, its resolved stages, and `train_stage`."""

    def __init__(self, model: MultiExitModel, train: Encoded, heldout: Encoded, stages: dict[str, Stage], *,
                 seed: int, device: str, progress: Progress, eval_batch_size: int,
                 main_metric: str = "accuracy") -> None:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

        # find_unused_parameters: a stage may list parameters that some of its steps' losses do not reach (DeeBERT's
        # backbone pooler when every layer has its own copy; BERxiT's even steps, which train only the top head);
        # DDP then finds them from the loss's graph and marks them ready instead of waiting for them forever.
        self.accelerator = Accelerator(
            cpu=device == "cpu", dataloader_config=DataLoaderConfiguration(split_batches=True),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.model = model.to(self.accelerator.device)
        self.train, self.heldout, self.stages = train, heldout, stages
        self.seed, self.progress, self.eval_batch_size = seed, progress, eval_batch_size
        self.main_metric = main_metric  # the task's main score, for a method's own held-out checks
        self.log: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}  # what `fit` reports into the record's `method_meta` (e.g. convergence)
        self.steps: dict[str, int] = {}  # optimiser steps executed per stage name (summed over repeated stages)
        self.checkpoints = Checkpoints()

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def forward(self, batch: Batch, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The model's forward: all layers' signals. Inside a stage's loss it runs under that stage's DDP wrapper."""
        return self.model(batch, **kwargs)

    def train_batches(self, batch_size: int, epoch: int) -> DataLoader:
        """The shuffled training set in global batches of `batch_size` (the same order for any number of
        processes; `train_stage` gives each process its slice)."""
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return DataLoader(range(len(self.train)), batch_size=batch_size, shuffle=True, generator=generator,
                          collate_fn=self.train.collate)

    def train_stage(self, name: str, params: Iterable[nn.Parameter], loss_fn: LossFn, *,
                    batches: Callable[[int], DataLoader] | None = None, steps_per_epoch: int | None = None,
                    on_epoch_end: Callable[[int], None] | None = None) -> list[float]:
        """Train `params` on `loss_fn(batch, step)` for the stage called `name`; the rest of the model is frozen.

        `batches(epoch)` replaces the shuffled training batches (e.g. cached layer states when the backbone is
        frozen): a DataLoader of global batches, which this loop shards across processes. Returns the mean loss of
        every epoch (averaged over processes), also kept in `self.log[name]`.
        """
        stage = self.stages[name]
        per_process_batch(stage.batch_size, f"stage '{name}'")
        params = [p for p in params]
        trainable = {id(p) for p in params}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        batches = batches or (lambda epoch: self.train_batches(stage.batch_size, epoch))
        per_epoch = steps_per_epoch or math.ceil(len(self.train) / stage.batch_size)
        losses, step_losses = run_stage(
            self.accelerator, self.model, params, loss_fn,
            lambda epoch: self.accelerator.prepare_data_loader(batches(epoch)), stage=stage,
            total=max(1, math.ceil(stage.epochs * per_epoch)), name=name, progress=self.progress,
            on_epoch_end=on_epoch_end)
        self.steps[name] = self.steps.get(name, 0) + len(step_losses)
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.eval()
        self.log[name] = losses
        return losses


def run_stage(accelerator: Any, module: nn.Module, params: list[nn.Parameter], loss_fn: LossFn,
              batches: Callable[[int], Iterable[Any]], *, stage: Stage, total: int, name: str, progress: Progress,
              on_epoch_end: Callable[[int], None] | None = None, constant_lr: bool = False
              ) -> tuple[list[float], list[float]]:
    """The loop itself: AdamW over `params`, `total` global steps of `loss_fn(batch, step)` over `batches(epoch)`,
    a linear schedule (or a constant rate), clipping when the stage asks, a progress bar. Returns (mean loss per
    epoch averaged over processes, loss per step)."""
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay, eps=1e-8)
    warmup = int(stage.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, (lambda s: 1.0) if constant_lr else (
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))))
    # DDP wraps this stage's loss, built after `requires_grad` is set, rather than the model once: it then
    # registers and all-reduces only the stage's trainable parameters (the policy stage sends the policy's
    # gradients, not the frozen encoder's), and a loss that never calls the model's forward (the policy stage
    # on cached states) is still synchronised.
    stage_loss, optimizer, scheduler = accelerator.prepare(_StageLoss(module, loss_fn), optimizer, scheduler)
    module.train()
    losses: list[float] = []
    step_losses: list[float] = []
    step = 0
    with progress.task(f"train {name}", total=total) as advance:
        for epoch in range(math.ceil(stage.epochs)):
            running, count = 0.0, 0
            for batch in _take(batches(epoch), total - step):
                loss = stage_loss(batch, step)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if stage.grad_clip:
                    accelerator.clip_grad_norm_(params, stage.grad_clip)
                optimizer.step()
                scheduler.step()
                step_losses.append(float(loss.detach()))
                running, count, step = running + step_losses[-1], count + 1, step + 1
                advance(f"loss {running / count:.4f}")
            mean = torch.tensor(running / max(count, 1), device=accelerator.device)
            losses.append(float(accelerator.reduce(mean, "mean")))
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if step >= total:
                break
    accelerator.free_memory()  # drop this stage's DDP wrapper, optimiser and loaders
    return losses, step_losses


def train_steps(name: str, module: nn.Module, loss_fn: LossFn, batches: list[Any], *, lr: float,
                progress: Progress | None = None) -> list[float]:
    """A frozen-backbone stage of the generation track through the same loop: every parameter of `module` (exit
    adapters, policy, meta classifier) for one step per precomputed batch, at a constant rate and without clipping
    (these stages' recipes: Adam, fixed step counts); returns the loss of every step. One process: the generation
    track refuses several."""
    from accelerate import Accelerator

    params = list(module.parameters())
    if not batches:
        return []
    accelerator = Accelerator(cpu=params[0].device.type == "cpu")
    stage = Stage(epochs=1, batch_size=max(1, len(batches[0])), lr=lr, grad_clip=0.0)
    _, step_losses = run_stage(accelerator, module, params, loss_fn, lambda epoch: batches, stage=stage,
                               total=len(batches), name=name, progress=progress or Progress.quiet(),
                               constant_lr=True)
    module.eval()
    return step_losses


class _StageLoss(nn.Module):
    """One stage's loss as a module, so DDP can wrap exactly what the stage computes."""

    def __init__(self, model: MultiExitModel, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch, step: int) -> torch.Tensor:
        return self.loss_fn(batch, step)


def _take(items: Iterable[Batch], limit: int) -> Iterator[Batch]:
    for i, item in enumerate(items):
        if i >= limit:
            return
        yield item


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i·CE_i / Σ_i w_i over the layers of `logits` [B, L, C] (PABEE's weights are w_i = i)."""
    ce = per_layer_ce(logits, labels).mean(0)
    weights = weights.to(ce)
    return (weights * ce).sum() / weights.sum()


def per_layer_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every example at every layer: [B, L]."""
    b, layers, c = logits.shape
    return nn.functional.cross_entropy(logits.reshape(b * layers, c), labels.repeat_interleave(layers),
                                       reduction="none").reshape(b, layers)
