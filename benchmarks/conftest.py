"""Options of the latency suite (`cee-bench bench` passes them; `pytest benchmarks/test_latency.py` works too)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-device", default="cpu", choices=("cpu", "cuda"),
                     help="Device the latency suite runs on.")
