"""Issue 10's batching figures, measured in one process on the same data (a benchmark that prints, not a timed test):

(a) full-model throughput at batch 32 ÷ batch 1, with length-bucketed batches (goal ≥ 2 on CPU) and with batches in
    file order, and the padding ratio (token slots computed ÷ real tokens) of each;
(b) realised fraction (measured wall speed-up ÷ layer speed-up) at batch 32 for PABEE and DeeBERT at their ≤1% loss
    operating points (goal ≥ 0.9), chosen on held-out train as the harness does.

    OMP_NUM_THREADS=1 python benchmarks/length_bucketing.py --data-dir ../shared/data/glue

(a) runs on SST-2 (single sentences) and MRPC (pairs: long, like QQP's). (b) runs on SST-2 with `make demo`'s data
settings (configs/demo.yaml: 450 training rows, length 64, 300 held-out and dev rows) and the `cpu` preset's stages,
where the ≤1% points exit at several layers (on MRPC every row exits at layer 1 or 2, the majority-class trap, so
no batch there has rows leaving at different layers); it trains each method (≈3 min on one thread), unless
`--models` names an output folder whose model store holds it (seed 42), e.g. `--models runs/demo` after `make demo`.
Each part is a function (`throughput`, `realised_fractions`) so a combined script can call them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Sequence

from cee_bench.classification.curve import choose_operating_points, per_layer_scores, sweep
from cee_bench.classification.data import Encoded, encode, load_splits
from cee_bench.classification.exits import Never
from cee_bench.classification.method import build_model, resolve_stages
from cee_bench.classification.multiexit import MultiExitModel, load_backbone
from cee_bench.classification.recipe import EVAL_BATCH_SIZE
from cee_bench.classification.runtime import measure_latency
from cee_bench.classification.sharing import MethodTrainer
from cee_bench.classification.trace import compute_trace
from cee_bench.options import RunOptions
from cee_bench.progress import Progress
from cee_bench.registry import get_method
from cee_bench.tasks import get_task

SEED = 42
DATA_DIR = Path("../shared/data/glue")


def _splits(task: str, data_dir: Path, tokenizer: Any, *, max_train: int, max_eval: int,
            max_seq_length: int) -> dict[str, Encoded]:
    splits = load_splits(get_task(task), data_dir, max_train=max_train, max_eval=max_eval, seed=SEED)
    return {name: encode(tokenizer, getattr(splits, name), max_seq_length) for name in ("train", "heldout", "dev")}


def throughput(task: str = "mrpc", data_dir: Path = DATA_DIR, *, examples: int = 256, batch_size: int = EVAL_BATCH_SIZE,
               max_seq_length: int = 128, repeats: int = 2) -> dict[str, float]:
    """(a) on the first `examples` dev rows: full-model examples/s at batch 1 and at `batch_size`, bucketed and in
    file order, each the best of `repeats` rounds that take the three in turn, so a burst of load elsewhere on the
    machine does not land on one side only (the heads are untrained: the full model's cost does not depend on its
    weights)."""
    encoder, tokenizer, _ = load_backbone(None)
    model = build_model(get_method("full"), encoder, get_task(task), "mean", SEED)
    dev = _splits(task, data_dir, tokenizer, max_train=1, max_eval=examples, max_seq_length=max_seq_length)["dev"]
    settings = {"b1": (1, True), "bucketed": (batch_size, True), "file_order": (batch_size, False)}
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for name, (size, bucket) in settings.items():
            figures = measure_latency(model, Never(), dev, batch_size=size, max_examples=examples, bucket=bucket)
            if name not in best or figures["full_throughput"] > best[name]["full_throughput"]:
                best[name] = figures
    per_s = {name: figures["full_throughput"] for name, figures in best.items()}
    return {"task": task, "examples": best["b1"]["examples"], "repeats": repeats,
            "mean_tokens": sum(len(ids) for ids in dev.input_ids[:examples]) / best["b1"]["examples"],
            "b1_per_s": per_s["b1"], "bucketed_per_s": per_s["bucketed"], "file_order_per_s": per_s["file_order"],
            "ratio_bucketed": per_s["bucketed"] / per_s["b1"], "ratio_file_order": per_s["file_order"] / per_s["b1"],
            "padding_bucketed": best["bucketed"]["padding_ratio"],
            "padding_file_order": best["file_order"]["padding_ratio"]}


def _trained(name: str, task: str, encoder: Any, data: dict[str, Encoded], models: Path | None,
             preset: str) -> MultiExitModel:
    """`name` trained with `preset`'s stages (`cee_bench.classification.sharing`), from the model store of `models`
    when it holds the same training (e.g. `runs/demo` after `make demo`), and stored there."""
    opts = RunOptions(task=task, methods=name, preset=preset, seed=SEED, device="cpu", quiet=True,
                      output_dir=models if models is not None else Path(tempfile.mkdtemp(prefix="cee-bucketing-")))
    opts.validate()
    method = get_method(name)
    trained = MethodTrainer(method, get_task(task), encoder, data, resolve_stages(method, opts), opts,
                            Progress.quiet(), EVAL_BATCH_SIZE).run()
    return trained.model.eval()


def realised_fractions(task: str = "sst2", data_dir: Path = DATA_DIR, *, methods: Sequence[str] = ("pabee", "deebert"),
                       max_train: int = 450, max_eval: int = 300, examples: int = 256,
                       batch_size: int = EVAL_BATCH_SIZE, max_seq_length: int = 64, preset: str = "cpu",
                       models: Path | None = None) -> dict[str, dict[str, Any]]:
    """(b) per method: its ≤1% loss point on held-out train (the harness's `choose_operating_points` against the
    model's own top layer), then `measure_latency` at `batch_size` on the first `examples` dev rows."""
    encoder, tokenizer, _ = load_backbone(None)
    data = _splits(task, data_dir, tokenizer, max_train=max_train, max_eval=max_eval, max_seq_length=max_seq_length)
    out = {}
    for name in methods:
        method = get_method(name)
        model = _trained(name, task, encoder, data, models, preset)
        held = compute_trace(model, data["heldout"], split="heldout", batch_size=EVAL_BATCH_SIZE)
        curve = sweep(method.grid(model.num_layers), lambda t: (held, method.rule(model, t)), get_task(task))
        choice = choose_operating_points(curve, per_layer_scores(held, get_task(task))[-1])["le1_loss"]
        lat = measure_latency(model, method.rule(model, choice["threshold"]), data["dev"], batch_size=batch_size,
                              max_examples=examples)
        out[name] = {"threshold": choice["threshold"], "met_on_selection": choice["met_on_selection"],
                     "mean_exit_layer": lat["mean_exit_layer"], "layer_speedup": model.num_layers / lat["mean_exit_layer"],
                     "speedup_wall": lat["speedup_wall"], "realised_fraction": lat["realised_fraction"],
                     "examples": lat["examples"], "padding_ratio": lat["padding_ratio"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--parts", default="a,b", help="which figures: a (throughput), b (realised fraction)")
    parser.add_argument("--throughput-tasks", default="sst2,mrpc")
    parser.add_argument("--task", default="sst2", help="the task of (b)")
    parser.add_argument("--examples", type=int, default=256, help="dev rows timed (the first ones)")
    parser.add_argument("--max-train-samples", type=int, default=450, help="(b)'s training rows")
    parser.add_argument("--models", type=Path, default=None, help="an output folder whose model store to reuse")
    args = parser.parse_args()

    parts = args.parts.split(",")
    for task in args.throughput_tasks.split(",") if "a" in parts else ():
        t = throughput(task, args.data_dir, examples=args.examples)
        print(f"(a) {task}: {t['examples']} dev rows, {t['mean_tokens']:.1f} word pieces each, best of {t['repeats']}; "
              f"full model "
              f"b1 {t['b1_per_s']:.1f}/s; b32 bucketed {t['bucketed_per_s']:.1f}/s = {t['ratio_bucketed']:.2f}x b1 "
              f"(goal >= 2), padding {t['padding_bucketed']:.2f}; b32 file order {t['file_order_per_s']:.1f}/s = "
              f"{t['ratio_file_order']:.2f}x b1, padding {t['padding_file_order']:.2f}")
    fractions = realised_fractions(args.task, args.data_dir, examples=args.examples, max_train=args.max_train_samples,
                                   models=args.models) if "b" in parts else {}
    for name, r in fractions.items():
        print(f"(b) {args.task} {name} <=1% point ({'met' if r['met_on_selection'] else 'NOT met'} on heldout, "
              f"threshold {r['threshold']}): b32 bucketed, {r['examples']} dev rows, mean exit layer "
              f"{r['mean_exit_layer']:.2f}, layer speed-up {r['layer_speedup']:.2f}x, measured {r['speedup_wall']:.2f}x, "
              f"realised fraction {r['realised_fraction']:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
