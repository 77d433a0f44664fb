"""`kill -9` at any point — during training, while a store entry is written, while a record is written — leaves
nothing that a later run misreads, and the same command finishes the job with no temporary file left behind.

The two writes are caught in the middle by `inject/sitecustomize.py` (put on the path with `CEE_BENCH_PAUSE`), which
pauses the process there and prints `PAUSED`; the package itself has no such hook."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from damage import CONSOLE, ROOT, SMOKE, env, record, run, snapshot, temp_files, unchanged


def _kill_when(folder: Path, marker: str, *args: str, pause: str | None = None, delay: float = 0.0) -> str:
    """Start `cee-bench run` (full, pabee) into `folder`, `kill -9` it `delay` seconds after it prints `marker`;
    returns what it printed."""
    process = subprocess.Popen([str(CONSOLE), "run", *SMOKE, "--methods", "full,pabee", "--output-dir", str(folder),
                                *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env(pause), cwd=ROOT)
    watchdog = threading.Timer(600, process.kill)
    watchdog.start()
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if marker in line:
                time.sleep(delay)
                break
        assert process.poll() is None, "".join(seen)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        watchdog.cancel()
    return "".join(seen)


def _finishes(folder: Path, before: dict[str, str]) -> None:
    """The same command again: it finishes, reads nothing damaged, keeps what was whole, leaves no temp file."""
    code, output = run(folder)
    assert code == 0 and "warning" not in output, output
    assert {json.loads(p.read_text())["method"] for p in (folder / "sst2").glob("*.json")} == {"full", "pabee"}
    record(folder, "full"), record(folder, "pabee")
    assert unchanged(before, snapshot(folder), but=("sst2/pabee__seed42.json",)) == []
    assert temp_files(folder) == [] and not list(folder.rglob("*.damaged*"))


def test_a_kill_during_training(results):
    pabee = results / "sst2" / "pabee__seed42.json"
    store = json.loads(pabee.read_text())["model_store"]
    for key in store["files"].values():  # without its store entry PABEE trains again, and the kill lands there
        shutil.rmtree(results / store["path"] / key)
    pabee.unlink()
    before = snapshot(results)
    _kill_when(results, "sst2 · pabee", delay=2.0)
    assert not (results / "sst2" / "pabee__seed42.json").exists()
    _finishes(results, before)


def test_a_kill_while_a_store_entry_is_written(results):
    (results / "sst2" / "pabee__seed42.json").unlink()
    before = snapshot(results)
    _kill_when(results, "PAUSED", "--retrain", pause="store")  # full's entry: weights written, config not yet
    assert temp_files(results) or list((results / "models" / "sst2").glob(".*.tmp")), "no write was caught"
    _finishes(results, before)


@pytest.mark.parametrize("force", [False, True], ids=["new-record", "record-overwritten-by-force"])
def test_a_kill_while_a_record_is_written(force, results):
    if not force:
        (results / "sst2" / "pabee__seed42.json").unlink()
    before = snapshot(results)
    args = ("--force",) if force else ()
    _kill_when(results, "PAUSED", *args, pause="record")  # full's (or pabee's) temp file written, not renamed
    assert temp_files(results), "no write was caught"
    assert unchanged(before, snapshot(results)) == []  # the old record, if any, is whole
    _finishes(results, before)
