"""The fault suite: files damaged the way crashes, full disks and copies damage them, and the installed `cee-bench` run
on them in a subprocess (`damage.py`), checking exit codes, the lines printed, that every record left is valid and
that nothing already written changed.

Every test starts from a copy of one finished run (`finished`: SST-2, `full` and `pabee` at `--preset smoke`, made once
per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from damage import GLUE, run


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """One finished run (full and pabee), made once; tests copy it (`results`)."""
    if not GLUE.is_dir():
        pytest.skip(f"GLUE data not found at {GLUE}")
    folder = tmp_path_factory.mktemp("finished") / "results"
    code, output = run(folder)
    assert code == 0, output
    return folder


@pytest.fixture
def results(finished, tmp_path) -> Path:
    """A private copy of the finished run."""
    folder = tmp_path / "results"
    shutil.copytree(finished, folder)
    return folder
