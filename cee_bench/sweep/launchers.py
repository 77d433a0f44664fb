"""How a sweep's jobs are started: `local` (processes on this machine, `--jobs N` at a time) or `submitit` (one job
each through submitit: SLURM on a cluster, or its local executor; options from the config file's `submitit:`
mapping). Both start `cee_bench.sweep.job` on a job's spec and give back a `Started` handle the scheduler polls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from cee_bench.errors import UserError

LAUNCHERS = ("local", "submitit")


class Started(Protocol):
    """A started job: `poll()` is None while it runs, then its exit code (0: done); `log` is where its output goes."""

    log: Path

    def poll(self) -> int | None: ...

    def stop(self) -> None: ...


class Launcher(Protocol):
    def start(self, name: str, spec: Path, log: Path) -> Started: ...


@dataclass
class _Process:
    process: subprocess.Popen
    log: Path

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        self.process.terminate()  # the job cleans up (SIGTERM: exit 143), as a run stopped by hand does


class LocalLauncher:
    """Each job a `python -m cee_bench.sweep.job SPEC` process, its output in its log file; the CPU's cores shared
    evenly among the `jobs` that run at once (torch's threads per job), so that N jobs do not fight over them."""

    def __init__(self, jobs: int) -> None:
        self.threads = max(1, (os.cpu_count() or 1) // jobs)

    def start(self, name: str, spec: Path, log: Path) -> Started:
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "COLUMNS": "160"}
        with log.open("w") as handle:
            process = subprocess.Popen([sys.executable, "-m", "cee_bench.sweep.job", str(spec)], stdout=handle,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return _Process(process, log)


@dataclass
class _Submitted:
    job: Any  # a submitit.Job

    @property
    def log(self) -> Path:
        return Path(self.job.paths.stdout)

    def poll(self) -> int | None:
        if not self.job.done():
            return None
        return 0 if self.job.exception() is None else 1

    def stop(self) -> None:
        self.job.cancel(check=False)


class SubmititLauncher:
    """Each job through a submitit executor (`cluster`: `slurm`, `local` or `debug`; default: SLURM where it is
    installed, else local), its other settings (`timeout_min`, `gpus_per_node`, `cpus_per_task`, `mem_gb`,
    `slurm_partition`, `slurm_account`, ...) passed to `AutoExecutor.update_parameters` as given."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder, self.settings = folder, dict(settings)
        with tempfile.TemporaryDirectory() as scratch:  # the settings are checked before anything is written
            self._executor(Path(scratch))
        self.executor: Any = None

    def _executor(self, folder: Path) -> Any:
        settings = dict(self.settings)
        cluster = settings.pop("cluster", None)
        try:
            executor = import_submitit().AutoExecutor(folder=folder, cluster=cluster)
            executor.update_parameters(**settings)
        except (NameError, ValueError, TypeError, RuntimeError) as exc:
            raise UserError(f"submitit settings: {str(exc).splitlines()[0]}") from None
        return executor

    def start(self, name: str, spec: Path, log: Path) -> Started:
        from cee_bench.sweep.job import run_job

        self.executor = self.executor or self._executor(self.folder)
        self.executor.update_parameters(name=name)
        return _Submitted(self.executor.submit(run_job, str(spec)))


def import_submitit() -> Any:
    """submitit, or one line saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError("the submitit launcher needs the package submitit: pip install 'cee-bench[cluster]'") from None
    return submitit


def launcher(name: str, *, jobs: int, folder: Path, settings: dict[str, Any]) -> Launcher:
    """The launcher `name` (checked by `check_launcher` first)."""
    factories: dict[str, Callable[[], Launcher]] = {"local": lambda: LocalLauncher(jobs),
                                                    "submitit": lambda: SubmititLauncher(folder, settings)}
    return factories[name]()


def check_launcher(name: str, settings: dict[str, Any]) -> None:
    """An unknown launcher, or submitit settings without the submitit launcher or the package, is one line."""
    if name not in LAUNCHERS:
        raise UserError(f"unknown launcher '{name}'; choose {' or '.join(LAUNCHERS)}")
    if settings and name != "submitit":
        raise UserError(f"the config file's submitit settings apply to --launcher submitit, not '{name}'")
    if name == "submitit":
        import_submitit()
