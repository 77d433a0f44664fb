"""The one report of both kinds of task, from stored records: the Table 3 mirror (Rich, CSV, Markdown) and the
accuracy-vs-saved-layers curves (Figure 3) for classification; the generation table and Figure 5 (quality against
measured speed-up) for generation. `build_report` assembles it; each part has its own room:

- `grouping.py`: which records may share a table and a cell;
- `evidence.py`: a task's per-example logs as two-level bootstrap samples per seed;
- `cells.py`: a cell over its seeds, with its intervals, Δs, constant-predictor and guarantee flags;
- `generation_cells.py`: a generation group's rows over their seeds, with their intervals;
- `verdict.py`: method against method, yes / no / inconclusive;
- `sources.py`: where the numbers came from (code, the text choices were made on);
- `tables.py`: the Table 3 mirror (Rich, Markdown), the CSV, its DataFrame (`to_frame`) and the JSON;
- `generation_tables.py`, `verdict_tables.py`: the generation table and the verdict's tables (Rich, Markdown);
- `figure3.py`, `figure5.py`: the figures;
- `html.py`: the whole report as one self-contained HTML page;
- `compare.py`: two result folders side by side (`cee-bench compare`).

What makes the table one a reviewer can trust (docs/DESIGN.md, "Numbers come with their noise"):
- records that differ in backbone, preset, pooling, device, dtype, code, data limits or stage settings never share a
  cell:
  they land in separate tables (with a one-line warning) or are selected with `--filter`;
- a cell aggregates the seeds of one (task, method, operating point): mean, seed sd, and a 95% two-level paired
  bootstrap interval over seeds and examples (`cee_bench.intervals`), plus Δ vs the full model and vs the method's
  own top layer with their paired intervals;
- a task whose full model is a constant predictor is flagged degenerate and left out of the averages;
- an operating point whose target was not met on held-out train is shown as "not reached", never under the
  target's name; averages run only over the tasks every row has;
- the verdict states the paper's comparison, method against method, as yes, no or inconclusive.
Generation rows get the same grouping, seed aggregation, intervals (from their per-example ROUGE-L, BERT-F and exit
layers) and verdict.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cee_bench.intervals import DEFAULT_RESAMPLES
from cee_bench.report.cells import Report, summarise
from cee_bench.report.generation_cells import generation_cells
from cee_bench.report.grouping import group_records
from cee_bench.report.tables import table3, to_frame
from cee_bench.report.verdict import verdict_rows

__all__ = ["FORMATS", "Report", "build_report", "degenerate_tasks", "generation_rows", "render", "to_frame",
           "verdict_methods"]

FORMATS = ("table", "csv", "markdown", "html", "json")


def build_report(records: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES) -> Report:
    groups, warnings = group_records(records)
    tasks = [summarise(g, resamples) for g in groups]
    generation_groups, generation_warnings = group_records(records, "generation")
    generation = [generation_cells(g, resamples) for g in generation_groups]
    verdict = [row for i, t in enumerate(tasks, 1) for row in verdict_rows(t, [c for x in t for c in x.cells], i)]
    verdict += [row for i, t in enumerate(generation, 1) for row in verdict_rows(t, [], i)]
    return Report(groups, tasks, warnings + generation_warnings, [table3(g, t) for g, t in zip(groups, tasks)],
                  [[{**row, "table": i} for t in g for row in t.cells] for i, g in enumerate(generation, 1)],
                  generation, verdict)


def generation_rows(records: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES) -> list[dict[str, Any]]:
    """The generation records' rows, every table's, numbered by table: per (task, method) its named operating points
    (e.g. `ltt`, `full`) and its curve points (operating_point = "curve"), each over its seeds — threshold, rouge_l,
    bert_f, mean_layers_per_token, saved_layers, speedup_measured, tokens_per_s, alpha (ConsistentEE), fallback (the
    `ltt` point is the full model because Learn-then-Test found no safe candidate), their seeds' spread and their
    two-level intervals."""
    return [row for rows in build_report(records, resamples).generation for row in rows]


def degenerate_tasks(records: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES) -> list[tuple[str, str]]:
    """(task, why) of every task whose full model is a constant predictor, in the records' tables (what `run` says
    at its end)."""
    found = {}
    for group in group_records(records)[0]:
        for task in summarise(group, resamples):
            if task.degenerate:
                found.setdefault(task.evidence.task, task.degenerate)
    return sorted(found.items())


def verdict_methods(report: Report, wanted: str) -> list[dict[str, Any]]:
    """The verdict's rows whose challenger is one of `wanted` ("all", or method names separated by commas), refusing a
    method that is unknown or has no records here (a verdict about nothing would read as a verdict)."""
    from cee_bench.errors import UserError
    from cee_bench.registry import method_names

    if wanted.strip() == "all":
        return report.verdict
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    if not names:
        raise UserError("--verdict expects 'all' or method names separated by commas")
    known = set(method_names()) | set(method_names("generation"))
    present = {r["challenger"] for r in report.verdict}
    for name in names:
        if name not in known:
            raise UserError(f"--verdict: unknown method '{name}'; known methods: {', '.join(sorted(known))}")
        if name not in present:
            raise UserError(f"--verdict: no records of method '{name}' to compare (after --filter); run it first")
    return [r for r in report.verdict if r["challenger"] in names]


def render(report: Report, records: list[dict[str, Any]], fmt: str, *, terminal: bool = False,
           verdict: list[dict[str, Any]] | None = None) -> str:
    """The whole report in one of `FORMATS`, as the text `report` writes to stdout or `--output` (`terminal`: the
    table format with a terminal's colours and width). `verdict`: only these verdict rows (`report --verdict`),
    instead of the tables and the whole verdict."""
    from cee_bench.report import generation_tables, html, tables, verdict_tables

    rows = report.verdict if verdict is None else verdict
    if fmt == "json":
        return tables.to_json(report if verdict is None else replace(report, verdict=verdict),
                              verdict_only=verdict is not None)
    if fmt == "csv":
        if verdict is not None:
            return tables.to_csv(verdict, tables.VERDICT_COLUMNS)
        return tables.to_csv(report.rows + [row for rows in report.generation for row in rows])
    if fmt == "markdown":
        sections = [] if verdict is not None else ([tables.markdown(report)] if report.groups else []) + [
            generation_tables.generation_markdown(rows) for rows in report.generation]
        return "\n".join(sections + ([verdict_tables.verdict_markdown(rows)] if rows else []))
    if fmt == "html":
        return html.report_page(report if verdict is None else replace(report, verdict=verdict), records)
    shown = [] if verdict is not None else [*tables.rich_tables(report),
                                            *map(generation_tables.generation_rich_table, report.generation)]
    return tables.rich_text([*shown, *verdict_tables.verdict_rich(rows)], terminal)
