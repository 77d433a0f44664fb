"""The `cee-bench` command line: thin — parse, call the library, print.

Every `UserError` becomes one line on stderr and exit code 2, a usage error Click's short usage message and exit code
2, SIGINT / SIGTERM one line and exit code 130 / 143; nothing else is caught, so a real bug still shows its
traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from cee_bench.errors import UserError
from cee_bench.interrupt import Interrupted, signals_raise
from cee_bench.precision import DEFAULT_DTYPE
from cee_bench.validation import check_folder, flag

if TYPE_CHECKING:
    from cee_bench.options import RunOptions

app = typer.Typer(add_completion=False,
                  help="Train and measure early-exit methods (ConsistentEE and its baselines) under one harness.")
console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get the whole table


# Options of `run` that only one kind of task reads: given for the other kind, they would be ignored in silence.
CLASSIFICATION_ONLY = ("pooling", "epochs", "batch_size", "lr", "max_seq_length", "latency_examples",
                       "trust_remote_code", "retrain")
GENERATION_ONLY = ("delta", "epsilon", "greedy")


def _given(ctx: typer.Context, name: str, sources: tuple[str, ...] = ("COMMANDLINE", "ENVIRONMENT")) -> bool:
    """Whether option `name` came from one of `sources` (by name: typer vendors its own click, whose
    ParameterSource is not click's)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in sources


@app.command()
def run(
    ctx: typer.Context,
    task: Optional[str] = typer.Option(None, help="Task: rte, mrpc, sst2, qnli, qqp, mnli; cnndm, dolly, alpaca "
                                                   "(generation). "
                                                   "See `cee-bench list`. Required, here or in --config."),
    methods: str = typer.Option("all", help="Comma-separated method names, or 'all'."),
    model: Optional[str] = typer.Option(None, help="Hub id or local path; default: the packaged all-MiniLM-L6-v2."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit) of a --model hub id."),
    data_dir: Optional[Path] = typer.Option(None, envvar="CEE_BENCH_DATA_DIR",
                                            help="GLUE-layout folder (<dir>/RTE/train.tsv...); default: the hub."),
    output_dir: Path = typer.Option(Path("results"), help="Where result records are written."),
    preset: str = typer.Option("cpu", help="smoke (seconds), cpu (minutes on 2 cores) or paper (paper settings)."),
    pooling: str = typer.Option("mean", help="Exit-head input: 'cls' ([CLS]+pooler, the papers') or 'mean'."),
    epochs: Optional[float] = typer.Option(None, help="Override epochs of every training stage."),
    batch_size: Optional[int] = typer.Option(None, help="Override the training batch size of every stage."),
    lr: Optional[float] = typer.Option(None, help="Override the learning rate of every stage."),
    max_seq_length: Optional[int] = typer.Option(None, help="Truncate inputs to this many word pieces."),
    max_train_samples: Optional[int] = typer.Option(None, help="Train on at most this many examples."),
    max_eval_samples: Optional[int] = typer.Option(None, help="Evaluate on at most this many examples per split."),
    latency_examples: Optional[int] = typer.Option(None, help="Examples timed for wall-clock latency."),
    grid: Optional[str] = typer.Option(None, help="Comma-separated thresholds replacing the method's grid "
                                                  "(one method only; ConsistentEE: its alpha_depth grid)."),
    delta: Optional[float] = typer.Option(None, help="Generation: Learn-then-Test tolerance δ in (0, 1)."),
    epsilon: Optional[float] = typer.Option(None, help="Generation: Learn-then-Test risk level ε in (0, 1)."),
    greedy: bool = typer.Option(False, "--greedy", help="Generation: greedy decoding instead of the paper's sampling."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 42)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds: every method runs once per seed "
                                                   "(instead of --seed)."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file of run options (also `grids:` per method and "
                                                     "`runs:`); options given here override it."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    dtype: str = typer.Option(DEFAULT_DTYPE, help="Precision of training and inference: fp32, bf16 (CPUs with AVX-512 "
                                           "BF16/AMX, most GPUs) or fp16 (GPU). See `cee-bench list`."),
    force: bool = typer.Option(False, "--force", help="Recompute results that already exist."),
    retrain: bool = typer.Option(False, "--retrain", help="Train again instead of reusing the model store's "
                                                          "weights (implies --force)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow code from the model's folder or hub repo to run."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (CI logs)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (jobs, what they wait for, what is done, "
                                                          "estimated cost) and stop."),
    launcher: Optional[str] = typer.Option(None, help="Fan the request out as one job per task, method and seed: "
                                                      "'local' (processes here) or 'submitit' (SLURM; settings in "
                                                      "the config file's `submitit:`). See docs/cluster.md."),
    jobs: Optional[int] = typer.Option(None, help="With --launcher: jobs running at once (local default: one per "
                                                  "core; submitit: all)."),
) -> None:
    """Train and evaluate methods on one task; one JSON record per (task, method, seed)."""
    from cee_bench import runner
    from cee_bench.distributed import is_main
    from cee_bench.run_config import option_types, plan_runs, submitit_settings

    params = dict(ctx.params)
    if config is None:
        planned = [{**params, "grids": {}}]
    else:  # the command line overrides the file, which overrides environment variables and defaults
        planned = plan_runs(config, params, {n for n in params if _given(ctx, n, ("COMMANDLINE",))},
                            option_types(run))
    given = {name for name in params if _given(ctx, name)}
    defaults = {p.name: p.default for p in ctx.command.params}
    runs = [_checked(values, given | {n for n in values if n in defaults and values[n] != defaults[n]})
            for values in planned]
    options = [_options(values) for values in runs]
    for opts in options:  # every run is checked before the first one starts
        runner.check_options(opts)
    fanned = {(values["dry_run"], values["launcher"], values["jobs"]) for values in runs}
    if len(fanned) > 1:
        raise UserError("dry_run, launcher and jobs apply to the whole request: give them once, not per run")
    dry_run, launcher, jobs = fanned.pop()
    if dry_run or launcher is not None or jobs is not None or config is not None and submitit_settings(config):
        from cee_bench.sweep import sweep

        code = sweep(options, launcher=launcher, jobs=jobs, dry_run=dry_run, console=console,
                     settings=submitit_settings(config) if config is not None else {})
        raise typer.Exit(code)
    paths = [path for opts in options for path in runner.run(opts)]
    if is_main():
        _say(f"{len(paths)} result file(s) under {', '.join(sorted({str(v['output_dir']) for v in runs}))}")
        _say_degenerate(paths)


def _say_degenerate(paths: list[Path]) -> None:
    """At the end of a run, the tasks whose full model came out a constant predictor: every early-exit number there
    is a constant predictor's (the report flags them too and leaves them out of its averages)."""
    import json

    from cee_bench.report import degenerate_tasks

    records = [json.loads(p.read_text()) for p in paths if p.exists()]
    for task, why in degenerate_tasks([r for r in records if r.get("kind") == "classification"], resamples=200):
        _say(f"{task}: {why}")


def _checked(values: dict, given: set[str]) -> dict:
    """The seeds and the task of one run, checked (both --seed and --seeds is an error), and no option `given` that
    the task's kind does not read."""
    from cee_bench.options import parse_seeds
    from cee_bench.tasks import get_task

    task = values["task"]
    if task is None:
        raise UserError("--task is required (on the command line or in --config)")
    generation = get_task(task, kind=None).kind == "generation"
    foreign = [name for name in (CLASSIFICATION_ONLY if generation else GENERATION_ONLY) if name in given]
    if foreign:
        raise UserError(f"{flag(foreign[0])} applies to {'classification' if generation else 'generation'} tasks "
                        f"only, and {task} is a {'generation' if generation else 'classification'} task")
    if values["seed"] is not None and values["seeds"] is not None:
        raise UserError("give either --seed or --seeds, not both")
    values = dict(values)
    values["seed_list"] = parse_seeds(values["seeds"]) if values["seeds"] is not None else [values["seed"] or 42]
    return values


def _options(values: dict) -> RunOptions:
    """One run of the plan, either kind, as the library's options."""
    from cee_bench.options import RunOptions, parse_grid

    grid = parse_grid(values["grid"]) if values["grid"] is not None else None
    return RunOptions(task=values["task"], methods=values["methods"], model=values["model"],
                      revision=values["revision"], data_dir=values["data_dir"], output_dir=values["output_dir"],
                      preset=values["preset"], seed=values["seed_list"][0], seeds=values["seed_list"],
                      device=values["device"], dtype=values["dtype"], force=values["force"], quiet=values["quiet"],
                      pooling=values["pooling"], trust_remote_code=values["trust_remote_code"],
                      epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
                      max_seq_length=values["max_seq_length"], max_train_samples=values["max_train_samples"],
                      max_eval_samples=values["max_eval_samples"], latency_examples=values["latency_examples"],
                      grid=grid, grids=values["grids"], delta=values["delta"], epsilon=values["epsilon"],
                      greedy=values["greedy"], retrain=values["retrain"])


@app.command()
def report(
    results_dir: Path = typer.Option(Path("results"), help="Folder of result records."),
    format: str = typer.Option("table", help="table, csv, markdown, html (one self-contained page with the figures) "
                                             "or json."),
    output: Optional[Path] = typer.Option(None, help="Write the report to this file instead of stdout."),
    plots: Optional[Path] = typer.Option(None, help="Write accuracy-vs-saved-layers PNGs into this folder."),
    filters: Optional[list[str]] = typer.Option(None, "--filter", help="Keep records with KEY=VALUE (repeatable); "
                                               "keys: backbone, model, preset, pooling, device, dtype, max_seq_length, "
                                               "max_train_samples, max_eval_samples, task, method, seed."),
    bootstrap: str = typer.Option("1000", help="Two-level paired-bootstrap resamples for the 95% intervals."),
    verdict: Optional[str] = typer.Option(None, help="Only the verdict: 'all', or the methods to put against the "
                                                     "baselines (comma-separated), in the chosen format."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2) at a results file that cannot be read, "
                                                        "instead of skipping it with a warning."),
) -> None:
    """Print the Table 3 mirror of the stored results (and the generation table) and the verdict: seeds aggregated,
    95% two-level paired-bootstrap intervals (seeds and examples), Δ vs the full model and vs each method's own top
    layer, degenerate tasks flagged; method against method as yes / no / inconclusive; records with different
    settings or code in separate tables. The report goes to stdout (or --output); warnings and the figures' file
    names go to stderr."""
    from cee_bench.report import build_report, figure3, figure5, render, verdict_methods
    from cee_bench.report.grouping import filter_records
    from cee_bench.results import load_results

    resamples = _report_flags(format, bootstrap, output)
    if plots is not None:
        check_folder(plots, "plots folder", must_exist=False)
    records = load_results(results_dir, strict=strict, warn=_say)
    if not records:
        raise UserError(f"no result records under {results_dir}; run `cee-bench run` first")
    records = filter_records(records, filters or [])
    if not records:
        raise UserError(f"no result records under {results_dir} match --filter {' '.join(filters or [])}")
    built = build_report(records, resamples)
    for warning in built.warnings:
        _say(warning)
    chosen = verdict_methods(built, verdict) if verdict is not None else None
    _emit(render(built, records, format, terminal=output is None and sys.stdout.isatty(), verdict=chosen), output)
    if plots is not None:
        for path in [*figure3.plot_curves(built, plots), *figure5.plot_generation(records, plots)]:
            _say(f"wrote {path}")


@app.command()
def compare(
    a: Path = typer.Argument(..., help="The first results folder (the 'before', e.g. CPU or fp32)."),
    b: Path = typer.Argument(..., help="The second results folder (the 'after', e.g. GPU or bf16)."),
    format: str = typer.Option("table", help="table, csv, markdown, html or json."),
    output: Optional[Path] = typer.Option(None, help="Write the comparison to this file instead of stdout."),
    filters: Optional[list[str]] = typer.Option(None, "--filter", help="Keep records with KEY=VALUE on both sides "
                                               "(repeatable; the keys of `report --filter`)."),
    bootstrap: str = typer.Option("1000", help="Paired-bootstrap resamples for the 95% intervals."),
) -> None:
    """The same cells of two result folders side by side: B − A of score and saved layers with paired-bootstrap
    intervals on the same examples, and B ÷ A of the measured speed-up; records that cannot be paired are named."""
    from cee_bench.report.compare import compare_folders, render_comparison
    from cee_bench.report.grouping import filter_records
    from cee_bench.results import load_results

    resamples = _report_flags(format, bootstrap, output)
    sides = []
    for folder in (a, b):
        records = filter_records(load_results(folder), filters or [])
        if not records:
            raise UserError(f"no result records under {folder}" + (f" match --filter {' '.join(filters)}"
                                                                   if filters else ""))
        sides.append(records)
    comparison = compare_folders(sides[0], sides[1], resamples, names=(str(a), str(b)))
    for line in comparison.unpaired:
        _say(line)
    _emit(render_comparison(comparison, format, terminal=output is None and sys.stdout.isatty()), output)


def _report_flags(format: str, bootstrap: str, output: Optional[Path]) -> int:
    """The flags `report` and `compare` share, checked before any record is read: the number of resamples."""
    from cee_bench.report import FORMATS
    from cee_bench.validation import check_output_file

    if format not in FORMATS:
        raise UserError(f"unknown format '{format}'; choose {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if not bootstrap.strip().isdigit() or int(bootstrap) < 1:
        raise UserError(f"--bootstrap must be a positive integer, got '{bootstrap}'")
    if output is not None:
        check_output_file(output, "--output")
    return int(bootstrap)


def _emit(text: str, output: Optional[Path]) -> None:
    """Data to `output` (written whole or not at all) or to stdout; the one line saying where it went to stderr."""
    from cee_bench.results import atomic_write

    if output is None:
        sys.stdout.write(text)
        return
    atomic_write(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    _say(f"wrote {output}")


def _say(line: str) -> None:
    """A message, never data: to stderr, as one line however long."""
    Console(stderr=True).print(line, markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_() -> None:
    """Show the tasks, methods and presets of both kinds, with their defaults."""
    from rich.table import Table

    import torch

    from cee_bench.precision import DEFAULT_DTYPE, DTYPES, supported
    from cee_bench.presets import GENERATION_PRESETS, PRESET_COSTS, PRESET_LIMITS, PRESETS
    from cee_bench.registry import get_method, method_names
    from cee_bench.tasks import TASKS

    tasks = Table(title="Tasks")
    for column in ("task", "kind", "labels", "metrics (first = main)", "local data", "hub"):
        tasks.add_column(column)
    for t in TASKS.values():
        if t.kind == "classification":
            tasks.add_row(t.name, t.kind, ", ".join(t.label_names), ", ".join(t.metrics),
                          f"{t.glue_dir}/{t.train_file}, {t.dev_file}", f"nyu-mll/glue {t.hub_config}")
        else:
            tasks.add_row(t.name, t.kind, "reference: " + ("gold" if t.gold else "the full model's output"),
                          ", ".join(t.metrics), t.local_file, " ".join(filter(None, t.hub)))
    console.print(tasks)
    methods = Table(title="Classification methods (stages per preset: epochs × batch @ lr)")
    for column in ("method", "exit rule", "heads", *PRESETS):
        methods.add_column(column)
    for name in method_names():
        m = get_method(name)
        cells = ["\n".join(filter(None, [", ".join(f"{s}: {st.epochs:g}×{st.batch_size}@{st.lr:g}"
                                                     for s, st in m.stages[p].items()), m.preset_notes.get(p)]))
                 for p in PRESETS]
        methods.add_row(name, m.threshold_name, f"{m.pooler} pooler", *cells)
    console.print(methods)
    generation = Table(title="Generation methods (grid per preset, most conservative first)")
    for column in ("method", "display", "exit rule", "exits", *PRESETS):
        generation.add_column(column)
    for name in method_names("generation"):
        m = get_method(name, "generation")
        generation.add_row(name, m.display, m.rule_name, m.exits,
                           *(f"{m.grid_name}: {', '.join(f'{v:g}' for v in m.grid(GENERATION_PRESETS[p]))}"
                             for p in PRESETS))
    console.print(generation)
    presets = Table(title="Preset data limits and measured cost (classification)")
    for column in ("preset", *next(iter(PRESET_LIMITS.values())).keys(), "cost"):
        presets.add_column(column)
    for p, limits in PRESET_LIMITS.items():
        presets.add_row(p, *(str(v) for v in limits.values()), PRESET_COSTS[p])
    console.print(presets)
    sizes = ("n_eval", "n_calib", "n_train", "train_tokens", "max_new_tokens", "max_prompt_tokens", "delta",
             "epsilon", "exit_steps", "policy_steps", "meta_steps")
    gen_presets = Table(title="Preset sizes (generation)")
    for column in ("preset", *sizes):
        gen_presets.add_column(column)
    for p, preset in GENERATION_PRESETS.items():
        gen_presets.add_row(p, *(str(getattr(preset, k)) for k in sizes))
    console.print(gen_presets)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    console.print(f"--dtype: {', '.join(DTYPES)} (default {DEFAULT_DTYPE}); this machine runs natively: "
                  + "; ".join(f"{d} {', '.join(supported(d))}" for d in devices))


data_app = typer.Typer(help="Get data sets for offline runs.")


@data_app.command("glue")
def data_glue(
    to: Path = typer.Option(..., help="Folder to write GLUE's layout into (<DIR>/RTE/train.tsv, ...)."),
    tasks: str = typer.Option(",".join(("rte", "mrpc", "sst2")), help="Comma-separated GLUE tasks, or 'all'."),
    force: bool = typer.Option(False, "--force", help="Write over task files that exist."),
) -> None:
    """Copy GLUE tasks from the hub (nyu-mll/glue) into a folder in GLUE's TSV layout, for `run --data-dir DIR`
    later, offline."""
    from cee_bench.classification import glue_copy

    chosen = glue_copy.parse_tasks(tasks)
    glue_copy.check_targets(chosen, to, force)
    for task in chosen:
        written, replaced = glue_copy.copy_task(task, to)
        for path, rows in written:
            _say(f"wrote {path} ({rows} rows)")
        if replaced:
            _say(f"{task.name}: {replaced} tab(s) or line break(s) inside texts written as spaces")
    _say(f"run offline with: cee-bench run --data-dir {to} ...")


app.add_typer(data_app, name="data")

from cee_bench.classification.analysis import analyze_app  # noqa: E402  (torch is imported inside its commands)
from cee_bench.gate.command import bench_command  # noqa: E402  (typer and rich only: --help stays instant)

app.command("bench")(bench_command)
app.add_typer(analyze_app, name="analyze")


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Click's exception base as the installed Typer raises it: recent Typer (0.29 here) vendors click as
    `typer._click`, older ones use the standalone package; both are caught when both exist."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except ImportError:
            continue
    return tuple(found)


def main() -> None:
    """Entry point: usage errors as Click's short usage message, user errors as one line, both exit code 2; a signal
    as one line and 128 + its number. Anything else is a bug and keeps its traceback."""
    say = Console(stderr=True).print
    with signals_raise():
        try:
            code = app(standalone_mode=False)  # a command's `typer.Exit(n)` comes back as n here
        except UserError as exc:
            say(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        except Interrupted as exc:
            say(f"interrupted ({exc}): finished records are kept and no partial one was written; run the same "
                "command again to resume", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        except _usage_errors() as exc:
            exc.show()  # the usage line, the --help hint and `Error: ...`: Click's compact form, no Rich box
            sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)
