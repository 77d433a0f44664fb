"""How much of the layer saving early-exit decoding turns into wall-clock speed on this machine.

Prints the realised fraction = measured decode speed-up (tokens/s vs the full model, same process, same prompt,
same code path) ÷ layer speed-up (L / mean layers per token); 1.0 is the physical limit of skipping layers, and the
goal on CPU is ≥ 0.8. What the fraction loses: the state-copying K/V projections of skipped layers, the exit test,
and the fixed per-token costs (embedding, LM head, sampling, Python).

Rules measured: every token exits at a fixed layer (the mechanism alone), and CALM's state saturation.
Full and early-exit runs are interleaved and the median of `--repeats` runs is reported, so background load
drifts hit both alike.

    python benchmarks/generation_speed.py [--model PATH] [--tokens 48] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.calm import CalmRule  # noqa: E402
from cee_bench.generation.decoding import Decoding, generate  # noqa: E402
from cee_bench.generation.metrics import layer_stats  # noqa: E402
from cee_bench.generation.model import MultiExitLM, every_layer, load_decoder  # noqa: E402
from cee_bench.generation.training import chat_ids  # noqa: E402

PROMPT = ("Summarize the following news article in a few sentences.\n\nThe city council met on Tuesday to discuss "
          "the new park. Residents said the plan would bring more families to the area, while some worried about "
          "traffic. The mayor said a decision is expected next month after a public hearing.")


class FixedLayerRule:
    """Every token exits at `layer`: isolates the decoding mechanism's cost from any exit test."""

    def __init__(self, layer: int) -> None:
        self.layer = layer

    def decide(self, mlm, layer, hidden, previous, step):
        return layer >= self.layer, 1.0, None


def measure(mlm: MultiExitLM, ids: torch.Tensor, rule, tokens: int) -> tuple[float, list[int]]:
    """Decode tokens/s and per-token exit layers of one greedy run that never stops at EOS."""
    out = generate(mlm, ids, rule=rule, max_new_tokens=tokens, decoding=Decoding(greedy=True))
    return (len(out.tokens) - 1) / out.decode_seconds, out.decode_exit_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    lm, tokenizer, backbone = load_decoder(args.model)
    mlm = MultiExitLM(lm, every_layer(len(lm.model.layers)))
    ids = chat_ids(tokenizer, PROMPT)
    rules = {f"fixed exit at layer {mlm.num_layers // 2}": FixedLayerRule(mlm.num_layers // 2),
             f"fixed exit at layer {mlm.num_layers * 3 // 4}": FixedLayerRule(mlm.num_layers * 3 // 4),
             "CALM state, threshold 0.99": CalmRule("state", 0.99, args.tokens, decay_form="none")}
    measure(mlm, ids, None, 4)  # warm-up
    speeds: dict[str, list[float]] = {"full": [], **{name: [] for name in rules}}
    layers: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        speeds["full"].append(measure(mlm, ids, None, args.tokens)[0])
        for name, rule in rules.items():
            speed, layers[name] = measure(mlm, ids, rule, args.tokens)
            speeds[name].append(speed)
    full = statistics.median(speeds["full"])
    print(f"{backbone}, {mlm.num_layers} layers, {args.tokens} tokens, {args.threads} thread(s), "
          f"median of {args.repeats}: full model {full:.1f} tokens/s")
    for name in rules:
        stats = layer_stats(layers[name], mlm.num_layers)
        measured = statistics.median(speeds[name]) / full
        print(f"{name:32s} layers/token {stats['mean_layers_per_token']:5.1f}  layer speed-up "
              f"{stats['layer_speedup']:.2f}x  measured {measured:.2f}x  realised fraction "
              f"{measured / stats['layer_speedup']:.2f}")


if __name__ == "__main__":
    main()
