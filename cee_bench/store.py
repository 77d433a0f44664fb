"""The model store of both kinds: trained weights (safetensors) and the config that says what they are, one folder per
training key under `<output_dir>/models/<task>/<key>/`. Each kind decides what goes in (classification's models:
`cee_bench.classification.store` and `.sharing`; generation's exit adapters, meta-classifiers and policies:
`cee_bench.generation.sharing`); this module keeps the entries whole.

The store holds the only copy of hours of training, and every later run trusts it, so:
- an entry is written whole or not at all: its files go into a temporary folder beside it (the weights, then the
  config with their sha256 and size, last), which is synced and renamed into place;
- a read verifies it: the weights' size and sha256 must be the ones the config recorded. An entry that fails (its
  weights cut short, altered or missing, its config missing or unreadable) is set aside as `<key>.damaged`, never
  deleted, with one line, and the training runs again. Entries written before checksums were recorded are checked
  by parsing their weights, and their checksum is recorded then;
- a training key is trained by one process at a time (`ModelStore.claim`: the key's lock, `cee_bench.locks`); the
  holder also removes what interrupted writes of that key left behind (`results.debris`), and each run removes
  what it finds of other keys that nobody holds (`ModelStore.clear_debris`).
The store is a cache: deleting it only means retraining.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cee_bench.locks import holding, when_free
from cee_bench.provenance import sha256_file
from cee_bench.results import TMP, clear_debris, jsonable, set_aside, write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def store_root(output_dir: Path, task: str) -> Path:
    """The folder of one task's entries (beside `results.result_path`'s records)."""
    return Path(output_dir) / "models" / task


def canonical(value: Any) -> Any:
    """`value` as the JSON it is stored as (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(value, default=jsonable))


def training_key(identity: dict[str, Any]) -> str:
    """The store key of a training: sha256 of its identity as canonical JSON (sorted keys), shortened."""
    text = json.dumps(canonical(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def weights_checksum(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": Path(path).stat().st_size}


def write_entry(folder: Path, write_weights: Callable[[Path], None], config: dict[str, Any]) -> None:
    """Write an entry whole: `write_weights(path)` writes the safetensors file, then the config (with the weights'
    checksum) goes last, in a temporary folder that replaces `folder` once synced. The caller holds the key's lock."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=TMP))
    try:
        write_weights(tmp / WEIGHTS)
        _sync(tmp / WEIGHTS)
        write_json(tmp / CONFIG, {**config, "weights": {"file": WEIGHTS, **weights_checksum(tmp / WEIGHTS)}})
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared store from the other users of a cluster
        if folder.exists():  # a retrained key, or another training under this name: the new entry replaces it
            os.replace(folder, tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=TMP))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clear_debris(folder)


def drop_entry(folder: Path) -> None:
    """Remove an entry at once (renamed to a temporary name first, so a half-removed entry is never read)."""
    folder = Path(folder)
    if folder.is_dir():
        gone = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=TMP))
        os.replace(folder, gone)
        shutil.rmtree(gone, ignore_errors=True)


def check_entry(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(config, None) for a whole entry whose weights match their checksum; (None, None) when there is no entry;
    (None, what is wrong) for a damaged one."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, None
    try:
        config = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError:
        return None, "its config is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"its config cannot be read ({type(exc).__name__})"
    if not isinstance(config, dict):
        return None, "its config is not a mapping"
    weights = folder / WEIGHTS
    if not weights.is_file():
        return None, "its weights are missing"
    recorded = config.get("weights")
    if not isinstance(recorded, dict):  # written before checksums: parse the weights, then record their checksum
        problem = _unparsable(weights)
        if problem is None:
            config["weights"] = {"file": WEIGHTS, **weights_checksum(weights)}
            write_json(folder / CONFIG, config)
        return (None, problem) if problem else (config, None)
    size, expected = weights.stat().st_size, recorded.get("size")
    if size != expected:
        return None, f"its weights are {size:,} bytes, the entry recorded {expected:,}" if isinstance(expected, int) \
            else "its config records no size for its weights"
    if sha256_file(weights) != recorded.get("sha256"):
        return None, "its weights' sha256 is not the one the entry recorded"
    return config, None


def read_entry(folder: Path) -> dict[str, Any] | None:
    """The config of a whole, verified entry; None for anything else (the store is a cache)."""
    return check_entry(folder)[0]


class ModelStore:
    """One task's entries as one run sees them: `claim` a key (its lock), `find` its verified entry (a damaged one is
    set aside and `warn`ed about), `save` a new one, `drop` one that was superseded. `log` says what is reused or
    waited for."""

    def __init__(self, output_dir: Path, task: str, *, log: Callable[[str], None],
                 warn: Callable[[str], None]) -> None:
        self.output_dir, self.root = Path(output_dir), store_root(output_dir, task)
        self.log, self.warn = log, warn

    def folder(self, key: str) -> Path:
        return self.root / key

    def relative(self, key: str) -> str:
        return str(self.folder(key).relative_to(self.output_dir))

    @contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold `key` for the block: no other process trains or writes it meanwhile (it waits, then finds the entry
        this one wrote). What interrupted writes of the key left behind is removed first."""
        with holding(self.output_dir, self.folder(key), say=self.log):
            clear_debris(self.folder(key))
            clear_debris(self.folder(key) / CONFIG)  # a checksum being recorded (see `check_entry`)
            yield

    def clear_debris(self) -> None:
        """Remove what interrupted writes left in the store (`.<key>.*.tmp`), key by key, where no other process holds
        the key (it may be writing it now)."""
        for leftover in sorted(self.root.glob(f".*{TMP}")) if self.root.is_dir() else []:
            folder = self.folder(leftover.name[1:].split(".", 1)[0])
            when_free(self.output_dir, folder, lambda folder=folder: clear_debris(folder))

    def find(self, key: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The verified entry of `key` when it holds exactly `identity` (as JSON); None when there is none, when it
        holds another training (never reused, whatever its folder name) or when it was damaged (set aside)."""
        config, problem = check_entry(self.folder(key))
        if problem is not None:
            aside = set_aside(self.folder(key))
            self.warn(f"store entry {self.relative(key)} is damaged ({problem}): set aside as "
                      f"{aside.relative_to(self.output_dir)}, training it again")
            return None
        if config is not None and config.get("identity") != canonical(identity):
            self.log(f"  [dim]store entry {key} holds another training: not reused[/dim]")
            return None
        return config

    def save(self, key: str, write_weights: Callable[[Path], None], config: dict[str, Any]) -> None:
        write_entry(self.folder(key), write_weights, config)

    def drop(self, key: str) -> None:
        drop_entry(self.folder(key))


def _sync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _unparsable(weights: Path) -> str | None:
    """What is wrong with a safetensors file whose checksum was never recorded (None: it parses whole)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as handle:
            list(handle.keys())
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        return f"its weights cannot be read ({str(exc).splitlines()[0]})"
    return None
