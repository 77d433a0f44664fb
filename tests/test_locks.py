"""One lock per record and per training key (cee_bench/locks.py): a second holder is refused or waits (and says so),
and a folder where no lock can be made is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cee_bench.errors import UserError
from cee_bench.locks import Lock, holding, lock_path


def test_a_lock_file_is_named_after_what_it_guards(tmp_path):
    assert lock_path(tmp_path, tmp_path / "sst2" / "full__seed42.json") == \
        tmp_path / ".locks" / "sst2" / "full__seed42.json.lock"


def test_a_held_lock_is_refused_without_waiting_and_waited_for_with_one_line(tmp_path):
    target = tmp_path / "sst2" / "full__seed42.json"
    path = lock_path(tmp_path, target)
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               f"lock = FileLock({str(path)!r}); lock.acquire(); print('held', flush=True); "
                               "time.sleep(1.5)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    said: list[str] = []
    assert not Lock(tmp_path, target, say=said.append).take(wait=False)
    started = time.monotonic()
    with holding(tmp_path, target, say=said.append):
        assert time.monotonic() - started > 0.5
    assert said == ["  waiting for sst2/full__seed42.json: another run holds its lock"]
    holder.wait()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"cannot lock .*full__seed42.json.lock \(the output folder must be "
                                            r"writable\)"):
            Lock(tmp_path, tmp_path / "sst2" / "full__seed42.json", say=print).take()
    finally:
        tmp_path.chmod(0o755)
