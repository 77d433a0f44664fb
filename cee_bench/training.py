"""The one training loop every method's stages go through, both kinds, on Hugging Face Accelerate.

Methods say *what* to train (which parameters, which loss, which hyperparameters); this module owns *how*
(optimiser, schedule, clipping, devices, progress), so `accelerate launch -m cee_bench run ...` (or `torchrun`)
spreads any method over several processes and a CPU run is an ordinary process. A classification method reaches it
through `cee_bench.classification.fit.FitContext`, a generation stage through `train_steps`.

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

from cee_bench.errors import UserError
from cee_bench.precision import DEFAULT_DTYPE, autocast, full_precision
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


def run_stage(accelerator: Any, module: nn.Module, params: list[nn.Parameter], loss_fn: LossFn,
              batches: Callable[[int], Iterable[Any]], *, stage: Stage, total: int, name: str, progress: Progress,
              on_epoch_end: Callable[[int], None] | None = None, constant_lr: bool = False,
              precision: str = DEFAULT_DTYPE) -> tuple[list[float], list[float]]:
    """The loop itself: AdamW over `params`, `total` global steps of `loss_fn(batch, step)` over `batches(epoch)`,
    a linear schedule (or a constant rate), clipping when the stage asks, a progress bar. Returns (mean loss per
    epoch averaged over processes, loss per step).

    `precision` (`cee_bench.precision`): the loss is computed under autocast at that dtype, and backward, clipping
    and the optimiser step outside it, on fp32 weights; fp16 scales the loss (`GradScaler`) so small gradients do
    not flush to zero. Autocast is ours rather than Accelerate's `mixed_precision`, which is fixed once per process:
    one process may run fp32 and bf16 stages side by side (a config's runs, the precision benchmark)."""
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay, eps=1e-8)
    scheduler = schedule(optimizer, stage, total, constant_lr)
    # DDP wraps this stage's loss, built after `requires_grad` is set, rather than the model once: it then
    # registers and all-reduces only the stage's trainable parameters (the policy stage sends the policy's
    # gradients, not the frozen encoder's), and a loss that never calls the model's forward (the policy stage
    # on cached states) is still synchronised.
    stage_loss, optimizer, scheduler = accelerator.prepare(_StageLoss(module, loss_fn), optimizer, scheduler)
    device_type = accelerator.device.type
    scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None
    module.train()
    losses: list[float] = []
    step_losses: list[float] = []
    step = 0
    with progress.task(f"train {name}", total=total) as advance:
        for epoch in range(math.ceil(stage.epochs)):
            running, count = 0.0, 0
            for batch in _take(batches(epoch), total - step):
                with autocast(precision, device_type):
                    loss = stage_loss(batch, step)
                with full_precision(device_type):  # also when a caller runs the whole stage under autocast
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.backward(loss if scaler is None else scaler.scale(loss))
                    if scaler is not None:
                        scaler.unscale_(optimizer)  # clip the true gradients
                    if stage.grad_clip:
                        accelerator.clip_grad_norm_(params, stage.grad_clip)
                    if scaler is None:
                        optimizer.step()
                    else:
                        scaler.step(optimizer)  # skipped when a gradient overflowed
                        scaler.update()
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
    (these stages' reference settings: Adam, fixed step counts); returns the loss of every step. One process: the
    generation track refuses several."""
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


def schedule(optimizer: torch.optim.Optimizer, stage: Stage, total: int,
             constant_lr: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of a stage of `total` global steps: the reference scripts' own (transformers'
    linear decay to 0 after `warmup_ratio` of the steps of linear warm-up from 0), or a constant rate."""
    from transformers import get_constant_schedule, get_linear_schedule_with_warmup

    if constant_lr:
        return get_constant_schedule(optimizer)
    return get_linear_schedule_with_warmup(optimizer, int(stage.warmup_ratio * total), total)


class _StageLoss(nn.Module):
    """One stage's loss as a module, so DDP can wrap exactly what the stage computes."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
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
