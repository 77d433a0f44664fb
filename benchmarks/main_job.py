"""Issue 10's five figures for the main job, measured in one process on the same data: `make demo`'s setting
(configs/demo.yaml: SST-2 from ../shared/data/glue, 450 training rows, 300 held-out and dev rows, 64 word pieces,
the `cpu` preset's stages, 32 timed rows, ConsistentEE on two α), with `--methods all`.

1. training steps executed by `run --methods all` ÷ steps of the distinct trainings (goal 1.0);
2. wall time of `run --methods all` after (sharing of trainings, the model store and the evaluation cache: one trace per
   trained model, one confirmation and timing per distinct model and rule, `classification.evaluation_cache`) ÷
   before (all off) (goal <= 0.6);
3. a re-run with another grid for every replayed method, the store present, ÷ the first run (goal <= 0.15);
4. full-model throughput at batch 32 ÷ batch 1 with length bucketing (goal >= 2 on CPU);
5. realised fraction (measured wall speed-up ÷ layer speed-up) at batch 32 for PABEE and DeeBERT at their ≤1% points
   (goal >= 0.9), on the models figure 2's run stored.

    .venv/bin/python benchmarks/main_job.py            # about 25 minutes on 2 cores (figure 2 trains twice)

The figures come from `training_reuse.py` (1-3) and `length_bucketing.py` (4-5), which also run on their own.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from cee_bench.run_config import read_config
from length_bucketing import realised_fractions, throughput
from training_reuse import GLUE, OTHER_GRIDS, Setting, regrid_ratio, steps_ratio, wall_ratio

ROOT = Path(__file__).resolve().parents[1]


def demo_setting(config: Path, data_dir: Path) -> Setting:
    """The demo config's data and stages, every method (the vanilla-reward ConsistentEE and the π sweep on the same α
    grid as ConsistentEE)."""
    c = read_config(config)
    grids = dict(c.get("grids", {}))
    for variant in ("consistentee-vanilla", "consistentee-pi"):  # the π sweep reads ConsistentEE's own α models
        grids[variant] = grids.get("consistentee", [])
    return Setting(task=c["task"], data_dir=data_dir, preset=c["preset"], max_train_samples=c["max_train_samples"],
                   max_eval_samples=c["max_eval_samples"], max_seq_length=c["max_seq_length"],
                   latency_examples=c["latency_examples"], methods="all", grids=grids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--data-dir", type=Path, default=GLUE)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = demo_setting(args.config, args.data_dir)
    # the re-run's grids: other thresholds for the replayed methods, a subset of ConsistentEE's trained α values
    other = {**OTHER_GRIDS, **{name: grid[-1:] for name, grid in setting.grids.items() if grid}}
    print(f"setting: {setting}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        b = wall_ratio(setting, before, after)
        a = steps_ratio(setting, after, b["after_records"])
        print(f"1. executed steps / distinct training steps: {a['executed_steps']} / {a['distinct_training_steps']} = "
              f"{a['ratio']:.2f} (goal 1.0); per method: "
              + ", ".join(f"{m} {n}" for m, n in a["per_method_steps"].items()))
        print(f"2. wall time after / before: {b['after_seconds']:.0f} s / {b['before_seconds']:.0f} s = "
              f"{b['ratio']:.2f} (goal <= 0.6; before executed {b['before_steps']} steps, after {a['executed_steps']}; "
              f"training {b['after_train_seconds']:.0f} s / {b['before_train_seconds']:.0f} s = "
              f"{b['after_train_seconds'] / b['before_train_seconds']:.2f}, the rest (evaluation, set-up) "
              f"{b['after_seconds'] - b['after_train_seconds']:.0f} s / "
              f"{b['before_seconds'] - b['before_train_seconds']:.0f} s)")
        c = regrid_ratio(setting, after, b["after_seconds"], grids=other)
        print(f"3. re-run with other grids / first run: {c['rerun_seconds']:.0f} s / {c['first_seconds']:.0f} s = "
              f"{c['ratio']:.2f} (goal <= 0.15; the re-run executed {c['rerun_steps']} training steps)")
        t = throughput(setting.task, args.data_dir, max_seq_length=setting.max_seq_length)
        print(f"4. full model b32 bucketed / b1: {t['bucketed_per_s']:.1f}/s / {t['b1_per_s']:.1f}/s = "
              f"{t['ratio_bucketed']:.2f} (goal >= 2; padding {t['padding_bucketed']:.2f}; in file order "
              f"{t['ratio_file_order']:.2f}, padding {t['padding_file_order']:.2f})")
        fractions = realised_fractions(setting.task, args.data_dir, max_train=setting.max_train_samples,
                                       max_eval=setting.max_eval_samples, max_seq_length=setting.max_seq_length,
                                       preset=setting.preset, models=after)
        for name, r in fractions.items():
            print(f"5. {name} <=1% point ({'met' if r['met_on_selection'] else 'NOT met'} on held-out, threshold "
                  f"{r['threshold']}): layer speed-up {r['layer_speedup']:.2f}x, measured b32 {r['speedup_wall']:.2f}x, "
                  f"realised fraction {r['realised_fraction']:.2f} (goal >= 0.9)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
