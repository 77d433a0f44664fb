"""The fault suite's tools: the installed `cee-bench` run in a subprocess, as a user meets it, and what the tests check
afterwards (every record valid, nothing already written changed, no temporary file left)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GLUE = ROOT.parent / "shared" / "data" / "glue"
CONSOLE = Path(sys.executable).parent / "cee-bench"
INJECT = Path(__file__).resolve().parent / "inject"  # sitecustomize that pauses a write for a kill -9 (CEE_BENCH_PAUSE)
SMOKE = ("--task", "sst2", "--preset", "smoke", "--data-dir", str(GLUE))


def env(pause: str | None = None) -> dict[str, str]:
    """The subprocess environment: this checkout first on the path, one thread, and the write pause when asked."""
    values = dict(os.environ)
    values["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT) if pause else None, str(ROOT),
                                                         values.get("PYTHONPATH")]))
    values.setdefault("OMP_NUM_THREADS", "1")
    values["COLUMNS"] = "400"  # one log line per line: Rich wraps at 80 columns when not on a terminal
    values.pop("CEE_BENCH_PAUSE", None)
    if pause:
        values["CEE_BENCH_PAUSE"] = pause
    return values


def console(*args: str, timeout: float = 600) -> tuple[int, str]:
    """Run the installed `cee-bench` with `args`: (exit code, stdout + stderr)."""
    done = subprocess.run([str(CONSOLE), *args], capture_output=True, text=True, env=env(), timeout=timeout,
                          cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


def run(output: Path, *args: str, methods: str = "full,pabee") -> tuple[int, str]:
    """`cee-bench run` on SST-2 at the smoke preset into `output` (quiet: only warnings and the last line)."""
    return console("run", *SMOKE, "--methods", methods, "--output-dir", str(output), "--quiet", *args)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (lock files aside: they are empty, and a run that computes anything
    takes them)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".locks" not in p.relative_to(folder).parts}


def unchanged(before: dict[str, str], after: dict[str, str], *, but: tuple[str, ...] = ()) -> list[str]:
    """The files of `before` that are gone or changed in `after`, except those under the paths in `but`."""
    return [name for name, digest in before.items()
            if after.get(name) != digest and not any(name == b or name.startswith(b + "/") for b in but)]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def record(folder: Path, method: str) -> dict:
    """The record of `method` (seed 42), read as `report` reads it: a damaged one fails the test."""
    from cee_bench.results import read_record

    return read_record(folder / "sst2" / f"{method}__seed42.json")


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def trained_keys(folder: Path) -> list[str]:
    """Every training key that some record says it trained (a key trained twice appears twice)."""
    keys = []
    for path in sorted((folder / "sst2").glob("*.json")):
        keys += [entry["recipe"] for entry in json.loads(path.read_text())["training"]["trained"]]
    return keys


def store_key(folder: Path, method: str) -> str:
    """The store key of `method`'s model, from its record."""
    return record(folder, method)["model_store"]["files"]["model"]
