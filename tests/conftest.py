"""Shared fixtures: tiny models built from config (unit tests) and the paths of ../shared data (integration)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from data_paths import GLUE


@pytest.fixture(scope="session")
def tiny_encoder() -> torch.nn.Module:
    """A 4-layer BERT with random weights: fast, and enough to exercise every code path."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return BertModel(config).eval()


@pytest.fixture
def random_heads_model(tiny_encoder):
    """The tiny encoder with confident random heads (mean pooling), so rows exit at different layers."""
    from cee_bench.classification.multiexit import MultiExitModel

    torch.manual_seed(1)
    model = MultiExitModel(tiny_encoder, 2, pooling="mean", pooler="shared", dropout=0.1).eval()
    for classifier in model.heads.classifiers:
        torch.nn.init.normal_(classifier.weight, std=3.0)
    return model


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged encoder's tokenizer (offline)."""
    from transformers import AutoTokenizer

    from cee_bench.classification.multiexit import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(None)[0])


@pytest.fixture(scope="session")
def glue() -> Path:
    """The real GLUE files (`data_paths.GLUE`; the test is skipped where they are absent)."""
    if not GLUE.is_dir():
        pytest.skip(f"GLUE data not found at {GLUE} (cee-bench data glue --to {GLUE})")
    return GLUE


@pytest.fixture
def cli(monkeypatch, capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `cee-bench ARGS...` in-process: (exit code, stdout, stderr)."""
    from cee_bench import cli as cli_module

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["cee-bench", *args])
        try:
            cli_module.main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke
