"""One job of a sweep, as a process runs it: its options in a JSON file (`write_spec`), read back and run by
`run_job`, which is what both launchers start (`python -m cee_bench.sweep.job SPEC` locally, `run_job(SPEC)` pickled
by submitit on a cluster node).

A job is an ordinary `cee-bench run` of one task, one method and one seed, in the sweep's output folder: it resumes by
content and takes the locks of its record and of every training key (`cee_bench.locks`), so jobs that share a
training wait for it and load it instead of training it again, whatever order they are started in.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from cee_bench.options import RunOptions
from cee_bench.results import write_json

# What a job's options are made of: the request as given; the fields that `check_options` derives (and `share`,
# `fresh`, `checked`, which are one process's) are computed again in the job.
_DERIVED = ("limits", "generation", "share", "fresh", "checked")
_PATHS = ("data_dir", "output_dir")


def write_spec(path: Path, opts: RunOptions) -> Path:
    """Write a job's options (one task, method and seed) as JSON."""
    spec: dict[str, Any] = {f.name: getattr(opts, f.name) for f in fields(RunOptions) if f.name not in _DERIVED}
    for name in _PATHS:
        spec[name] = None if spec[name] is None else str(Path(spec[name]).resolve())
    return write_json(path, spec)


def read_spec(path: Path) -> RunOptions:
    spec = json.loads(Path(path).read_text())
    for name in _PATHS:
        spec[name] = None if spec[name] is None else Path(spec[name])
    return RunOptions(**spec)


def run_job(spec: str) -> None:
    """Run the job of `spec` (submitit pickles this function): the records' paths are its log's last line."""
    from cee_bench.runner import run

    paths = run(read_spec(Path(spec)))
    print(f"{len(paths)} result file(s): {', '.join(map(str, paths))}", flush=True)


def main() -> None:
    """`python -m cee_bench.sweep.job SPEC`: a user error is one line and exit 2, as on the command line."""
    from cee_bench.errors import UserError
    from cee_bench.interrupt import Interrupted, signals_raise

    with signals_raise():
        try:
            run_job(sys.argv[1])
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Interrupted as exc:
            print(f"interrupted ({exc})", file=sys.stderr, flush=True)
            sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
