"""DeeBERT, BERxiT, Right-Tool and PCEE-BERT on a tiny BERT built from config (3 layers, hidden 32): which parameters
each training stage updates, the exit rules on hand-made traces, batched = batch-1 decisions, and bad thresholds."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
import torch

from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import (ConsecutiveConfident, EntropyBelow, MaxProbAtLeast, ScoreBelow, entropy,
                                            simulate)
from cee_bench.classification.fit import FitContext
from cee_bench.classification.method import build_model
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.classification.runtime import predict
from cee_bench.classification.trace import compute_trace
from cee_bench.errors import UserError
from cee_bench.precision import cpu_bf16_native
from cee_bench.progress import Progress
from cee_bench.registry import METHOD_MODULES, get_method
from cee_bench.training import Stage

LAYERS = 3
METHODS = ("deebert", "berxit", "right-tool", "pcee-bert")


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config).eval()


def make_data(n: int, seed: int) -> Encoded:
    """Rows of different lengths (so batches pad) with a label that depends on the first token."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(torch.randint(4, 12, (1,), generator=g))
        row = torch.randint(5, 100, (length,), generator=g).tolist()
        ids.append([1, *row, 2])
        labels.append(int(row[0] % 2))
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.tensor(labels))


def make_model(name: str, encoder: torch.nn.Module, seed: int = 0) -> MultiExitModel:
    return build_model(get_method(name), encoder, SimpleNamespace(num_labels=2), "cls", seed)


def fit_recording(name: str, encoder: torch.nn.Module) -> tuple[MultiExitModel, dict[str, set[str]], FitContext]:
    """Fit `name` for a few steps and record, per stage, the parameters whose last step had a non-zero gradient."""
    method = get_method(name)
    model = make_model(name, encoder)
    stages = {stage: Stage(epochs=1, batch_size=8, lr=1e-3) for stage in method.stages["smoke"]}
    ctx = FitContext(model, make_data(16, 1), make_data(40, 2), stages, seed=0, device="cpu",
                     progress=Progress.quiet(), eval_batch_size=8)
    grads: dict[str, set[str]] = {}
    train_stage = ctx.train_stage

    def recording(stage: str, params, loss_fn, **kwargs):
        model.zero_grad(set_to_none=True)
        losses = train_stage(stage, params, loss_fn, **kwargs)
        grads[stage] = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        return losses

    ctx.train_stage = recording
    method.fit(ctx)
    return model, grads, ctx


def names(model: MultiExitModel, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


# ---------------------------------------------------------------------------------------------------- registry, heads

def test_registered() -> None:
    for name in METHODS:
        assert name in METHOD_MODULES and get_method(name).name == name
        assert set(get_method(name).stages) == {"smoke", "cpu", "paper"}


@pytest.mark.parametrize("name", ["deebert", "berxit"])
def test_per_layer_poolers_start_from_pretrained(name: str, encoder: torch.nn.Module) -> None:
    model = make_model(name, encoder)
    assert len(model.heads.poolers) == LAYERS
    for pooler in model.heads.poolers:
        assert pooler is not model.backbone.pooler.dense
        assert torch.equal(pooler.weight, model.backbone.pooler.dense.weight)


@pytest.mark.parametrize("name", ["right-tool", "pcee-bert"])
def test_shared_pooler(name: str, encoder: torch.nn.Module) -> None:
    model = make_model(name, encoder)
    assert len(model.heads.poolers) == 1 and model.heads.poolers[0] is model.backbone.pooler.dense


# ------------------------------------------------------------------------------- which parameters each stage trains

def test_deebert_two_stages(encoder: torch.nn.Module) -> None:
    """Stage 1 is the full model's training (backbone, its pooler, the top classifier), carried into DeeBERT's top
    head by `adopt`; stage 2, DeeBERT's own `fit`, trains the highways and nothing else."""
    deebert = get_method("deebert")
    assert deebert.shares == {"finetune": "full"}
    full, grads, _ = fit_recording("full", encoder)
    top = LAYERS - 1
    assert grads["train"] == names(full, "backbone.") | names(full, f"heads.classifiers.{top}.")
    model = make_model("deebert", encoder)
    deebert.adopt(model, full)
    assert torch.equal(model.heads.poolers[top].weight, full.backbone.pooler.dense.weight)
    assert torch.equal(model.heads.classifiers[top].weight, full.heads.classifiers[top].weight)
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.encoder.parameters(), full.backbone.encoder.parameters()))
    assert torch.equal(model.heads.poolers[0].weight, encoder.pooler.dense.weight)  # highways: the pretrained pooler
    model, grads, _ = fit_recording("deebert", encoder)
    highways = names(model, *(f"heads.{part}.{i}." for part in ("poolers", "classifiers") for i in range(top)))
    assert set(grads) == {"highway"} and grads["highway"] == highways


def test_deebert_second_stage_leaves_backbone_and_final_classifier(encoder: torch.nn.Module) -> None:
    method = get_method("deebert")
    model = make_model("deebert", encoder)
    ctx = FitContext(model, make_data(16, 1), make_data(8, 2),
                     {s: Stage(epochs=1, batch_size=8, lr=1e-3) for s in method.stages["smoke"]},
                     seed=0, device="cpu", progress=Progress.quiet(), eval_batch_size=8)
    snapshot = {}
    train_stage = ctx.train_stage

    def stage(name, params, loss_fn, **kwargs):
        if name == "highway":
            snapshot.update({n: p.detach().clone() for n, p in model.named_parameters()})
        return train_stage(name, params, loss_fn, **kwargs)

    ctx.train_stage = stage
    method.fit(ctx)
    frozen = names(model, "backbone.", f"heads.poolers.{LAYERS - 1}.", f"heads.classifiers.{LAYERS - 1}.")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed and not (changed & frozen)


def test_berxit_alternating_steps(encoder: torch.nn.Module) -> None:
    from baselines.berxit import alternate_lte_loss

    model = make_model("berxit", encoder)
    model.train()
    batch = make_data(8, 3).collate(list(range(8)))
    top = LAYERS - 1
    for parity in (0, 1):
        model.zero_grad(set_to_none=True)
        alternate_lte_loss(model(batch), batch["labels"], parity).backward()
        got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        # the LTE term reaches every pooler and the backbone through g_i, never the classifiers (targets detached)
        backbone = names(model, "backbone.") - names(model, "backbone.pooler.")
        always = names(model, "extras.lte.", "heads.poolers.") | backbone
        trained_classifiers = ({f"heads.classifiers.{top}."} if parity == 0
                               else {f"heads.classifiers.{i}." for i in range(top)})
        assert got == always | names(model, *trained_classifiers)


def test_berxit_fit_trains_everything_and_emits_lte(encoder: torch.nn.Module) -> None:
    model, grads, _ = fit_recording("berxit", encoder)
    assert names(model, "extras.lte.") <= grads["train"]
    out = model(make_data(5, 4).collate(list(range(5))))
    assert out["lte"].shape == (5, LAYERS)
    assert ((out["lte"] > 0) & (out["lte"] < 1)).all()


@pytest.mark.parametrize("name", ["right-tool", "pcee-bert"])
def test_joint_training_trains_every_used_parameter(name: str, encoder: torch.nn.Module) -> None:
    model, grads, _ = fit_recording(name, encoder)
    assert grads["train"] == {n for n, _ in model.named_parameters()}


def test_right_tool_calibration_stored_and_used(encoder: torch.nn.Module) -> None:
    model, _, ctx = fit_recording("right-tool", encoder)
    report = ctx.log["calibration"]
    print("\nright-tool tiny model, held-out NLL", report["nll_before"], "->", report["nll_after"],
          "ECE", report["ece_before"], "->", report["ece_after"])
    temps = model.extras["temperature"].as_tuple()
    assert list(temps) == report["temperature"] and len(temps) == LAYERS
    assert all(a <= b + 1e-9 for a, b in zip(report["nll_after"], report["nll_before"]))
    assert "extras.temperature.values" in model.state_dict()
    assert get_method("right-tool").rule(model, 0.9).temperatures == temps


# ------------------------------------------------------------------------------------------ exit rules on hand traces

def trace(*layers: list[list[float]], **extra: list[list[float]]) -> dict[str, torch.Tensor]:
    """signals from per-layer logits rows: trace([[a, b], ...] for layer 1, ...) → logits [N, L, C]."""
    signals = {"logits": torch.tensor(layers, dtype=torch.float).transpose(0, 1)}
    signals.update({k: torch.tensor(v, dtype=torch.float).transpose(0, 1) for k, v in extra.items()})
    return signals


CONFIDENT, UNSURE = [4.0, 0.0], [0.1, 0.0]


def test_entropy_rule_ties_never_and_grid_ends() -> None:
    signals = trace([CONFIDENT, UNSURE, UNSURE], [CONFIDENT, UNSURE, CONFIDENT], [CONFIDENT, UNSURE, CONFIDENT])
    s = float(entropy(torch.tensor(CONFIDENT)))
    assert simulate(signals, EntropyBelow(s)).tolist() == [2, 2, 2]  # a tie is not below: no exit
    assert simulate(signals, EntropyBelow(s + 1e-4)).tolist() == [0, 2, 1]  # row 2 never confident → top layer
    assert simulate(signals, get_method("deebert").rule(None, 0.0)).tolist() == [2, 2, 2]  # grid start: full model
    assert simulate(signals, get_method("deebert").rule(None, 0.7)).tolist() == [0, 0, 0]  # 0.7 > ln 2


def test_lte_rule_ties_never_and_grid_ends() -> None:
    signals = trace([CONFIDENT] * 3, [CONFIDENT] * 3, [CONFIDENT] * 3,
                    lte=[[0.3, 0.9, 0.9], [0.5, 0.9, 0.2], [0.1, 0.9, 0.1]])
    berxit = get_method("berxit")
    assert simulate(signals, berxit.rule(None, 0.3)).tolist() == [2, 2, 1]  # u = τ is not below τ
    assert simulate(signals, berxit.rule(None, 0.31)).tolist() == [0, 2, 1]
    assert simulate(signals, berxit.rule(None, 0.0)).tolist() == [2, 2, 2]
    assert simulate(signals, berxit.rule(None, 1.0)).tolist() == [0, 0, 0]


def test_max_prob_rule_ties_never_temperatures_and_grid_ends() -> None:
    signals = trace([CONFIDENT, UNSURE], [UNSURE, UNSURE], [UNSURE, UNSURE])
    c = float(torch.softmax(torch.tensor(CONFIDENT), -1).max())
    assert simulate(signals, MaxProbAtLeast(c)).tolist() == [0, 2]  # a tie reaches c: exit (≥)
    assert simulate(signals, MaxProbAtLeast(c + 1e-6)).tolist() == [2, 2]
    assert simulate(signals, MaxProbAtLeast(0.9, (0.01, 1.0, 1.0))).tolist() == [0, 0]  # a small T sharpens
    assert simulate(signals, MaxProbAtLeast(0.9, (10.0, 1.0, 1.0))).tolist() == [2, 2]  # a large T flattens
    rule = get_method("right-tool").rule
    assert simulate(signals, rule(None, 1.0)).tolist() == [2, 2]
    assert simulate(signals, rule(None, 0.5)).tolist() == [0, 0]  # two labels: max prob ≥ 0.5 always


def test_consecutive_confident_rule() -> None:
    signals = trace([CONFIDENT, CONFIDENT, UNSURE, CONFIDENT], [CONFIDENT, UNSURE, UNSURE, CONFIDENT],
                    [UNSURE, CONFIDENT, UNSURE, CONFIDENT], [CONFIDENT, CONFIDENT, UNSURE, CONFIDENT])
    tau = float(entropy(torch.tensor(CONFIDENT)) / math.log(2))
    pcee = get_method("pcee-bert")
    # row 0: confident at layers 1, 2 → exits at layer 2; row 1 (C, U, C, C): the run restarts and reaches 2 only at
    # the top; row 2 is never confident; row 3 always is
    assert simulate(signals, pcee.rule(None, tau + 1e-4)).tolist() == [1, 3, 3, 1]
    assert simulate(signals, pcee.rule(None, tau)).tolist() == [3, 3, 3, 3]  # a tie is not confident
    assert simulate(signals, pcee.rule(None, 0.0)).tolist() == [3, 3, 3, 3]
    assert simulate(signals, pcee.rule(None, 1.0)).tolist() == [1, 1, 1, 1]  # exits after t = 2 layers
    assert simulate(signals, ConsecutiveConfident(tau + 1e-4, 1)).tolist() == [0, 0, 3, 0]


# ------------------------------------------------------------------------------------ batched = batch-1 = simulated

@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", METHODS)
def test_batched_equals_batch_one_and_trace(name: str, precision: str, encoder: torch.nn.Module) -> None:
    """At every precision: under bf16 the trace, batch 1 and batch 7 run other matrix shapes, and must still decide
    alike (the exit heads' fp32 logits, and bf16 matmuls that do not depend on the batch's other rows)."""
    if precision == "bf16" and not cpu_bf16_native():
        pytest.skip("this CPU has no native bf16")
    method = get_method(name)
    model = make_model(name, encoder, seed=3).eval()
    model.precision = precision
    with torch.no_grad():  # spread the heads so decisions vary across the grid
        for classifier in model.heads.classifiers:
            classifier.weight.mul_(20)
        if name == "right-tool":
            model.extras["temperature"].values.copy_(torch.tensor([0.5, 2.0, 1.0]))
        if name == "berxit":
            model.extras["lte"].weight.mul_(20)
    data = make_data(14, 5)
    signals = compute_trace(model, data, split="dev", batch_size=7).signals
    exits_seen = set()
    for value in method.grid(LAYERS):
        rule = method.rule(model, value)
        p1, e1 = predict(model, rule, data, batch_size=1)
        p7, e7 = predict(model, rule, data, batch_size=7)
        assert torch.equal(e1, e7) and torch.equal(p1, p7)
        assert torch.equal(simulate(signals, rule), e1)
        exits_seen |= set(e1.tolist())
    assert len(exits_seen) > 1  # the grid does exercise early exits


# ------------------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name, value", [("deebert", -0.1), ("deebert", float("nan")), ("berxit", 1.5),
                                         ("berxit", -0.01), ("right-tool", 1.01), ("right-tool", -0.5),
                                         ("pcee-bert", 1.5), ("pcee-bert", -0.2)])
def test_out_of_domain_threshold_is_a_user_error(name: str, value: float) -> None:
    with pytest.raises(UserError):
        get_method(name).rule(None, value)


@pytest.mark.parametrize("make", [lambda: ConsecutiveConfident(0.3, 0), lambda: ConsecutiveConfident(0.3, 1.5),
                                  lambda: MaxProbAtLeast(0.9, (1.0, 0.0)), lambda: MaxProbAtLeast(0.9, (-1.0,)),
                                  lambda: MaxProbAtLeast(0.9, (float("nan"),)), lambda: ScoreBelow("lte", 2.0)])
def test_bad_rule_parameters(make) -> None:
    with pytest.raises(UserError):
        make()


@pytest.mark.parametrize("name, grid", [("deebert", "0.1,-0.2"), ("berxit", "0.5,1.2"), ("right-tool", "1.5"),
                                        ("pcee-bert", "0.2,3")])
def test_cli_bad_grid_one_line_exit_2_nothing_written(name: str, grid: str, tmp_path, monkeypatch, capsys) -> None:
    from cee_bench import cli

    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["cee-bench", "run", "--task", "rte", "--methods", name, "--grid", grid,
                                      "--output-dir", str(out), "--data-dir", str(tmp_path), "--quiet"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert not out.exists()
