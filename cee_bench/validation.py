"""One place for the domain of every value a user gives, and for the paths they name.

Typer already refuses a value of the wrong type (`--batch-size x`), but a float option accepts `nan` and `inf` and an
int option accepts `-3`; those reach the library here, before anything is loaded or written, so every command
(`run`, `report`, `analyze`, classification and generation alike) refuses them with the same one line. The checks
import nothing heavy, so a refused flag costs no torch import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cee_bench.errors import UserError


@dataclass(frozen=True)
class Domain:
    """A numeric interval, optionally of whole numbers (`low`/`high` None: unbounded), and how the error line says
    it (what follows "must be")."""

    says: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and not float(value).is_integer()):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


POSITIVE = Domain("positive and finite", low=0, low_open=True)
POSITIVE_INT = Domain("positive (a whole number)", low=0, low_open=True, integer=True)
UNIT_OPEN = Domain("in (0, 1)", low=0, high=1, low_open=True, high_open=True)
SEED_MAX = 2**32 - 1  # what numpy's and torch's generators both accept

# Every numeric option of every command, by its Python name (the flag is the name with dashes).
DOMAINS: dict[str, Domain] = {
    "epochs": POSITIVE,
    "batch_size": POSITIVE_INT,
    "lr": POSITIVE,
    "max_seq_length": POSITIVE_INT,
    "max_train_samples": POSITIVE_INT,
    "max_eval_samples": POSITIVE_INT,
    "latency_examples": POSITIVE_INT,
    "delta": UNIT_OPEN,
    "epsilon": UNIT_OPEN,
    "jobs": POSITIVE_INT,
    "seed": Domain(f"a whole number in [0, {SEED_MAX}]", low=0, high=SEED_MAX, integer=True),
}


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_numbers(values: Mapping[str, Any]) -> None:
    """Refuse the first value outside its domain (None = not given, skipped); `values` maps option names to values."""
    for name, value in values.items():
        if value is None:
            continue
        domain = DOMAINS[name]
        if not domain.contains(value):
            raise UserError(f"{flag(name)} must be {domain.says}, got {value}")


def check_at_most(name: str, value: int, limit: int, why: str) -> None:
    """A value the model or data bounds from above, e.g. `--max-seq-length` against the position embeddings."""
    if value > limit:
        raise UserError(f"{flag(name)} {value} exceeds {why} ({limit})")


# Paths ------------------------------------------------------------------------------------------------------------


def check_folder(path: Path, what: str, *, must_exist: bool) -> Path:
    """A folder the user named: refused when it is a file (or missing, when it must exist)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} expected, but {path} is a file")
    if must_exist and not path.exists():
        raise UserError(f"{what} not found: {path}")
    return path


def check_output_folder(path: Path, *subfolders: str) -> Path:
    """Where records will be written: every level that exists must be a folder, checked before any work starts so a
    wrong `--output-dir` fails before training rather than at the first save."""
    check_folder(path, "output folder", must_exist=False)
    for level in range(1, len(subfolders) + 1):
        check_folder(Path(path, *subfolders[:level]), "output folder", must_exist=False)
    return Path(path)


def check_output_file(path: Path, option: str) -> Path:
    """A file the user asked to have written (`--output`, `--json`): refused when it is a folder or a level above it
    is a file, before any work starts, so nothing is computed for nowhere and nothing is half written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} expects a file, but {path} is a folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{option}: {parent} is a file, so {path} cannot be written")
    return path


def read_text(path: Path, *, encoding: str = "utf-8") -> str:
    """A data file's text; a missing, unreadable or undecodable file is one line naming the path (and the line)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"expected a file, found a folder: {path}")
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: bytes that are not {exc.encoding.upper()} (byte 0x{raw[exc.start]:02x}); "
                        "save the file as UTF-8") from None
