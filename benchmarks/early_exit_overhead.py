"""What the early-exit path costs when nothing exits (issue 21 item 3), measured side by side in one process.

Every realised fraction is capped by this: the full model run through the layer-by-layer early-exit path
(`runtime.early_exit` with the full model's rule, `Never`) against the Hugging Face forward of the same backbone on
the same batches (`backbone(**batch)`). Goal: ≥ 0.98 × the Hugging Face forward's speed at batch 1 and at batch 32.
Printed beside it, for reading realised fractions:
- `full_forward`: the harness's plain model (`MultiExitModel.full_forward`), the reference every record's measured
  speed-up divides by;
- `heads + test`: a rule that reads every layer's heads but never exits (`EntropyBelow(0)`): the per-layer cost of the
  heads and the exit test, which every early-exit method pays at the layers it does compute.

The packaged encoder (all-MiniLM-L6-v2, 6 layers) with untrained heads (the cost does not depend on the weights), the
first SST-2 dev rows (length-bucketed at batch 32, as the harness times them). Every round times each batch on every
side back to back, the order rotating from batch to batch; the speed ratio is the median over rounds of
Σ HF time ÷ Σ side time, with a 95% two-level bootstrap interval over the batches and the rounds
(`cee_bench.timing.speedup_interval`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/early_exit_overhead.py [--data-dir ../shared/data/glue] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cee_bench.classification.data import encode, load_splits
from cee_bench.classification.exits import EntropyBelow, Never
from cee_bench.classification.method import build_model
from cee_bench.classification.multiexit import load_backbone
from cee_bench.classification.runtime import early_exit
from cee_bench.precision import DTYPES, check_dtype
from cee_bench.registry import get_method
from cee_bench.tasks import get_task
from cee_bench.timing import Clock, latency_stats, speedup, speedup_interval

ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.98


def side_by_side(sides: dict[str, Callable[[dict], object]], batches: list[dict], rounds: int,
                 clock: Clock) -> dict[str, np.ndarray]:
    """Times [rounds, batches] in ms of every side, each batch timed on all sides back to back (order rotating)."""
    names = list(sides)
    times = {name: np.empty((rounds, len(batches))) for name in names}
    for batch in batches[:3]:  # warm-up
        for fn in sides.values():
            fn(batch)
    for r in range(rounds):
        for i, batch in enumerate(batches):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                times[name][r, i] = clock.time(lambda: sides[name](batch))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    parser.add_argument("--examples-b1", type=int, default=100)
    parser.add_argument("--examples-b32", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="every side's precision (`--dtype`)")
    args = parser.parse_args()
    check_dtype(args.dtype, "cpu")
    torch.set_num_threads(args.threads)
    task = get_task("sst2")
    encoder, tokenizer, backbone = load_backbone(None)
    model = build_model(get_method("full"), encoder, task, "mean", 42, args.dtype).eval()
    splits = load_splits(task, args.data_dir, max_train=1, max_eval=max(args.examples_b1, args.examples_b32))
    dev = encode(tokenizer, splits.dev, args.max_seq_length)
    clock = Clock(torch.device("cpu"))
    top = model.num_layers - 1

    def hf(batch: dict) -> torch.Tensor:  # the backbone's own forward, then the same top head, at the same precision
        with model.inference():
            hidden = model.backbone(**batch).last_hidden_state
            weights = model.heads.mean_weights(batch["attention_mask"], hidden.dtype)
            return model.heads.classify(top, model.heads.pool(top, hidden, weights))

    sides = {"hf": hf, "early exit, full model": lambda b: early_exit(model, Never(), b),
             "full_forward": model.full_forward, "heads + test": lambda b: early_exit(model, EntropyBelow(0.0), b)}
    print(f"{backbone}, {model.num_layers} layers, {args.dtype}, SST-2 dev, {args.threads} thread(s), "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.1f}; speed ÷ the Hugging Face forward (HF time ÷ side time), median "
          "over rounds [95% interval, batches then rounds]")
    with torch.no_grad():
        for batch_size, examples in ((1, args.examples_b1), (32, args.examples_b32)):
            rows = dev.batch_rows(batch_size, range(min(examples, len(dev))))
            batches = [{k: v for k, v in dev.collate(r).items() if k in ("input_ids", "attention_mask",
                                                                       "token_type_ids")} for r in rows]
            times = side_by_side(sides, batches, args.rounds, clock)
            hf_ms = latency_stats(np.median(times["hf"], axis=0))
            print(f"batch {batch_size}: {len(batches)} batches, HF forward p50 {hf_ms['p50']:.2f} ms per batch")
            for name in list(sides)[1:]:
                ratio = speedup(times["hf"], times[name])
                low, high = speedup_interval(times["hf"], times[name], f"overhead-{name}-b{batch_size}")
                goal = f" (goal >= {GOAL})" if name.startswith("early exit") else ""
                print(f"  {name:24s} {ratio:.3f} [{low:.3f}, {high:.3f}]{goal}")


if __name__ == "__main__":
    main()
