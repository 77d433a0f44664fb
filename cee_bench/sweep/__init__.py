"""`cee-bench run --launcher local|submitit` (and `--dry-run`): a request fanned out as independent jobs, one per
(task, method, seed), sharing one output folder and its model store (docs/cluster.md).

`plan.py` builds the jobs and what each waits for, `job.py` is one job as a process runs it, `launchers.py` starts
jobs (local processes or submitit) and `view.py` shows the sweep. This module schedules: a job starts once the jobs it
waits for are done (and at most `jobs` run at once); a job whose needs failed is not started; the command ends when
no job is left, with exit 1 when one failed (each failure's log and last line printed). Whatever starts the jobs,
the locks of records and training keys (`cee_bench.locks`) keep them safe; this order makes every training be
trained once, by the method that owns it, and every record equal a one-process run's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from cee_bench.errors import UserError
from cee_bench.options import RunOptions
from cee_bench.sweep.job import write_spec
from cee_bench.sweep.launchers import Started, check_launcher, launcher as make_launcher
from cee_bench.sweep.plan import Job, Plan, build_plan
from cee_bench.sweep.view import SweepView, plan_table
from cee_bench.validation import check_numbers

POLL_SECONDS = 0.5
SWEEP = ".sweep"  # in each output folder: the jobs' specs, their logs, submitit's files


def check_sweep(launcher: str | None, jobs: int | None, settings: dict[str, Any], options: list[RunOptions]) -> None:
    """Everything about the launcher's options, before anything is written or submitted."""
    check_numbers({"jobs": jobs})
    if launcher is None:
        if jobs is not None:
            raise UserError("--jobs applies to --launcher local or submitit")
        if settings:
            raise UserError("the config file's submitit settings apply to --launcher submitit")
        return
    check_launcher(launcher, settings)
    if any(opts.retrain for opts in options):
        raise UserError("--retrain with a launcher would train each shared training once per job; remove the "
                        "trainings to redo from <output-dir>/models instead, or run without --launcher")


def sweep(options: list[RunOptions], *, launcher: str | None, jobs: int | None, settings: dict[str, Any],
          dry_run: bool, console: Console) -> int:
    """Print the plan of `options` (checked); unless `dry_run`, run its missing jobs through `launcher` and return
    the exit code (0, or 1 when a job failed)."""
    check_sweep(launcher, jobs, settings, options)
    plan = build_plan(options)
    if launcher is None:  # the plan of a one-process run
        limit = 1
    elif jobs is not None:
        limit = jobs
    else:  # locally one job per core; submitted, every job at once (the scheduler queues them)
        limit = (os.cpu_count() or 1) if launcher == "local" else max(1, len(plan.to_run))
    if dry_run or launcher is None:
        console.print(plan_table(plan, limit))
        return 0
    # what can fail does so before anything is written, shown or submitted
    start = make_launcher(launcher, jobs=limit, folder=Path(plan.jobs[0].opts.output_dir) / SWEEP / "submitit",
                          settings=settings)
    _sweep_folders(plan)
    console.print(plan_table(plan, limit))
    logs: dict[str, Path] = {}
    with SweepView(plan, console) as view:
        failed = _schedule(plan, limit, view, logs, lambda job: _start(start, job, logs))
    for line in view.failures(logs):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"sweep finished: {view.counts()}", markup=False, highlight=False)
    return 1 if failed else 0


def _sweep_folders(plan: Plan) -> None:
    """Each output folder's `.sweep/`, created now: a folder where nothing can be written is one line, before any
    job is submitted."""
    for output in dict.fromkeys(job.opts.output_dir for job in plan.jobs):
        folder = Path(output) / SWEEP
        try:
            (folder / "jobs").mkdir(parents=True, exist_ok=True)
            probe = folder / "jobs" / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write in the output folder {output} ({exc.strerror or exc}): the jobs keep their "
                            "records, the model store and their logs there") from None


def _start(launcher: Any, job: Job, logs: dict[str, Path]) -> Started:
    slug = job.id.replace("/", "_")
    folder = Path(job.opts.output_dir) / SWEEP
    spec = write_spec(folder / "jobs" / f"{slug}.json", job.opts)
    started = launcher.start(slug, spec, folder / "logs" / f"{slug}.log")
    logs[job.id] = started.log
    return started


def _schedule(plan: Plan, limit: int, view: SweepView, logs: dict[str, Path], start: Any) -> bool:
    """Start every job to run when its needs are done, at most `limit` at once, until none is left; True when one
    failed. Interrupted, it stops the jobs it started."""
    waiting = list(plan.to_run)
    running: dict[str, Started] = {}
    try:
        while waiting or running:
            for job_id, started in list(running.items()):
                code = started.poll()
                if code is not None:
                    del running[job_id]
                    view.set(job_id, "done" if code == 0 else "failed",
                             "" if code == 0 else f"exit {code}, log {started.log}")
            for job in list(waiting):
                needs = [view.state[n] for n in job.needs]
                if "failed" in needs:
                    waiting.remove(job)
                    view.set(job.id, "failed", "not started: a job it waits for failed")
                elif all(state == "done" for state in needs) and len(running) < limit:
                    waiting.remove(job)
                    running[job.id] = start(job)
                    view.set(job.id, "running", f"log {logs[job.id]}")
            view.refresh()
            time.sleep(POLL_SECONDS)
    except BaseException:
        for started in running.values():
            started.stop()
        raise
    return "failed" in view.state.values()
