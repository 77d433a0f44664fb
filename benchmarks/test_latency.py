"""The latency regression suite (issue 6): pytest-benchmark timings of a fixed model on fixed inputs, each paired
round by round with a reference timed just before it, so `cee-bench bench` can compare ratios instead of raw times.

What is timed, and against which reference:
- `full_forward[b1|b32]`: the harness's plain model (`MultiExitModel.full_forward`) vs the backbone's own Hugging Face
  forward — catches a slowdown in the shared layer-by-layer path, which every other ratio would hide;
- `early_exit[<method>-b1|b32]`: real early exit of every registered method (rows leave the batch) vs the full-model
  forward of the same inputs at the same batch size;
- `sweep[<method>]`: replaying the method's threshold grid over a trace (the simulated curve), cycled to
  `SWEEP_VALUES` thresholds so every method's round lasts about as long as its reference, vs the batch-1 full-model
  forward (both are many small operations, so they share the machine's load best);
- `decode_step`: token-level early-exit generation (`cee_bench.generation`) with CALM's softmax confidence vs the same
  decoder with no exits, through the same code path; skipped where the generation track is not installed.

The heads are untrained, so each method's operating point is fixed without training: the model is built by
`classification.method.build_model` from a fixed seed (the method's own heads and extras at their defaults), the exit
classifiers are redrawn from the same seed with a wider spread (`HEAD_STD`: default-initialised heads are so unsure that
entropy rules never exit), its trace over the fixed inputs is replayed over the method's own grid, and the grid value
whose mean exit layer is nearest the middle layer is used. Its decisions are deterministic, so the operating point is
the same every run on one machine. The decoder's CALM threshold is picked the same way from `CALM_THRESHOLDS`.

Run through `cee-bench bench`; `pytest benchmarks/test_latency.py` also works (add `--bench-device cuda` on a GPU).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from cee_bench.classification import curve
from cee_bench.classification.exits import ExitRule, simulate
from cee_bench.classification.method import Method, build_model
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.classification.runtime import early_exit
from cee_bench.classification.trace import Trace, compute_trace
from cee_bench.gate import workload
from cee_bench.registry import get_method, method_names
from cee_bench.tasks import get_task

Batch = dict[str, torch.Tensor]

TASK = get_task("sst2")  # two labels; the sweep only needs its metric
BATCH_SIZES = (1, 32)
ROUNDS = {1: 13, 32: 7, "sweep": 9, "decode": 7}  # odd, so the median is one round's ratio (times an odd scale)
WARMUP = 1
SWEEP_TILES = 16  # the sweep replays the trace of the 32 inputs repeated this often
# A round much shorter than the scheduler's time slice is either untouched or preempted whole, so a 2 ms sweep
# scatters by 3x on a busy machine; tens of milliseconds average over many slices like the reference does.
SWEEP_VALUES = 48
PROMPT_TOKENS, NEW_TOKENS = 8, 16
HEAD_STD = 0.7  # logits spread enough that confidence rules find a mid-range exit layer on the fixed inputs
# [CLS] pooling: random inputs' mean-pooled states are nearly alike, so every input would exit at the same layer and
# each method's grid would jump from the top layer to the first; the first token's state differs more between inputs.
POOLING = "cls"
CALM_THRESHOLDS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # an untrained decoder's top-1 − top-2 margins are this small


@dataclass
class OperatingPoint:
    method: Method
    model: MultiExitModel
    threshold: Any
    rule: ExitRule
    grid: list[Any]
    trace: Trace


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.config.getoption("--bench-device"))


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread(device: torch.device):
    """One intra-op thread on the CPU: on a busy 2-core machine two threads wait on each other at every barrier and
    the timings scatter by several times; one thread keeps the pairs comparable."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def rounds(request: pytest.FixtureRequest) -> dict[object, int]:
    """Rounds per benchmark, times `--bench-rounds-scale` (the gate's confirmation reruns time longer)."""
    scale = request.config.getoption("--bench-rounds-scale")
    return {key: count * scale for key, count in ROUNDS.items()}


@pytest.fixture(scope="session")
def data():
    return workload.fixed_inputs()


@pytest.fixture(scope="session")
def batches(data, device: torch.device) -> dict[int, list[Batch]]:
    """The timed inputs: the first `workload.B1_INPUTS` one by one, and all of them as one padded batch of 32."""
    def tensors(rows: list[int]) -> Batch:
        return {k: v.to(device) for k, v in data.collate(rows).items() if k in ("input_ids", "attention_mask")}

    return {1: [tensors([i]) for i in range(workload.B1_INPUTS)], 32: [tensors(list(range(len(data))))]}


@pytest.fixture(scope="session")
def operating_point(data, device: torch.device) -> Callable[[str], OperatingPoint]:
    """`operating_point(name)`: the method's model on `device` and the grid value giving a mid-range exit layer."""
    encoder = workload.build_backbone()

    @functools.cache
    def build(name: str) -> OperatingPoint:
        method = get_method(name)
        model = build_model(method, encoder, TASK, POOLING, workload.SEED)
        torch.manual_seed(workload.SEED)
        for classifier in model.heads.classifiers:
            torch.nn.init.normal_(classifier.weight, std=HEAD_STD)
        model = model.to(device).eval()
        trace = compute_trace(model, data, split="bench", batch_size=len(data))
        grid = method.thresholds(list(method.grid(model.num_layers)) or [0.0])  # ConsistentEE's cpu grid: held-out
        middle = (model.num_layers + 1) / 2

        def distance(value: Any) -> float:
            return abs(float(simulate(trace.signals, method.rule(model, value)).float().mean()) + 1 - middle)

        threshold = min(grid, key=distance)
        return OperatingPoint(method, model, threshold, method.rule(model, threshold), grid, trace)

    return build


def paired(benchmark, device: torch.device, target: Callable[[], object], reference: Callable[[], object], *,
           reference_name: str, rounds: int, machine_independent: bool, expected_ratio: float = 1.0,
           **info: Any) -> None:
    """Time `target` with pytest-benchmark, timing `reference` just before every round (pedantic's setup, which is
    not timed); the per-round reference times go in `extra_info`, where `cee-bench bench` pairs them with the
    rounds of pytest-benchmark's JSON output. `machine_independent`: target and reference run the same work, so
    their ratio transfers to another CPU (`cee_bench.gate.saved_run.Figures`)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def synced(fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            fn()
            sync()
        return call

    target, reference = synced(target), synced(reference)
    reference_s: list[float] = []

    def time_reference() -> None:
        start = time.perf_counter()
        reference()
        reference_s.append(time.perf_counter() - start)

    with torch.no_grad():
        for _ in range(WARMUP):
            reference()
            target()
        benchmark.pedantic(target, setup=time_reference, rounds=rounds)
    benchmark.extra_info.update(reference=reference_name, reference_s=reference_s, expected_ratio=expected_ratio,
                                machine_independent=machine_independent, **info)


def record_exits(benchmark, mean_exit: float, num_layers: int) -> None:
    """Exit figures beside the timings; the gate derives the realised fraction (1 / normalised) from them."""
    benchmark.extra_info.update(exits=True, mean_exit_layer=mean_exit, saved_layers=1 - mean_exit / num_layers)


@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda b: f"b{b}")
def test_full_forward(benchmark, operating_point, batches, device, rounds, batch_size: int) -> None:
    model = operating_point("full").model
    inputs = batches[batch_size]
    paired(benchmark, device, lambda: [model.full_forward(b) for b in inputs],
           lambda: [model.backbone(**b) for b in inputs], reference_name=f"HF forward b{batch_size}",
           rounds=rounds[batch_size], machine_independent=True, mean_exit_layer=float(model.num_layers),
           saved_layers=0.0)


@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("method", method_names())
def test_early_exit(benchmark, operating_point, batches, device, rounds, method: str, batch_size: int) -> None:
    point = operating_point(method)
    model, rule, inputs = point.model, point.rule, batches[batch_size]
    exits = torch.cat([early_exit(model, rule, b)[1] for b in inputs]).float() + 1
    mean_exit = float(exits.mean())
    paired(benchmark, device, lambda: [early_exit(model, rule, b) for b in inputs],
           lambda: [model.full_forward(b) for b in inputs], reference_name=f"full forward b{batch_size}",
           rounds=rounds[batch_size], machine_independent=True, expected_ratio=mean_exit / model.num_layers,
           threshold=point.threshold)
    record_exits(benchmark, mean_exit, model.num_layers)


@pytest.mark.parametrize("method", method_names())
def test_sweep(benchmark, operating_point, batches, device, rounds, method: str) -> None:
    point = operating_point(method)
    trace = Trace({k: torch.cat([v] * SWEEP_TILES) for k, v in point.trace.signals.items()},
                  torch.cat([point.trace.labels] * SWEEP_TILES), point.trace.split)
    model = point.model
    grid = [point.grid[i % len(point.grid)] for i in range(SWEEP_VALUES)]
    # `curve.sweep`, looked up at call time, so a test can wrap it to inject a slowdown
    paired(benchmark, device, lambda: curve.sweep(grid, lambda value: (trace, point.method.rule(model, value)), TASK),
           lambda: [model.full_forward(b) for b in batches[1]], reference_name="full forward b1",
           rounds=rounds["sweep"], machine_independent=False, grid_size=len(point.grid),
           thresholds_replayed=len(grid), rows=len(trace))


def test_decode_step(benchmark, device, rounds) -> None:
    decoding = pytest.importorskip("cee_bench.generation.decoding")
    calm = pytest.importorskip("baselines.calm")
    from cee_bench.generation.model import MultiExitLM, every_layer

    mlm = MultiExitLM(workload.build_decoder().to(device), every_layer(workload.DECODER_CONFIG["num_hidden_layers"]))
    prompt = torch.randint(3, workload.DECODER_CONFIG["vocab_size"], (1, PROMPT_TOKENS),
                           generator=torch.Generator().manual_seed(workload.SEED)).to(device)
    greedy = decoding.Decoding(greedy=True)

    def generate(rule: Any):
        return decoding.generate(mlm, prompt, rule=rule, max_new_tokens=NEW_TOKENS, decoding=greedy)

    def mean_exit(rule: Any) -> float:
        layers = generate(rule).decode_exit_layers
        return sum(layers) / len(layers)

    rules = [calm.CalmRule("softmax", threshold, max_steps=NEW_TOKENS) for threshold in CALM_THRESHOLDS]
    rule = min(rules, key=lambda r: abs(mean_exit(r) - (mlm.num_layers + 1) / 2))
    exit_layer = mean_exit(rule)
    paired(benchmark, device, lambda: generate(rule), lambda: generate(None), reference_name="decode, no exits",
           rounds=rounds["decode"], machine_independent=True, expected_ratio=exit_layer / mlm.num_layers,
           threshold=rule.threshold)
    record_exits(benchmark, exit_layer, mlm.num_layers)
