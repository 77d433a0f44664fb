"""Length bucketing: inference batches group rows of similar length, results come back in row order, and the
decisions (predictions and exit layers) are those of batch 1 and of file-order batches."""

from __future__ import annotations

import pytest
import torch

from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import EntropyBelow, Patience
from cee_bench.classification.runtime import early_exit, measure_latency, predict
from cee_bench.classification.trace import compute_trace


def _mixed_lengths(n: int = 48) -> Encoded:
    """Rows from 3 to 120 word pieces in a shuffled order, so file-order batches pad a lot."""
    gen = torch.Generator().manual_seed(3)
    lengths = [3 + (97 * i) % 118 for i in range(n)]
    ids = [[101] + torch.randint(1000, 5000, (k - 2,), generator=gen).tolist() + [102] for k in lengths]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 2, (n,), generator=gen))


def test_batches_hold_rows_of_similar_length_and_results_come_back_in_row_order():
    data = _mixed_lengths()
    rows = data.batch_rows(8)
    assert sorted(r for batch in rows for r in batch) == list(range(len(data)))
    lengths = [[len(data.input_ids[r]) for r in batch] for batch in rows]
    assert all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:]))  # batches do not overlap in length
    assert data.padding_ratio(rows) < 1.25 < data.padding_ratio(data.batch_rows(8, by_length=False))
    out = data.map_in_order(lambda b: {"index": b["index"], "width": b["attention_mask"].sum(1)}, 8)
    assert out["index"].tolist() == list(range(len(data)))
    assert out["width"].tolist() == [len(ids) for ids in data.input_ids]


@pytest.mark.parametrize("rule", [Patience(1), EntropyBelow(0.6)])
def test_bucketed_decisions_equal_batch_1_and_file_order(random_heads_model, rule):
    model, data = random_heads_model, _mixed_lengths()
    single = [early_exit(model, rule, data.collate([i])) for i in range(len(data))]
    one_preds = torch.cat([p for p, _ in single]).tolist()
    one_exits = torch.cat([e for _, e in single]).tolist()
    assert len(set(one_exits)) > 1  # rows leave the batch at different layers
    for batch_size in (8, 32):
        file_order = [early_exit(model, rule, data.collate(r)) for r in data.batch_rows(batch_size, by_length=False)]
        assert torch.cat([p for p, _ in file_order]).tolist() == one_preds
        assert torch.cat([e for _, e in file_order]).tolist() == one_exits
        preds, exits = predict(model, rule, data, batch_size)
        assert preds.tolist() == one_preds, batch_size
        assert exits.tolist() == one_exits, batch_size
    bucketed = compute_trace(model, data, split="test", batch_size=16).signals["logits"]
    per_row = compute_trace(model, data, split="test", batch_size=1).signals["logits"]
    assert torch.allclose(bucketed, per_row, atol=1e-5)


def test_batched_latency_is_bucketed_over_the_same_rows(random_heads_model):
    model, data = random_heads_model, _mixed_lengths()
    figures = {bucket: measure_latency(model, Patience(1), data, batch_size=16, max_examples=40, warmup=0,
                                       bucket=bucket) for bucket in (True, False)}
    assert figures[True]["bucketed"] and not figures[False]["bucketed"]
    assert figures[True]["examples"] == figures[False]["examples"] == 40  # the first 40 rows either way
    assert figures[True]["mean_exit_layer"] == figures[False]["mean_exit_layer"]
    assert figures[True]["padding_ratio"] < figures[False]["padding_ratio"]
    assert not measure_latency(model, Patience(1), data, batch_size=1, max_examples=4, warmup=0)["bucketed"]
