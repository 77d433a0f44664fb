"""Training heads on a frozen backbone from states computed once (docs/DESIGN.md: "the same idea serves training").

When a stage trains only modules on top of a frozen backbone (ConsistentEE's policy stage, DeeBERT's highways), the
backbone's output for the training set does not change during the stage, so one eval-mode pass computes what those
modules read and every epoch trains on it: the backbone runs once per stage instead of once per step. The price is
that the backbone's dropout is off in the pass (each method's `deviations` says what that changes for it).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from cee_bench.classification.data import Encoded
from cee_bench.classification.fit import FitContext
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.training import Batch

Extract = Callable[[dict[str, torch.Tensor], Batch], dict[str, torch.Tensor]]


@torch.no_grad()
def frozen_states(model: MultiExitModel, data: Encoded, batch_size: int, extract: Extract, *,
                  keep_hidden: bool = False) -> dict[str, torch.Tensor]:
    """`extract(forward output, batch)` for every row of `data`, in its row order: one backbone pass in eval mode
    over length-bucketed batches (`keep_hidden` adds the layers' token states to the output; `extract` must reduce
    them to one fixed-size value per row). Floating results come back as fp32: the values the pass computed at the
    model's precision, so training on them sees what inference sees."""
    model.eval()

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        batch = {k: v.to(model.device) for k, v in batch.items()}
        out = extract(model(batch, keep_hidden=keep_hidden), batch)
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}

    return data.map_in_order(run, batch_size)


def train_on_states(ctx: FitContext, name: str, params: Iterable[nn.Parameter], states: dict[str, torch.Tensor],
                    loss_fn: Callable[[dict[str, torch.Tensor], int], torch.Tensor], *, order_seed: int) -> list[float]:
    """`ctx.train_stage(name, ...)` over the rows of `states` (tensors of one length N, moved to the device once):
    `loss_fn(rows, step)` gets every state tensor at the batch's rows. Epoch e shuffles the rows with seed
    `order_seed + e`, in global batches that `train_stage` shards across processes."""
    stage = ctx.stages[name]
    on_device = {key: value.to(ctx.device) for key, value in states.items()}
    n = len(next(iter(on_device.values())))

    def batches(epoch: int) -> DataLoader:
        order = torch.Generator().manual_seed(order_seed + epoch)
        return DataLoader(range(n), batch_size=stage.batch_size, shuffle=True, generator=order,
                          collate_fn=lambda rows: {"index": torch.tensor(rows)})

    def loss(batch: Batch, step: int) -> torch.Tensor:
        index = batch["index"].to(ctx.device)
        return loss_fn({key: value[index] for key, value in on_device.items()}, step)

    return ctx.train_stage(name, params, loss, batches=batches, steps_per_epoch=math.ceil(n / stage.batch_size))
