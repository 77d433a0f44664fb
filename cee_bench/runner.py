"""`cee-bench run`, the shell both kinds of task share: check the request, then per seed resume or recompute each
method's record and wrap the recipe's numbers in the record envelope.

The shell knows no kind. A task's kind picks its recipe from `RECIPES` (a lazy table, like the method registry):
`cee_bench.classification.recipe.ClassificationRecipe` (trace once and sweep) or
`cee_bench.generation.recipe.GenerationRecipe` (decode every candidate and calibrate); both give the shell what the
`Recipe` protocol names. Everything a user can get wrong is checked before the first file is written; a finished
record is never recomputed unless `force` is set, so an interrupted run resumes where it stopped. Each record is
computed under its lock (`cee_bench.locks`): a second run on the same folder takes the records the first is not
computing, and keeps those the first wrote.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Protocol

from cee_bench import distributed
from cee_bench.locks import Lock, when_free
from cee_bench.options import RunOptions, check_seeds
from cee_bench.progress import Progress
from cee_bench.provenance import code_identity
from cee_bench.results import clear_debris, debris, environment, result_path, save_result
from cee_bench.resume import replace_damaged, reusable
from cee_bench.tasks import get_task

# kind → "module:class" of its recipe, imported when a task of that kind runs.
RECIPES: dict[str, str] = {
    "classification": "cee_bench.classification.recipe:ClassificationRecipe",
    "generation": "cee_bench.generation.recipe:GenerationRecipe",
}


class Recipe(Protocol):
    """What the shell asks of a kind's recipe (torchtune names its own contract the same way): the checks that need no
    data or model, which of a run's `methods` a method's record `needs` first (records it reads, or trainings it
    shares, which the one-process order trains in the method that owns them), then, built from checked options, the
    methods of the run and per method the record's identity (what a stored record must match to be reused), its
    `config` and its numbers (`run_method`: None on the processes other than the main one), plus the run's
    `provenance` and `data_summary`."""

    methods: Iterable[str]
    provenance: dict[str, Any]
    data_summary: dict[str, Any]

    def __init__(self, opts: RunOptions, progress: Progress) -> None: ...

    @staticmethod
    def check(opts: RunOptions) -> None: ...

    @staticmethod
    def needs(name: str, methods: list[str]) -> list[str]: ...

    def identity(self, name: str) -> dict[str, Any]: ...

    def config(self, name: str) -> dict[str, Any]: ...

    def run_method(self, name: str) -> dict[str, Any] | None: ...


def recipe_for(kind: str) -> type[Recipe]:
    module, _, name = RECIPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def run(opts: RunOptions) -> list[Path]:
    """Run every method of `opts` on its task once per seed (`seeds`, else `seed`); returns the paths of the records
    written or reused. Everything is checked before the first seed starts (a bad option fails on it, before writing)."""
    check_options(opts)
    seeds = [opts.seed] if opts.seeds is None else opts.seeds
    return [path for seed in seeds for path in run_seed(replace(opts, seed=seed, seeds=None))]


def check_options(opts: RunOptions) -> None:
    """Everything about `opts` that needs no data or model, once: seeds, the options both kinds share, then the
    kind's own (its recipe's `check`: methods, grids, preset limits). A checked request is not checked again."""
    if opts.checked:
        return
    if opts.seeds is not None:
        check_seeds(opts.seeds)
    opts.validate()
    recipe_for(get_task(opts.task, kind=None).kind).check(opts)
    opts.checked = True


def run_seed(opts: RunOptions) -> list[Path]:
    """Every method of `opts` at its one `seed`: the run shell of both kinds. It checks the request (unless `run`
    already did), resolves the device, hands the set-up to the recipe of the task's kind, reuses or recomputes each
    record, and builds and saves the record envelope (task, method, seed, kind, config, code, environment,
    provenance, data) around the recipe's numbers. The code's fingerprint is part of what a stored record must match
    (`provenance.code_identity`): numbers from other code are recomputed or refused, never kept as this code's."""
    check_options(opts)
    task = get_task(opts.task, kind=None)
    distributed.start(opts.resolved_device)
    progress = Progress(quiet=opts.quiet)
    recipe = recipe_for(task.kind)(opts, progress)
    paths = {name: result_path(opts.output_dir, task.name, name, opts.seed) for name in recipe.methods}
    code = code_identity()  # a record from other code is another configuration: never resumed as this one's
    wanted = {name: {**recipe.identity(name), "code.fingerprint": code["fingerprint"]} for name in recipe.methods}
    reused = {name: reusable(paths[name], wanted[name], force=opts.force)
              for name in recipe.methods}  # every mismatch is found before the first method trains
    seen = {name: _stamp(paths[name]) for name in recipe.methods}
    pending = []
    for name in recipe.methods:
        if distributed.from_main(reused[name]):
            progress.log(f"[dim]{task.name}/{name}: kept {paths[name]} (same configuration; "
                         "--force recomputes it)[/dim]")
            if distributed.is_main() and debris(paths[name]):  # an interrupted --force left its temp file
                when_free(opts.output_dir, paths[name], lambda path=paths[name]: clear_debris(path))
        else:
            pending.append(name)
    while pending:
        name, lock = _take_next(pending, recipe, paths, opts.output_dir, progress)
        pending.remove(name)
        try:
            # A record that another run wrote since this one started is new: kept, even under --force.
            kept = distributed.is_main() and reusable(paths[name], wanted[name],
                                                      force=opts.force and _stamp(paths[name]) == seen[name])
            if distributed.from_main(kept):
                progress.log(f"[dim]{task.name}/{name}: kept {paths[name]} (written by another run meanwhile)[/dim]")
                continue
            if distributed.is_main():
                replace_damaged(paths[name], progress.warn)
            progress.log(f"[bold]{task.name}[/bold] · {name}")
            body = recipe.run_method(name)
            if body is not None:  # None on the processes other than the main one
                record = {"task": task.name, "method": name, "seed": opts.seed, "kind": task.kind,
                          "config": recipe.config(name), **body, "code": code, "environment": environment(),
                          "provenance": recipe.provenance, "data": recipe.data_summary}
                save_result(opts.output_dir, record)
                progress.log(f"  wrote {paths[name]}")
            distributed.barrier()
        finally:
            if lock is not None:
                lock.release()
    return list(paths.values())


def _take_next(pending: list[str], recipe: Recipe, paths: dict[str, Path], output_dir: Path,
               progress: Progress) -> tuple[str, Lock | None]:
    """The next method to compute and its record's lock, taken (on the main process, which decides for all). Of the
    methods whose `needs` are done, the first whose lock is free; when another run holds every one of them, wait for
    the first. So two runs on one folder share the work instead of doing it twice, and a record is never computed
    before the records it reads or the trainings it shares with a method before it."""
    choice: tuple[str, Lock] | None = None
    if distributed.is_main():
        ready = [name for name in pending if not set(recipe.needs(name, list(recipe.methods))) & set(pending)]
        for name in ready:
            lock = Lock(output_dir, paths[name], say=progress.log)
            if lock.take(wait=False):
                choice = name, lock
                break
        if choice is None:
            lock = Lock(output_dir, paths[ready[0]], say=progress.log)
            lock.take()
            choice = ready[0], lock
    name = distributed.from_main(None if choice is None else choice[0])
    return name, None if choice is None else choice[1]


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from another (inode, size, modification time); None when there is none."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns
