"""A sweep's plan: one job per (task, method, seed) of a `run` request, the jobs each one waits for, what is already
done, and an estimate of what the rest costs.

A job waits for the jobs whose records its own needs first (`Recipe.needs`: `full`'s record, the reference of the
operating points, and the records of the methods whose trainings it shares — DeeBERT's stage 1 is `full`'s training,
PCEE-BERT's and ConsistentEE's step 1 PABEE's), so that every training is trained once, by the method that owns it, and
every record equals the one a one-process run writes. A job whose record is there is done: a rerun of the same
command starts only what is missing (the job itself still checks a record's whole configuration before keeping it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cee_bench.errors import UserError
from cee_bench.options import RunOptions
from cee_bench.presets import PRESET_MINUTES, PRESET_MINUTES_ROWS
from cee_bench.registry import parse_methods
from cee_bench.results import read_record, result_path
from cee_bench.runner import recipe_for
from cee_bench.tasks import get_task


@dataclass
class Job:
    """One `cee-bench run` of one task, one method and one seed (`opts`), writing `record`."""

    id: str
    opts: RunOptions
    record: Path
    needs: list[str]
    done: bool
    minutes: float | None  # estimated training minutes on one thread (None: no measured figure)


@dataclass
class Plan:
    jobs: list[Job]

    @property
    def to_run(self) -> list[Job]:
        return [job for job in self.jobs if not job.done]

    def minutes(self) -> float | None:
        """The estimated training minutes of the jobs to run (None when a job has no measured figure)."""
        figures = [job.minutes for job in self.to_run]
        return None if any(m is None for m in figures) else sum(figures)


def build_plan(options: list[RunOptions]) -> Plan:
    """The jobs of every run in `options` (each checked by `runner.check_options`), every seed and method."""
    jobs: list[Job] = []
    for opts in options:
        task = get_task(opts.task, kind=None)
        methods = parse_methods(opts.methods, task.kind)
        for seed in opts.seeds or [opts.seed]:
            ids = {}
            for method in methods:
                job_opts = replace(opts, methods=method, seed=seed, seeds=None, quiet=False, checked=False)
                record = result_path(opts.output_dir, task.name, method, seed)
                ids[method] = f"{task.name}/{method}__seed{seed}"
                jobs.append(Job(ids[method], job_opts, record, [], _done(record, job_opts),
                                _minutes(job_opts, method)))
            for job in jobs[-len(methods):]:
                job.needs = [ids[m] for m in recipe_for(task.kind).needs(job.opts.methods, methods)]
    _check_unique(jobs)
    return Plan(jobs)


def _done(record: Path, opts: RunOptions) -> bool:
    """Whether the job's record is there, readable, and of its preset (another configuration's record is left to
    the job, which names the difference)."""
    if opts.force or not record.exists():
        return False
    try:
        return read_record(record).get("config", {}).get("preset") == opts.preset
    except UserError:
        return False


def _minutes(opts: RunOptions, method: str) -> float | None:
    """The method's measured training minutes at the preset (`presets.PRESET_MINUTES`), scaled to the run's training
    rows; None where nothing was measured (the paper preset, generation)."""
    figure = PRESET_MINUTES.get(opts.preset, {}).get(method)
    if figure is None or get_task(opts.task, kind=None).kind != "classification":
        return None
    rows = opts.max_train_samples or opts.limits.get("max_train_samples") or PRESET_MINUTES_ROWS[opts.preset]
    return figure * rows / PRESET_MINUTES_ROWS[opts.preset]


def _check_unique(jobs: list[Job]) -> None:
    seen: dict[Path, str] = {}
    for job in jobs:
        if job.record in seen:
            raise UserError(f"two runs of the request write {job.record}: give them different output folders")
        seen[job.record] = job.id
