"""The early-exit path and its timing (`classification.runtime`) on the tiny BERT of conftest.py:

- every registered method's rule, through the fast path, gives the simulation's predictions and exit layers at batch 1
  and batched, in fp32 and bf16 (the path's one definition of right);
- a rule that reads no signal computes no head below the top layer;
- `measure_latencies`: the figures docs/timing.md describes, the realised > 1.05 flag, `exit_mismatch` 0 on the
  tiny model and counting a deliberate mismatch, the full model timed once per unit and round for several settings.
"""

from __future__ import annotations

import pytest
import torch

from cee_bench.classification import runtime
from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import EntropyBelow, Never, Patience, simulate
from cee_bench.classification.method import build_model
from cee_bench.classification.trace import compute_trace
from cee_bench.precision import cpu_bf16_native
from cee_bench.registry import get_method, method_names
from cee_bench.tasks import get_task

TASK = get_task("sst2")
STATS = {"count", "mean", "p50", "p90", "p95", "p99", "stdev", "raw"}


def _data(n: int = 40) -> Encoded:
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(3, 24, (n,), generator=gen).tolist()
    ids = [[101] + torch.randint(1000, 5000, (k,), generator=gen).tolist() + [102] for k in lengths]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 2, (n,), generator=gen))


@pytest.fixture(scope="module")
def methods_models(tiny_encoder):
    """Every registered method's model on the tiny encoder, heads spread wide so rows exit at different layers,
    with the grid value whose simulated exits spread most."""
    data = _data()
    out = {}
    for name in method_names():
        method = get_method(name)
        model = build_model(method, tiny_encoder, TASK, "mean", 3).eval()
        torch.manual_seed(3)
        for classifier in model.heads.classifiers:
            torch.nn.init.normal_(classifier.weight, std=3.0)
        trace = compute_trace(model, data, split="test", batch_size=8)
        grid = method.grid(model.num_layers) or [0.0]  # ConsistentEE's `cpu` α grid is chosen on held-out
        rules = [method.rule(model, value) for value in method.thresholds(grid)]
        out[name] = (model, max(rules, key=lambda r: len(set(simulate(trace.signals, r).tolist()))), trace)
    return out, data


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", method_names())
def test_every_methods_rule_exits_where_the_simulation_says(methods_models, name, precision, monkeypatch):
    if precision == "bf16" and not cpu_bf16_native():
        pytest.skip("this CPU has no native bf16")
    models, data = methods_models
    model, rule, trace = models[name]
    monkeypatch.setattr(model, "precision", precision)
    if precision != "fp32":
        trace = compute_trace(model, data, split="test", batch_size=8)
    sim_exits = simulate(trace.signals, rule)
    sim_preds = trace.signals["logits"][torch.arange(len(data)), sim_exits].argmax(-1)
    for batch_size in (1, 8, len(data)):
        preds, exits = runtime.predict(model, rule, data, batch_size)
        assert exits.tolist() == sim_exits.tolist(), batch_size
        assert preds.tolist() == sim_preds.tolist(), batch_size


def test_a_rule_that_reads_nothing_computes_only_the_top_head(random_heads_model, monkeypatch):
    model, data = random_heads_model, _data(8)
    pooled = []
    pool = model.heads.pool
    monkeypatch.setattr(model.heads, "pool", lambda layer, *a, **k: pooled.append(layer) or pool(layer, *a, **k))
    preds, exits = runtime.early_exit(model, Never(), data.collate(list(range(8))))
    assert pooled == [model.num_layers - 1]
    assert exits.tolist() == [model.num_layers - 1] * 8
    assert preds.tolist() == model.full_forward(data.collate(list(range(8)))).argmax(-1).tolist()


class ScriptedClock:
    """A clock that runs the call and reports a scripted time: full model `full` ms, early exit `early` ms (the
    `scripted` fixture's wrappers set `side` to the side the call ran)."""

    full, early, side = 10.0, 10.0, ""

    def time(self, fn) -> float:
        fn()
        return self.full if self.side == "full" else self.early


@pytest.fixture
def scripted(monkeypatch, random_heads_model):
    """`measure_latencies` with a clock that says which side it timed by the function each side runs."""
    model = random_heads_model
    clock = ScriptedClock()
    forward = model.full_forward

    def full_forward(batch):
        clock.side = "full"
        return forward(batch)

    early_exit = runtime.early_exit

    def tagged_early_exit(*args):
        clock.side = "early"
        return early_exit(*args)

    monkeypatch.setattr(model, "full_forward", full_forward)
    monkeypatch.setattr(runtime, "early_exit", tagged_early_exit)
    monkeypatch.setattr(runtime, "Clock", lambda device: clock)
    return clock


@pytest.mark.parametrize("full_ms, flagged", [(11.0, True), (10.4, False)])
def test_a_realised_fraction_above_1_05_is_flagged_as_noise(random_heads_model, scripted, full_ms, flagged):
    scripted.full, scripted.early = full_ms, 10.0  # Never exits at the top: the layer speed-up is 1
    figures = runtime.measure_latency(random_heads_model, Never(), _data(6), batch_size=1, max_examples=6)
    assert figures["realised_fraction"] == pytest.approx(full_ms / 10.0)
    assert figures["realised_above_limit"] is flagged
    assert figures["speedup_ci"] == pytest.approx([full_ms / 10.0] * 2)


def test_latency_figures_hold_every_statistic(random_heads_model):
    data = _data(40)
    for batch_size, units in ((1, 40), (16, 3)):
        figures = runtime.measure_latency(random_heads_model, Patience(1), data, batch_size=batch_size,
                                          max_examples=40, rounds=3)
        assert figures["rounds"] == 3 and figures["examples"] == 40
        for side in ("full_ms", "ee_ms"):
            assert set(figures[side]) == STATS and figures[side]["count"] == len(figures[side]["raw"]) == units
            assert figures[side]["p50"] <= figures[side]["p90"] <= figures[side]["p95"] <= figures[side]["p99"]
        low, high = figures["speedup_ci"]
        assert low <= high and figures["speedup_wall"] > 0
        assert isinstance(figures["realised_above_limit"], bool)
        assert figures["peak_memory_mb"] >= 0 and figures["peak_memory_source"]
        assert figures["exit_mismatch"] is None  # no simulation given
    assert figures["bucketed"] and "ee_ms_median" not in figures  # b1's old keys at batch 1 only


@pytest.mark.parametrize("batch_size", [1, 16])
def test_exit_mismatch_is_0_and_counts_a_deliberate_mismatch(random_heads_model, batch_size):
    model, data, rule = random_heads_model, _data(24), EntropyBelow(0.6)
    simulated = (simulate(compute_trace(model, data, split="t", batch_size=8).signals, rule) + 1).tolist()
    assert len(set(simulated)) > 1
    wrong = list(simulated)
    for i in (2, 5, 11):
        wrong[i] = wrong[i] % model.num_layers + 1  # another layer
    figures = runtime.measure_latencies([(model, rule), (model, rule)], data, batch_size=batch_size,
                                        max_examples=24, rounds=1, simulated_exits=[simulated, wrong])
    assert [f["exit_mismatch"] for f in figures] == [0, 3]


def test_several_settings_share_one_full_model_timing_per_unit_and_round(random_heads_model, monkeypatch):
    model, data = random_heads_model, _data(10)
    calls = {"full": 0, "early": 0}
    forward, early_exit = model.full_forward, runtime.early_exit
    monkeypatch.setattr(model, "full_forward", lambda b: calls.__setitem__("full", calls["full"] + 1) or forward(b))
    monkeypatch.setattr(runtime, "early_exit",
                        lambda *a: calls.__setitem__("early", calls["early"] + 1) or early_exit(*a))
    settings = [(model, rule) for rule in (Patience(1), Patience(2), EntropyBelow(0.3))]
    figures = runtime.measure_latencies(settings, data, batch_size=1, max_examples=10, rounds=3, warmup=1)
    assert calls == {"full": 1 + 3 * 10, "early": 3 * (1 + 3 * 10)}
    assert len({id(f["full_ms"]) for f in figures}) == 1 and len(figures) == 3
    assert [f["mean_exit_layer"] for f in figures] == [
        float(runtime.predict(model, rule, data, 1)[1].float().mean()) + 1 for _, rule in settings]


def test_timed_sides_alternate_which_goes_first(random_heads_model, monkeypatch):
    model, data = random_heads_model, _data(4)
    order = []
    forward, early_exit = model.full_forward, runtime.early_exit
    monkeypatch.setattr(model, "full_forward", lambda b: order.append("full") or forward(b))
    monkeypatch.setattr(runtime, "early_exit", lambda *a: order.append("early") or early_exit(*a))
    runtime.measure_latency(model, Patience(1), data, batch_size=1, max_examples=4, rounds=2, warmup=0)
    firsts = order[::2]
    assert firsts == ["full", "early", "full", "early", "early", "full", "early", "full"]


def test_batch_1_raw_times_are_the_examples_in_file_order(random_heads_model, monkeypatch):
    """A clock that reads the width of the batch just run: at batch 1 `raw` lists the rows' lengths in file order."""
    model, data = random_heads_model, _data(12)
    seen = []
    forward, early_exit = model.full_forward, runtime.early_exit
    monkeypatch.setattr(model, "full_forward", lambda b: seen.append(b["input_ids"].shape[1]) or forward(b))
    monkeypatch.setattr(runtime, "early_exit",
                        lambda m, r, b: seen.append(b["input_ids"].shape[1]) or early_exit(m, r, b))

    class WidthClock:
        def time(self, fn) -> float:
            fn()
            return float(seen[-1])

    monkeypatch.setattr(runtime, "Clock", lambda device: WidthClock())
    figures = runtime.measure_latency(model, Patience(1), data, batch_size=1, max_examples=12, rounds=3)
    assert figures["full_ms"]["raw"] == figures["ee_ms"]["raw"] == [float(len(ids)) for ids in data.input_ids]
