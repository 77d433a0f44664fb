"""Real early-exit inference (batch 1, and batched with exited rows leaving the batch) and wall-clock timing.

The simulated curve says which layer each example *would* exit at; this module actually stops computing there and
measures the clock. Full model and early-exit model are timed in the same process, interleaved example by example
(or batch by batch), after a warm-up, with `perf_counter_ns` on the CPU and CUDA events plus synchronisation on a GPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import ExitRule
from cee_bench.classification.multiexit import MultiExitModel, at_precision
from cee_bench.progress import Progress

Batch = dict[str, torch.Tensor]

# Test-only seam in the early-exit path, so a test can inject a slowdown there: `row_hook(layer, rows)` at every
# computed layer with the rows still computed there, for a slowdown that scales with the batch (a per-call one would
# be amortised away at batch 32).
row_hook: Callable[[int, int], None] | None = None


@torch.no_grad()
@at_precision
def early_exit(model: MultiExitModel, rule: ExitRule, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, 0-based exit layers) of one batch, computing each row only up to its exit layer: rows that
    exit leave the batch, and the padding is trimmed to the longest row still running."""
    hidden, layer_mask = model.embed(batch)
    mask = batch["attention_mask"]
    n = hidden.shape[0]
    rows = torch.arange(n, device=hidden.device)
    preds = torch.empty(n, dtype=torch.long, device=hidden.device)
    exits = torch.empty(n, dtype=torch.long, device=hidden.device)
    state = rule.start(n, hidden.device)
    last = model.num_layers - 1
    for layer in range(model.num_layers):
        if row_hook is not None:
            row_hook(layer, hidden.shape[0])
        hidden = model.run_layer(layer, hidden, layer_mask)
        signals = model.layer_signals(layer, hidden, mask)
        if layer == last:
            done = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        else:
            state, done = rule.step(state, layer, signals)
        if done.any():
            preds[rows[done]] = signals["logits"][done].argmax(-1)
            exits[rows[done]] = layer
            if done.all():
                break
            keep = ~done
            rows, hidden, mask = rows[keep], hidden[keep], mask[keep]
            width = int(mask.sum(1).max())
            if width < mask.shape[1]:  # the rows left are all shorter than the one that set the padding
                hidden, mask = hidden[:, :width], mask[:, :width]
                layer_mask = model.layer_mask(hidden, mask)
            elif layer_mask is not None:
                layer_mask = layer_mask[keep]
            state = {k: v[keep] for k, v in state.items()}
    return preds, exits


@torch.no_grad()
def predict(model: MultiExitModel, rule: ExitRule, data: Encoded, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real early-exit predictions and exit layers over a whole split, in its row order (batches length-bucketed)."""
    model.eval()

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        preds, exits = early_exit(model, rule, _to(batch, model.device))
        return {"preds": preds.cpu(), "exits": exits.cpu()}

    out = data.map_in_order(run, batch_size)
    return out["preds"], out["exits"]


class _Clock:
    """Elapsed milliseconds of a callable: CUDA events on a GPU, perf_counter_ns on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6


@torch.no_grad()
def measure_latency(model: MultiExitModel, rule: ExitRule, data: Encoded, *, batch_size: int, max_examples: int,
                    warmup: int = 3, bucket: bool = True, progress: Progress | None = None) -> dict[str, float]:
    """Full model vs early exit on the same examples, interleaved; per-example figures at batch 1, throughput above.

    The examples timed are the split's first `max_examples` rows, whatever the batch size. Above batch 1 they are
    length-bucketed among themselves (`Encoded.batch_rows`), as a server batching its queue by length would do — the
    realistic batched setting, and the record says so (`bucketed`, with the `padding_ratio` it gave); `bucket=False`
    times them in file order instead. `realised_fraction` = measured speed-up ÷ layer speed-up of the very examples
    timed (1.0 is the physical limit of skipping layers; the gap is the heads' and the exit test's overhead).
    """
    model.eval()
    clock = _Clock(model.device)
    n = min(max_examples, len(data))
    rows = data.batch_rows(batch_size, range(n), by_length=bucket)
    batches = [_to(data.collate(r), model.device) for r in rows]
    for batch in batches[:warmup]:
        model.full_forward(batch)
        early_exit(model, rule, batch)
    full_ms, ee_ms, exit_layers = [], [], []

    def run_early_exit(batch: Batch) -> None:
        exit_layers.append(early_exit(model, rule, batch)[1].cpu())

    with (progress or Progress.quiet()).task(f"latency b{batch_size}", total=len(batches)) as advance:
        for batch in batches:
            full_ms.append(clock.time(lambda: model.full_forward(batch)))
            ee_ms.append(clock.time(lambda: run_early_exit(batch)))
            advance()
    total_full, total_ee = sum(full_ms), sum(ee_ms)
    mean_exit = float(torch.cat(exit_layers).float().mean()) + 1
    speedup = total_full / total_ee
    figures = {"batch_size": batch_size, "examples": n, "full_total_ms": total_full, "ee_total_ms": total_ee,
               "speedup_wall": speedup, "mean_exit_layer": mean_exit,
               "realised_fraction": speedup / (model.num_layers / mean_exit),
               "full_throughput": 1000 * n / total_full, "ee_throughput": 1000 * n / total_ee,
               "bucketed": bucket and batch_size > 1, "padding_ratio": data.padding_ratio(rows)}
    if batch_size == 1:
        figures.update({"full_ms_median": statistics.median(full_ms), "full_ms_p90": _p90(full_ms),
                        "ee_ms_median": statistics.median(ee_ms), "ee_ms_p90": _p90(ee_ms)})
    return figures


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}
