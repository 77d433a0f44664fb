"""What a classification method's `fit` gets (`FitContext`: the model, the data, its stages, and `train_stage` on the
shared loop of `cee_bench.training`), where a method that trains in rounds keeps them (`Checkpoints`), and the
per-layer losses the methods build their stages from.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from cee_bench.classification.data import Encoded
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.distributed import per_process_batch
from cee_bench.progress import Progress
from cee_bench.training import Batch, LossFn, Stage, run_stage


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
            on_epoch_end=on_epoch_end, precision=self.model.precision)
        self.steps[name] = self.steps.get(name, 0) + len(step_losses)
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.eval()
        self.log[name] = losses
        return losses


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
