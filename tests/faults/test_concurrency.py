"""Two `cee-bench run` processes on one output folder: both finish, every record is valid, and every training key is
trained once between them (a lock per record and per key: the second takes other work, or waits and reuses)."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

from damage import CONSOLE, ROOT, SMOKE, env, record, temp_files, trained_keys

METHODS = ("full", "pabee", "deebert", "pcee-bert")


def test_two_runs_on_one_folder_train_every_key_once(tmp_path):
    folder = tmp_path / "results"
    command = [str(CONSOLE), "run", *SMOKE, "--methods", ",".join(METHODS), "--output-dir", str(folder)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                             cwd=ROOT)
    time.sleep(1.0)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                              cwd=ROOT)
    outputs = [process.communicate(timeout=900)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    records = {method: record(folder, method) for method in METHODS}  # each one reads whole
    written = [line for output in outputs for line in output.splitlines() if line.strip().startswith("wrote ")]
    assert len(written) == len(METHODS), outputs  # every record written once, by one of the two
    assert all("kept" in output for output in outputs[1:]), outputs
    counts = Counter(trained_keys(folder))
    assert counts and set(counts.values()) == {1}, counts  # no key trained twice
    shared = {entry["recipe"] for r in records.values() for entry in r["training"]["reused_from"]}
    assert shared and shared <= set(counts)  # what was reused was trained by one of them
    assert temp_files(folder) == []
