"""Numeric precision of a run (`--dtype fp32|bf16|fp16`): what the device can run, and the one way both kinds apply it.

Why a recorded choice rather than a silent speed-up: lower precision changes the numbers (rounding moves logits, and
an exit decision near its threshold can flip), so it is part of every record's config, of the training key of every
stored model and of the report's grouping, and records of two dtypes never share a cell. Training goes through the
one loop's autocast on the forward and loss (fp16 adds loss scaling); inference (traces, cached frozen-backbone
states, real early exit and its timing) runs under `autocast` opened once per pass. Weights stay fp32 in both: only
the matrix work drops to 16 bits, which is where a CPU with AVX-512 BF16/AMX or a GPU's tensor cores gain.

Parts that need fp32 say so where they are: exit heads and policy networks return fp32 logits (every exit rule's
softmax, entropy and threshold test, every loss and the policy's log-probabilities run on them); traces keep fp32
signals, so Right-Tool's temperature fit (after training, outside any autocast) is fp32; and backward passes and
optimiser steps run outside autocast (`training.run_stage`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from cee_bench.errors import UserError

DTYPES = ("fp32", "bf16", "fp16")
DEFAULT_DTYPE = "fp32"


def torch_dtype(dtype: str):  # -> torch.dtype (torch is imported lazily: `cee-bench --help` stays instant)
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX): without them bf16 autocast runs, but
    emulated and slower than fp32, which is never what a user asking for bf16 wants."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def supported(device: str) -> list[str]:
    """The dtypes `device` ('cpu' or 'cuda') runs natively, fp32 first."""
    import torch

    if device == "cuda":
        return ["fp32", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]
    return ["fp32", *(["bf16"] if cpu_bf16_native() else [])]


def check_dtype(dtype: str, device: str) -> None:
    """A `--dtype` the resolved `device` cannot run is a user error, named before anything runs."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    if dtype not in supported(device):
        if device == "cpu" and dtype == "fp16":
            raise UserError("--dtype fp16 needs a CUDA device (CPUs have no fp16 matrix units); on the CPU use bf16 "
                            "or fp32")
        raise UserError(f"--dtype {dtype} is not supported natively on this {device.upper()}; it runs: "
                        f"{', '.join(supported(device))}")


@contextlib.contextmanager
def autocast(dtype: str, device_type: str) -> Iterator[None]:
    """Inference under `dtype`: autocast for bf16/fp16, nothing for fp32."""
    if dtype == "fp32":
        yield
        return
    import torch

    with torch.autocast(device_type, dtype=torch_dtype(dtype)):
        yield


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Suspend autocast for a computation that must run in fp32 whatever the run's dtype (e.g. fitting temperatures)."""
    import torch

    with torch.autocast(device_type, enabled=False):
        yield
