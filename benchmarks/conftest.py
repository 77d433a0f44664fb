"""Options of the latency suite (`cee-bench bench` passes them; `pytest benchmarks/test_latency.py` works too)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-device", default="cpu", choices=("cpu", "cuda"),
                     help="Device the latency suite runs on.")
    parser.addoption("--bench-rounds-scale", default=1, type=int,
                     help="Multiply every benchmark's rounds (odd, to keep the median one round's ratio).")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """pytest-benchmark's machine record, plus what the timings also depend on: torch and transformers (the gate
    names a change of either), and the GPU when timed on one (`cee-bench bench` keys each saved run by this record)."""
    import torch
    import transformers

    machine_info["torch"] = torch.__version__
    machine_info["transformers"] = transformers.__version__
    if config.getoption("--bench-device") == "cuda":
        machine_info["gpu"] = torch.cuda.get_device_name(0)
