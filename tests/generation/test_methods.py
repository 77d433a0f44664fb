"""CALM's measures and classifier, ConsistentEE's training stages, on a tiny Llama."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.calm import (CalmRule, consistency_labels, decayed_threshold, softmax_confidence, state_confidence,
                            train_meta_classifier)
from cee_bench.generation.consistentee import (PolicyRule, normed_exit_states, policy_exit_layers,
                                               train_exits_at_policy, train_token_policy)
from cee_bench.generation.decoding import Decoding, generate
from cee_bench.generation.model import ExitAdapters, MultiExitLM, every_layer
from cee_bench.generation.training import TrainingStates, per_exit_outputs, train_exits_weighted


@pytest.fixture
def states(tiny_lm) -> TrainingStates:
    mlm = MultiExitLM(tiny_lm, every_layer(4))
    torch.manual_seed(1)
    ids = torch.randint(3, 128, (1, 49))
    return TrainingStates(mlm.all_hidden_states(ids)[:, :-1], ids[0, 1:])


def test_decayed_threshold_forms():
    assert decayed_threshold(0.8, 0, 10) == pytest.approx(0.8)
    assert decayed_threshold(0.8, 10, 10) == pytest.approx(0.8 * (0.9 + 0.1 * math.exp(-4)))
    assert decayed_threshold(0.8, 10, 10, form="paper") == pytest.approx(0.72 + 0.1 * math.exp(-4))
    assert decayed_threshold(0.8, 10, 10, form="none") == 0.8


def test_confidence_measures():
    assert softmax_confidence(torch.tensor([0.0, 0.0, -50.0])) == pytest.approx(0.0, abs=1e-6)
    assert softmax_confidence(torch.tensor([50.0, 0.0])) == pytest.approx(1.0)
    h = torch.randn(1, 1, 8)
    assert state_confidence(h, h) == pytest.approx(1.0)
    assert state_confidence(h, None) == -1.0  # the first exit is never taken


def test_meta_classifier_learns_consistency_labels(tiny_lm, states):
    mlm = MultiExitLM(tiny_lm, every_layer(4))
    _, argmax = per_exit_outputs(mlm, states)
    labels = consistency_labels(argmax)
    assert labels.shape == (3, states.size) and set(labels.unique().tolist()) <= {0, 1}
    meta = train_meta_classifier(states.states[[1, 2, 3]], labels, steps=30, seed=0)
    rule = CalmRule("meta", 0.5, max_steps=8, meta=meta)
    out = generate(mlm, torch.tensor([[1, 4, 9]]), rule=rule, max_new_tokens=8, decoding=Decoding(greedy=True))
    assert len(out.tokens) == 8 and all(1 <= layer <= 4 for layer in out.exit_layers)


def test_consistentee_stages_run_and_policy_rule_decides(tiny_lm, states):
    mlm = MultiExitLM(tiny_lm, every_layer(4), ExitAdapters(4, 64, rank=4))
    losses = train_exits_weighted(mlm, states, steps=15, lr=1e-2, batch=32, seed=0)
    assert losses[-1] < losses[0]
    ce, _ = per_exit_outputs(mlm, states)
    normed = normed_exit_states(mlm, states)
    eager = train_token_policy(mlm, states, ce, normed, alpha=10.0, steps=60, lr=0.05, batch=48, seed=0)
    patient = train_token_policy(mlm, states, ce, normed, alpha=0.0, steps=60, lr=0.05, batch=48, seed=0)
    eager_layers = policy_exit_layers(mlm, eager, normed).float().mean()
    patient_layers = policy_exit_layers(mlm, patient, normed).float().mean()
    assert eager_layers < patient_layers  # a large depth penalty teaches earlier exits
    before = [p.detach().clone() for p in mlm.adapters.parameters()]
    train_exits_at_policy(mlm, states, policy_exit_layers(mlm, eager, normed), steps=3, lr=1e-2, batch=16, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, mlm.adapters.parameters()))
    out = generate(mlm, torch.tensor([[1, 4, 9]]), rule=PolicyRule(eager), max_new_tokens=6,
                   decoding=Decoding(greedy=True))
    assert len(out.exit_layers) == 6


def test_untrained_adapters_leave_exits_unchanged(tiny_lm, states):
    shared = MultiExitLM(tiny_lm, every_layer(4))
    adapted = MultiExitLM(tiny_lm, every_layer(4), ExitAdapters(4, 64, rank=4))
    torch.testing.assert_close(shared.exit_logits(states.states[2], 2), adapted.exit_logits(states.states[2], 2))
