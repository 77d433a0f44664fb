"""What training each distinct training key once and keeping trained models saves `cee-bench run --methods all` (issue 10).

Measured in one process on the same data (defaults: SST-2 from ../shared/data/glue, 150 training rows, 100
evaluation rows per split, 64 word pieces, `smoke` stages, 16 timed examples, one thread):

(a) training steps executed by `run --methods all` ÷ steps of the distinct trainings it trained (goal 1.0);
(b) wall time of `run --methods all` after (sharing of trainings and the store on) ÷ before (both off) (goal <= 0.6);
(c) wall time of a re-run with another grid for every replayed method (ConsistentEE: a subset of its α grid), the
    store present, ÷ the first run's (goal <= 0.15).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training_reuse.py [--preset cpu] [--max-train-samples 400]

Each figure is a function (`steps_ratio`, `wall_ratio`, `regrid_ratio`) so a combined script can call them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cee_bench.options import RunOptions
from cee_bench.runner import run
from cee_bench.store import read_entry, store_root

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
# Another grid for every method whose grid is replayed over one model (ConsistentEE's: a subset of every preset's
# α grid, so the stored α models serve it).
OTHER_GRIDS: dict[str, list[Any]] = {"pabee": [0, 1, 2], "deebert": [0.0, 0.1, 0.3], "pcee-bert": [0.0, 0.2, 0.4],
                                     "consistentee": [1.0], "consistentee-vanilla": [1.0]}


@dataclass
class Setting:
    """The run every figure measures (the same data for all)."""

    task: str = "sst2"
    data_dir: Path = GLUE
    preset: str = "smoke"
    max_train_samples: int = 150
    max_eval_samples: int = 100
    max_seq_length: int = 64
    latency_examples: int = 16
    methods: str = "all"
    grids: dict[str, list[Any]] = field(default_factory=dict)  # a config file's `grids`

    def options(self, folder: Path, **changes: Any) -> RunOptions:
        changes = {"grids": dict(self.grids), **changes}
        return RunOptions(task=self.task, methods=self.methods, data_dir=self.data_dir, output_dir=folder,
                          preset=self.preset, max_train_samples=self.max_train_samples,
                          max_eval_samples=self.max_eval_samples, max_seq_length=self.max_seq_length,
                          latency_examples=self.latency_examples, device="cpu", quiet=True, **changes)


def timed_run(opts: RunOptions) -> tuple[float, list[dict[str, Any]]]:
    """(wall seconds, the records written) of one `run`."""
    started = time.perf_counter()
    paths = run(opts)
    return time.perf_counter() - started, [json.loads(Path(p).read_text()) for p in paths]


def distinct_training_steps(folder: Path, task: str) -> int:
    """Optimiser steps of the distinct trainings in a store: each entry counts the steps since its parent training."""
    return sum(entry["steps"] for entry in map(read_entry, store_root(folder, task).iterdir()) if entry)


def steps_ratio(setting: Setting, folder: Path, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """(a): steps executed by one `run` into the empty store `folder` (run here unless its `records` are given) ÷
    steps of the distinct trainings it stored."""
    if records is None:
        _, records = timed_run(setting.options(folder))
    executed = sum(r["training"]["steps"] for r in records)
    distinct = distinct_training_steps(folder, setting.task)
    return {"executed_steps": executed, "distinct_training_steps": distinct, "ratio": executed / distinct,
            "per_method_steps": {r["method"]: r["training"]["steps"] for r in records}}


def wall_ratio(setting: Setting, before: Path, after: Path) -> dict[str, Any]:
    """(b): wall time of `run` with sharing and store on (`after`, empty store) ÷ both off (`before`)."""
    off, off_records = timed_run(setting.options(before, share=False))
    on, on_records = timed_run(setting.options(after))
    return {"before_seconds": off, "after_seconds": on, "ratio": on / off,
            "before_steps": sum(r["training"]["steps"] for r in off_records), "after_records": on_records}


def regrid_ratio(setting: Setting, folder: Path, first_seconds: float | None = None,
                 grids: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """(c): a re-run with other grids (`OTHER_GRIDS` unless given; records recomputed, the store kept) ÷ the first run
    into `folder` (run here unless its time is given)."""
    if first_seconds is None:
        first_seconds, _ = timed_run(setting.options(folder))
    again, records = timed_run(setting.options(folder, grids=dict(grids or OTHER_GRIDS), force=True))
    return {"first_seconds": first_seconds, "rerun_seconds": again, "ratio": again / first_seconds,
            "rerun_steps": sum(r["training"]["steps"] for r in records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Setting()
    for name in ("task", "preset", "max_train_samples", "max_eval_samples", "max_seq_length", "latency_examples",
                 "methods"):
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--data-dir", type=Path, default=GLUE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = Setting(task=args.task, data_dir=args.data_dir, preset=args.preset,
                      max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
                      max_seq_length=args.max_seq_length, latency_examples=args.latency_examples,
                      methods=args.methods)
    print(f"setting: {setting}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        b = wall_ratio(setting, tmp / "before", tmp / "after")
        print(f"(b) wall time after/before: {b['after_seconds']:.1f} s / {b['before_seconds']:.1f} s = "
              f"{b['ratio']:.2f} (goal <= 0.6; before executed {b['before_steps']} steps)")
        # (a) and (c) on the store (b)'s `after` run left: its steps, then a re-run with other grids
        a = steps_ratio(setting, tmp / "after", b["after_records"])
        print(f"(a) executed steps / distinct training steps: {a['executed_steps']} / {a['distinct_training_steps']} = "
              f"{a['ratio']:.2f} (goal 1.0); per method: "
              + ", ".join(f"{m} {n}" for m, n in a["per_method_steps"].items()))
        c = regrid_ratio(setting, tmp / "after", b["after_seconds"])
        print(f"(c) re-run with other grids / first run: {c['rerun_seconds']:.1f} s / {c['first_seconds']:.1f} s = "
              f"{c['ratio']:.2f} (goal <= 0.15; the re-run executed {c['rerun_steps']} training steps)")


if __name__ == "__main__":
    main()
