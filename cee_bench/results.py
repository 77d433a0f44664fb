"""The results store: one JSON per (task, method, seed), written atomically, read back as a tidy table.

Why atomic: an interrupted run must leave either the old file or the new one, never half of one, because `run`
resumes by trusting the files it finds.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from cee_bench.errors import UserError

SCHEMA_VERSION = 1
_PACKAGES = ("cee-bench", "torch", "transformers", "accelerate", "numpy", "rouge-score", "bert-score", "peft")


def result_path(output_dir: Path, task: str, method: str, seed: int) -> Path:
    """Where the record of one (task, method, seed) lives."""
    return Path(output_dir) / task / f"{method}__seed{seed}.json"


def save_result(output_dir: Path, record: dict[str, Any]) -> Path:
    """Write `record` atomically and return its path."""
    path = result_path(output_dir, record["task"], record["method"], int(record["seed"]))
    write_json(path, {"schema": SCHEMA_VERSION, **record})
    return path


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write `record` as JSON atomically (temp file in the same folder, then rename): an interrupted write leaves the
    old file, never half of a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, default=_jsonable)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make shared (or committed) files unreadable to others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every record under `results_dir`, sorted by task then method; a corrupt file is a user error, not a crash."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results folder not found: {results_dir}")
    records = []
    for path in sorted(results_dir.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read results file {path}: {exc}") from None
        if not isinstance(record, dict) or "task" not in record or "method" not in record:
            raise UserError(f"not a cee-bench results file: {path}")
        record["_path"] = str(path)
        records.append(record)
    return sorted(records, key=lambda r: (r["task"], r["method"], r.get("seed", 0)))


def environment() -> dict[str, Any]:
    """Package versions, git commit and hardware, so every number can be traced to what produced it."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hardware: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor(),
                                "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        hardware["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hardware["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return {"packages": versions, "git_commit": _git_commit(), "hardware": hardware}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _jsonable(value: Any) -> Any:
    """numpy / torch scalars and arrays become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
