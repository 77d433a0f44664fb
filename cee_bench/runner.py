"""`cee-bench run`, the shell both kinds of task share: check the request, then per seed resume or recompute each
method's record and wrap the recipe's numbers in the record envelope.

The shell knows no kind. A task's kind picks its recipe from `RECIPES` (a lazy table, like the method registry):
`cee_bench.classification.recipe.ClassificationRecipe` (trace once and sweep) or
`cee_bench.generation.recipe.GenerationRecipe` (decode every candidate and calibrate); both give the shell what the
`Recipe` protocol names. Everything a user can get wrong is checked before the first file is written; a finished
record is never recomputed unless `force` is set, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Protocol

from cee_bench import distributed
from cee_bench.options import RunOptions, check_seeds
from cee_bench.progress import Progress
from cee_bench.provenance import code_identity
from cee_bench.results import environment, result_path, save_result
from cee_bench.resume import reusable
from cee_bench.tasks import get_task

# kind → "module:class" of its recipe, imported when a task of that kind runs.
RECIPES: dict[str, str] = {
    "classification": "cee_bench.classification.recipe:ClassificationRecipe",
    "generation": "cee_bench.generation.recipe:GenerationRecipe",
}


class Recipe(Protocol):
    """What the shell asks of a kind's recipe (torchtune names its own contract the same way): the checks that need no
    data or model, then, built from checked options, the methods of the run and per method the record's identity
    (what a stored record must match to be reused), its `config` and its numbers (`run_method`: None on the processes
    other than the main one), plus the run's `provenance` and `data_summary`."""

    methods: Iterable[str]
    provenance: dict[str, Any]
    data_summary: dict[str, Any]

    def __init__(self, opts: RunOptions, progress: Progress) -> None: ...

    @staticmethod
    def check(opts: RunOptions) -> None: ...

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
    reused = {name: reusable(paths[name], {**recipe.identity(name), "code.fingerprint": code["fingerprint"]},
                             force=opts.force)
              for name in recipe.methods}  # every mismatch is found before the first method trains
    for name in recipe.methods:
        if distributed.from_main(reused[name]):
            progress.log(f"[dim]{task.name}/{name}: kept {paths[name]} (same configuration; "
                         "--force recomputes it)[/dim]")
            continue
        progress.log(f"[bold]{task.name}[/bold] · {name}")
        body = recipe.run_method(name)
        if body is not None:  # None on the processes other than the main one
            record = {"task": task.name, "method": name, "seed": opts.seed, "kind": task.kind,
                      "config": recipe.config(name), **body, "code": code, "environment": environment(),
                      "provenance": recipe.provenance, "data": recipe.data_summary}
            save_result(opts.output_dir, record)
            progress.log(f"  wrote {paths[name]}")
        distributed.barrier()
    return list(paths.values())
