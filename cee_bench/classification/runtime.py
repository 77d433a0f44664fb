"""Real early-exit inference (batch 1, and batched with exited rows leaving the batch) and wall-clock timing.

The simulated curve says which layer each example *would* exit at; this module actually stops computing there and
measures the clock (`measure_latency`; docs/timing.md says how to read what it records).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import ExitRule
from cee_bench.classification.multiexit import MultiExitModel, at_precision
from cee_bench.progress import Progress
from cee_bench.timing import NOISE_LIMIT, Clock, PeakMemory, latency_stats, speedup, speedup_interval

Batch = dict[str, torch.Tensor]

ROUNDS = 3  # timed rounds of every example: the fewest whose per-example median drops one disturbed round
WARMUP = 1  # batches run on both sides before the clock starts

# Test-only seam in the early-exit path, so a test can inject a slowdown there: `row_hook(layer, rows)` at every
# computed layer with the rows still computed there, for a slowdown that scales with the batch (a per-call one would
# be amortised away at batch 32).
row_hook: Callable[[int, int], None] | None = None


@torch.no_grad()
@at_precision
def early_exit(model: MultiExitModel, rule: ExitRule, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, 0-based exit layers), on the CPU, of one batch, computing each row only up to its exit layer:
    rows that exit leave the batch, and the padding is trimmed to the longest row still running.

    Its cost beyond the layers bounds every realised fraction, so it is kept to what the decision needs: each layer's
    heads and the rule's step (none below the top layer for a rule that reads no signal, `ExitRule.reads`: the full
    model through this path costs what the plain forward costs), and one read of the rows that exit per layer (on a
    GPU the one synchronisation the decision needs). The row lengths and the pooling weights are derived once per
    batch, and again only when rows leave."""
    hidden, layer_mask = model.embed(batch)
    mask = batch["attention_mask"]
    device = hidden.device
    lengths = mask.sum(1).cpu()
    rows = torch.arange(hidden.shape[0])
    preds = torch.empty(len(rows), dtype=torch.long)
    exits = torch.empty(len(rows), dtype=torch.long)
    dtype = hidden.dtype  # the pooling weights' dtype, as `MultiExitModel.forward` derives them (the trace's)
    weights = model.heads.mean_weights(mask, dtype)
    looks = bool(rule.reads)
    state = rule.start(len(rows), device) if looks else {}
    top = model.num_layers - 1
    for layer in range(model.num_layers):
        if row_hook is not None:
            row_hook(layer, len(rows))
        hidden = model.run_layer(layer, hidden, layer_mask)
        if layer == top:  # the top layer always answers
            preds[rows] = model.heads.classify(top, model.heads.pool(top, hidden, weights)).argmax(-1).cpu()
            exits[rows] = top
            break
        if not looks:
            continue
        signals = model.layer_signals(layer, hidden, weights)
        state, done = rule.step(state, layer, signals)
        done = done.cpu()
        if not done.any():
            continue
        preds[rows[done]] = signals["logits"][done.to(device)].argmax(-1).cpu()
        exits[rows[done]] = layer
        if done.all():
            break
        keep = (~done).nonzero().squeeze(1)
        rows = rows[keep]
        keep = keep.to(device)
        hidden, mask = hidden.index_select(0, keep), mask.index_select(0, keep)
        state = {k: v.index_select(0, keep) for k, v in state.items()}
        width = int(lengths[rows].max())
        if width < mask.shape[1]:  # the rows left are all shorter than the one that set the padding
            hidden, mask = hidden[:, :width], mask[:, :width]
            layer_mask = model.layer_mask(hidden, mask)
        elif layer_mask is not None:
            layer_mask = layer_mask.index_select(0, keep)
        weights = model.heads.mean_weights(mask, dtype)
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


Setting = tuple[MultiExitModel, ExitRule]


def measure_latency(model: MultiExitModel, rule: ExitRule, data: Encoded, **options: Any) -> dict[str, Any]:
    """`measure_latencies` of one model and rule."""
    return measure_latencies([(model, rule)], data, **options)[0]


@torch.no_grad()
def measure_latencies(settings: Sequence[Setting], data: Encoded, *, batch_size: int, max_examples: int,
                      rounds: int = ROUNDS, warmup: int = WARMUP, bucket: bool = True,
                      simulated_exits: Sequence[Sequence[int]] | None = None,
                      progress: Progress | None = None) -> list[dict[str, Any]]:
    """The full model vs early exit by each (model, rule) of `settings` on the same examples, in `rounds` interleaved
    rounds: one figure dict per setting (docs/timing.md says how to read them).

    The examples timed are the split's first `max_examples` rows, whatever the batch size. Above batch 1 they are
    length-bucketed among themselves (`Encoded.batch_rows`), as a server batching its queue by length would do — the
    realistic batched setting, and the record says so (`bucketed`, with the `padding_ratio` it gave); `bucket=False`
    times them in file order instead. After `warmup` batches on every side, every round times each batch (one
    example at batch 1) on the full model and by every setting back to back, the side that goes first rotating from
    batch to batch and round to round, so load that drifts hits every side alike. The full model is timed once per
    batch and round for all settings (their models share one architecture, so its cost is theirs: the first
    setting's model runs it): timing k settings costs k + 1 passes per round, not 2k.

    What each dict holds (per unit = per example at batch 1, per batch above):
    - `full_ms`, `ee_ms`: `timing.latency_stats` of the per-unit times, each unit's median over the rounds, `raw` in
      the order the units were timed (file order at batch 1, the buckets' order above);
    - `speedup_wall`: the median over rounds of the round's full-model time ÷ its early-exit time (`timing.speedup`);
      `speedup_ci`: its 95% interval by a two-level bootstrap, units then rounds (`timing.speedup_interval`), so it
      carries which examples were timed as well as the clock's noise between rounds;
    - `realised_fraction` = `speedup_wall` ÷ the layer speed-up of the very examples timed (1.0 is the physical limit
      of skipping layers; the gap is the heads' and the exit test's cost); `realised_above_limit` flags a fraction
      above `timing.NOISE_LIMIT` (1.05), which only noise can produce;
    - `exit_mismatch`: how many timed examples exited at another layer than the setting's `simulated_exits` (1-based,
      the split's rows in order) says, at this batch size; 0 unless real early exit and the simulation disagree
      (None when no simulation is given);
    - `peak_memory_mb` (early exit) and `full_peak_memory_mb`: the largest memory growth of one call in the first
      round (`timing.PeakMemory`, read outside the timed span; `peak_memory_source` names what it reads);
    - `measured_at` (UTC), and the earlier keys: totals, throughputs, mean exit layer and, at batch 1, the median and
      p90 per example.
    """
    full_model = settings[0][0]
    for model, _ in settings:
        model.eval()
    device = full_model.device
    clock = Clock(device)
    n = min(max_examples, len(data))
    rows = data.batch_rows(batch_size, range(n), by_length=bucket and batch_size > 1)  # batch 1: file order
    batches = [_to(data.collate(r), device) for r in rows]
    exits = torch.empty(len(settings), n, dtype=torch.long)
    sides: list[Callable[[int], object]] = [lambda i: full_model.full_forward(batches[i])]
    for k, (model, rule) in enumerate(settings):
        def run(i: int, k: int = k, model: MultiExitModel = model, rule: ExitRule = rule) -> None:
            exits[k, rows[i]] = early_exit(model, rule, batches[i])[1] + 1
        sides.append(run)
    for i in range(min(warmup, len(batches))):
        for side in sides:
            side(i)
    times = np.empty((len(sides), rounds, len(batches)))
    peak = [0.0] * len(sides)
    with (progress or Progress.quiet()).task(f"latency b{batch_size}", total=rounds * len(batches)) as advance:
        for r in range(rounds):
            for i in range(len(batches)):
                shift = (r + i) % len(sides)
                for s in [*range(shift, len(sides)), *range(shift)]:
                    if r:
                        times[s, r, i] = clock.time(lambda: sides[s](i))
                        continue
                    with PeakMemory(device) as memory:  # read outside the timed span, in the first round only
                        times[s, r, i] = clock.time(lambda: sides[s](i))
                    peak[s] = max(peak[s], memory.mb)
                advance()
    full_raw = np.median(times[0], axis=0)
    common = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "batch_size": batch_size,
              "examples": n, "rounds": rounds, "full_total_ms": float(full_raw.sum()),
              "full_ms": latency_stats(full_raw), "full_peak_memory_mb": peak[0],
              "peak_memory_source": PeakMemory(device).source, "full_throughput": 1000 * n / float(full_raw.sum()),
              "bucketed": bucket and batch_size > 1, "padding_ratio": data.padding_ratio(rows)}
    out = []
    for k, (model, _) in enumerate(settings):
        ee_raw = np.median(times[k + 1], axis=0)
        wall = speedup(times[0], times[k + 1])
        mean_exit = float(exits[k].float().mean())
        realised = wall / (model.num_layers / mean_exit)
        mismatch = None if simulated_exits is None else \
            int((exits[k] != torch.as_tensor(list(simulated_exits[k][:n]))).sum())
        figures = {**common, "ee_total_ms": float(ee_raw.sum()), "speedup_wall": wall,
                   "speedup_ci": speedup_interval(times[0], times[k + 1], f"latency-b{batch_size}"),
                   "ee_ms": latency_stats(ee_raw), "mean_exit_layer": mean_exit, "realised_fraction": realised,
                   "realised_above_limit": realised > NOISE_LIMIT, "exit_mismatch": mismatch,
                   "peak_memory_mb": peak[k + 1], "ee_throughput": 1000 * n / float(ee_raw.sum())}
        if batch_size == 1:
            figures.update({"full_ms_median": figures["full_ms"]["p50"], "full_ms_p90": figures["full_ms"]["p90"],
                            "ee_ms_median": figures["ee_ms"]["p50"], "ee_ms_p90": figures["ee_ms"]["p90"]})
        out.append(figures)
    return out


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}
