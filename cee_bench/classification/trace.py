"""Per-example, per-layer evidence computed once per model and split ("evidence once, decisions many times")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cee_bench.classification.data import Encoded
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.progress import Progress


@dataclass
class Trace:
    """`signals[key]` is [N, L, ...] on the CPU (logits plus the method's extras), `labels` is [N]."""

    signals: dict[str, torch.Tensor]
    labels: torch.Tensor
    split: str

    @property
    def num_layers(self) -> int:
        return self.signals["logits"].shape[1]

    def __len__(self) -> int:
        return len(self.labels)


@torch.no_grad()
def compute_trace(model: MultiExitModel, data: Encoded, *, split: str, batch_size: int,
                  progress: Progress | None = None) -> Trace:
    """Run every layer over `data` once in eval mode and keep each layer's signals (not the pooled vectors), in the
    split's row order; batches are length-bucketed (`Encoded.map_in_order`)."""
    model.eval()
    device = model.device
    batches = -(-len(data) // batch_size)
    with (progress or Progress.quiet()).task(f"trace {split}", total=batches) as advance:
        def run(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = model({k: v.to(device) for k, v in batch.items()})
            advance()
            return {key: value.float().cpu() for key, value in out.items() if key != "pooled"}

        signals = data.map_in_order(run, batch_size)
    return Trace(signals, data.labels.clone(), split)
