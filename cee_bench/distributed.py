"""Process topology of a run started by `accelerate launch` or `torchrun`: who is main, how many processes, waiting.

Accelerate owns the process group (its `PartialState`); this module only asks it questions, so the rest of the
harness reads `is_main()` or `barrier()` and never touches `torch.distributed`. A plain `cee-bench run` is a world
of one, where every helper here is free (no collective, no process group).

Work that must give the same numbers whatever the number of processes (evaluation, tracing, the operating-point
choice, latency, writing records and models) runs on the main process while the others wait in `barrier()`; only
training is spread.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any, TypeVar

from cee_bench.errors import UserError

T = TypeVar("T")

# How long a process waits for the others (e.g. while the main process evaluates and times a `paper` run on a large
# dev set). torch's default of 30 minutes would kill a long evaluation; a longer hang is the price.
WAIT_TIMEOUT = timedelta(hours=6)

_topology: dict[str, Any] | None = None


def start(device: str) -> None:
    """Join the process group the launcher set up (a no-op for one process) and learn every rank's device.

    Called once per run, by every process, before any training; `device` is the run's resolved device, so
    `--device cpu` on a GPU machine uses gloo, not NCCL.
    """
    global _topology
    if world_size() == 1:
        _topology = {"world_size": 1, "backend": None, "devices": [_describe_device(device)]}
        return
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=device == "cpu", timeout=WAIT_TIMEOUT)
    mine = {"rank": state.process_index, "host": socket.gethostname(), **_describe_device(str(state.device))}
    _topology = {"world_size": state.num_processes, "backend": state.backend, "devices": gather_object([mine])}


def topology() -> dict[str, Any]:
    """What the record says about the processes that trained it (`environment.distributed`)."""
    if _topology is None:  # a path that never called start(), e.g. generation: one process, device not known here
        return {"world_size": world_size(), "backend": None, "devices": None}
    return _topology


def world_size() -> int:
    """Number of processes: from the process group once it exists, else from the launcher's environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the one process that evaluates, times and writes (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Every process waits here until all have arrived (free for one process)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def from_main(value: T) -> T:
    """The main process's `value` on every process, so a decision (skip a finished record, stop training) cannot
    differ between processes and leave one waiting for a collective the others never enter."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def per_process_batch(global_batch: int, what: str) -> int:
    """A stage's batch size is the global batch; each process takes an equal slice of it, or the run is refused
    (an uneven split would weight the processes' gradients unequally)."""
    n = world_size()
    if global_batch % n:
        raise UserError(f"{what}: batch size {global_batch} does not divide over {n} processes; give a "
                        f"--batch-size that is a multiple of {n}")
    return global_batch // n


def require_one_process(what: str) -> None:
    """Refuse paths that do not spread over processes yet, rather than run them N times over."""
    if world_size() > 1:
        raise UserError(f"{what} runs in one process only; launch it without accelerate/torchrun")


def _describe_device(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"device": device}
    if device.startswith("cuda"):
        import torch

        info["name"] = torch.cuda.get_device_name(torch.device(device))
    return info
