"""Exit rules on hand-made traces, and real early exit equal to the simulation from the trace."""

from __future__ import annotations

import math

import pytest
import torch

from cee_bench.classification.data import Encoded
from cee_bench.classification.exits import EntropyBelow, Never, Patience, simulate
from cee_bench.classification.runtime import early_exit, predict
from cee_bench.classification.trace import compute_trace
from cee_bench.errors import UserError


def _logits(preds: list[list[int]], confident: float = 4.0) -> torch.Tensor:
    """[N, L, 2] logits whose argmax at (n, l) is preds[n][l]."""
    table = torch.tensor(preds)
    return torch.nn.functional.one_hot(table, 2).float() * confident


def test_patience_counts_agreeing_layers():
    logits = _logits([[0, 0, 0, 1, 1],   # two agreements after layer 1 → exits at layer index 2 with t=2
                      [0, 1, 0, 1, 0],   # never agrees → runs to the top
                      [1, 1, 0, 0, 0]])  # agreement broken then rebuilt → index 4
    assert simulate({"logits": logits}, Patience(2)).tolist() == [2, 4, 4]
    assert simulate({"logits": logits}, Patience(1)).tolist() == [1, 4, 1]
    assert simulate({"logits": logits}, Patience(0)).tolist() == [4, 4, 4]  # t = 0 is the full model


def test_entropy_threshold_ends_of_grid():
    logits = torch.zeros(2, 3, 2)
    logits[0, 1] = torch.tensor([5.0, -5.0])
    assert simulate({"logits": logits}, EntropyBelow(0.0)).tolist() == [2, 2]  # nothing is below 0
    assert simulate({"logits": logits}, EntropyBelow(0.01)).tolist() == [1, 2]
    assert simulate({"logits": logits}, EntropyBelow(math.log(2) + 1e-6)).tolist() == [0, 0]  # everything exits
    with pytest.raises(UserError):
        EntropyBelow(-0.1)
    with pytest.raises(UserError):
        Patience(-1)


def _data(n: int = 40) -> Encoded:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 20, (n,), generator=gen).tolist()
    ids = [[101] + torch.randint(1000, 5000, (k,), generator=gen).tolist() + [102] for k in lengths]
    return Encoded(input_ids=ids, token_type_ids=None, labels=torch.randint(0, 2, (n,), generator=gen))


@pytest.mark.parametrize("rule", [Patience(1), Patience(2), EntropyBelow(0.3), EntropyBelow(0.6), Never()])
def test_real_early_exit_equals_simulation(random_heads_model, rule):
    model = random_heads_model
    data = _data()
    trace = compute_trace(model, data, split="test", batch_size=1)
    sim_exits = simulate(trace.signals, rule)
    sim_preds = trace.signals["logits"][torch.arange(len(data)), sim_exits].argmax(-1)
    for batch_size in (1, 7, 40):
        preds, exits = predict(model, rule, data, batch_size)
        assert exits.tolist() == sim_exits.tolist(), batch_size
        assert preds.tolist() == sim_preds.tolist(), batch_size


def test_mixed_exits_leave_the_batch(random_heads_model):
    """A batch whose rows exit at different layers: the early ones stop computing, the rest carry on."""
    model = random_heads_model
    data = _data(16)
    _, exits = early_exit(model, EntropyBelow(0.6), data.collate(list(range(16))))
    assert len(set(exits.tolist())) > 1
