"""The one report of both kinds of task, from stored records: the Table 3 mirror (Rich, CSV, Markdown) and the
accuracy-vs-saved-layers curves (Figure 3) for classification; the generation table and Figure 5 (quality against
measured speed-up) for generation. `build_report` assembles it; each part has its own room:

- `grouping.py`: which records may share a table and a cell;
- `cells.py`: a cell over its seeds, with its intervals and Δ;
- `tables.py`: the tables (Rich, Markdown) and the CSV;
- `figure3.py`, `figure5.py`: the figures.

What makes the table one a reviewer can trust (DESIGN.md, "Numbers come with their noise"):
- records that differ in backbone, preset, pooling, device, dtype, data limits or stage settings never share a cell: they
  land in separate tables (with a one-line warning) or are selected with `--filter`;
- a cell aggregates the seeds of one (task, method, operating point): mean, seed sd, and a 95% paired-bootstrap
  interval over the dev examples (`cee_bench.intervals`), plus Δ vs the full model with its own paired interval;
- an operating point whose target was not met on held-out train is shown as "not reached", never under the
  target's name; averages run only over the tasks every row has.
Generation rows get the same grouping by settings and the same seed aggregation; their records keep per-example exit
layers but no per-example scores, so their one interval is the saved layers'.
"""

from __future__ import annotations

from typing import Any

from cee_bench.intervals import DEFAULT_RESAMPLES
from cee_bench.report.cells import Report, generation_cells, summarise
from cee_bench.report.grouping import group_records
from cee_bench.report.tables import table3

__all__ = ["Report", "build_report", "generation_rows"]


def build_report(records: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES) -> Report:
    groups, warnings = group_records(records)
    cells = [summarise(g, resamples) for g in groups]
    generation, generation_warnings = _generation(records, resamples)
    return Report(groups, cells, warnings + generation_warnings, [table3(g, c) for g, c in zip(groups, cells)],
                  generation)


def generation_rows(records: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES) -> list[dict[str, Any]]:
    """The generation records' rows, every table's, numbered by table: per (task, method) its named operating points
    (e.g. `ltt`, `full`) and its curve points (operating_point = "curve"), each over its seeds — threshold, rouge_l,
    bert_f, mean_layers_per_token, saved_layers, speedup_measured, tokens_per_s, alpha (ConsistentEE), fallback (the
    `ltt` point is the full model because Learn-then-Test found no safe candidate) and their seeds' spread."""
    return [row for rows in _generation(records, resamples)[0] for row in rows]


def _generation(records: list[dict[str, Any]], resamples: int) -> tuple[list[list[dict[str, Any]]], list[str]]:
    groups, warnings = group_records(records, "generation")
    return [[{**row, "table": i} for row in generation_cells(g, resamples)] for i, g in enumerate(groups, 1)], warnings
