"""`--dtype`: bf16 reaches every training stage of every method and every inference pass, records and training keys
say which dtype they ran at, and records of two dtypes never share a report cell."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cee_bench.classification.data import Encoded
from cee_bench.classification.fit import FitContext
from cee_bench.classification.method import build_model
from cee_bench.classification.trace import compute_trace
from cee_bench.precision import check_dtype, cpu_bf16_native
from cee_bench.progress import Progress
from cee_bench.registry import get_method, method_names
from cee_bench.report.grouping import group_records
from cee_bench.training import Stage

bf16_only = pytest.mark.skipif(not cpu_bf16_native(), reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)")


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config).eval()


def rows(n: int, seed: int) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    ids = [[1, *torch.randint(5, 100, (int(torch.randint(4, 10, (1,), generator=g)),), generator=g).tolist(), 2]
           for _ in range(n)]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.tensor([row[1] % 2 for row in ids]))


@bf16_only
@pytest.mark.parametrize("name", method_names())
def test_every_stage_computes_under_bf16_autocast(name: str, encoder: nn.Module) -> None:
    """Each stage a method trains itself (shared stages are another method's own, covered by that method's case):
    every linear layer run while the stage computes its loss gives bf16, the gradients it leaves are fp32 (weights
    stay fp32), and the frozen-backbone passes between stages run at bf16 too."""
    method = get_method(name)
    model = build_model(method, encoder, SimpleNamespace(num_labels=2), "mean", 0, "bf16")
    stages = {stage: settings for stage, settings in method.stages["smoke"].items() if stage not in method.shares}
    stages = {stage: (settings if stage == "policy" else Stage(epochs=1, batch_size=8, lr=1e-3))
              for stage, settings in stages.items()}
    if not stages:
        pytest.skip(f"{name} trains no stage of its own (its one stage is {', '.join(method.shares.values())}'s)")
    ctx = FitContext(model, rows(16, 1), rows(24, 2), stages, seed=0, device="cpu", progress=Progress.quiet(),
                     eval_batch_size=8)
    current: list[str] = []
    outputs: dict[str, set[torch.dtype]] = {}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        outputs.setdefault(current[-1] if current else "between stages", set()).add(output.dtype)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Linear)]
    train_stage = ctx.train_stage
    grads: dict[str, set[torch.dtype]] = {}

    def recording(stage: str, params, loss_fn, **kwargs):
        params = list(params)
        current.append(stage)
        try:
            losses = train_stage(stage, params, loss_fn, **kwargs)
        finally:
            current.pop()
        grads[stage] = {p.grad.dtype for p in params if p.grad is not None}
        return losses

    ctx.train_stage = recording
    try:
        method.fit(ctx)
    finally:
        for hook in hooks:
            hook.remove()
    assert set(grads) == set(stages)
    for stage in stages:
        assert outputs[stage] == {torch.bfloat16}, (stage, outputs[stage])
        assert grads[stage] == {torch.float32}
    assert outputs.get("between stages", {torch.bfloat16}) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())


@bf16_only
def test_inference_runs_at_the_model_precision_with_fp32_signals(encoder: nn.Module) -> None:
    model = build_model(get_method("consistentee"), encoder, SimpleNamespace(num_labels=2), "mean", 0, "bf16")
    seen: set[torch.dtype] = set()
    hook = model.backbone.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda m, a, out: seen.add(out.dtype))
    signals = compute_trace(model.eval(), rows(10, 3), split="dev", batch_size=4).signals
    hook.remove()
    assert seen == {torch.bfloat16}
    assert {value.dtype for value in signals.values()} == {torch.float32}
    model.precision = "fp32"
    seen.clear()
    model.backbone.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, a, out: seen.add(out.dtype))
    compute_trace(model, rows(10, 3), split="dev", batch_size=4)
    assert seen == {torch.float32}


def record(dtype: str | None, seed: int = 42) -> dict:
    config = {"preset": "smoke", "pooling": "mean", "device": "cpu", "model": "m", "max_seq_length": 64,
              "max_train_samples": 10, "max_eval_samples": 10, "stages": {}}
    if dtype is not None:
        config["dtype"] = dtype
    return {"kind": "classification", "task": "sst2", "method": "full", "seed": seed, "backbone": "m",
            "config": config, "method_meta": {}}


def test_records_of_two_dtypes_never_share_a_table() -> None:
    groups, warnings = group_records([record("fp32"), record("bf16"), record("bf16", seed=43)])
    assert sorted(len(g.records) for g in groups) == [1, 2] and "dtype" in warnings[0]
    # a record from before --dtype existed ran in fp32, and groups with fp32 records
    groups, warnings = group_records([record(None), record("fp32", seed=43)])
    assert len(groups) == 1 and not warnings


def test_fp16_needs_cuda_and_unknown_dtypes_are_refused() -> None:
    from cee_bench.errors import UserError

    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        check_dtype("fp16", "cpu")
    with pytest.raises(UserError, match="unknown dtype"):
        check_dtype("int8", "cpu")
    check_dtype("fp32", "cpu")
