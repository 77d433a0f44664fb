"""The report's tables: the Table 3 mirror (Rich, Markdown), and the CSV, DataFrame and JSON of every row, both kinds;
the generation table is `generation_tables`, the verdict's `verdict_tables`, which share the helpers here.

An operating point whose target was not met on held-out train is shown as "not reached", never under the target's
name; averages run only over the tasks every row has and that are not degenerate; a Learn-then-Test point that found
no safe candidate reads "fallback: full depth", either kind, and one that could not be computed says why.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from rich.console import Console
from rich.table import Table

from cee_bench.report.cells import FALLBACK, LTT_POINT, NO_LOG, NOISE, Report, TaskCells, op_label, shown
from cee_bench.report.evidence import BOTH, EXAMPLES, SEEDS
from cee_bench.report.grouping import TABLE_KEYS, TASK_KEYS, Group, method_order, op_order
from cee_bench.report.sources import code_text, split_words
from cee_bench.report.verdict import headline

if TYPE_CHECKING:
    import pandas

METRIC_SHORT = {"f1": "F1", "accuracy": "acc"}
CSV_COLUMNS = ("kind", "table", "task", "method", "method_display", "operating_point", "label", *TABLE_KEYS,
               *TASK_KEYS, "split", "selected_on", "metric", "num_layers", "seeds", "seed_list", "threshold", "met",
               "met_seeds", "fallback_seeds", "converged", "collapsed", "degenerate", "degenerate_reason",
               "constant_predictor",
               "one_class_share", "constant_score", "constant_layers", "static_depth", "score", "score_mean",
               "score_sd", "score_ci_low", "score_ci_high", "interval_levels", "saved_layers", "saved_layers_sd",
               "saved_layers_ci_low", "saved_layers_ci_high", "delta_vs_full", "delta_ci_low", "delta_ci_high",
               "within_noise", "top_layer_score", "top_layer_ci_low", "top_layer_ci_high", "delta_vs_top",
               "delta_top_ci_low", "delta_top_ci_high", "within_noise_top", "bootstrap_resamples", "interval_note",
               "guarantee_metric", "guarantee_reference", "guarantee_split", "guarantee_confidence",
               "guarantee_void", "guarantee_empty", "mean_exit_layer", "layer_speedup",
               *(name.format(b=b) for b in ("b1", "b32") for name in (
                   "speedup_wall_{b}", "speedup_{b}_ci_low", "speedup_{b}_ci_high", "speedup_{b}_levels",
                   "realised_fraction_{b}", "realised_noise_{b}", "exit_mismatch_{b}", "peak_memory_mb_{b}")),
               "latency_ms_b1", "full_latency_ms_b1", "latency_p50_ms_b1", "latency_p90_ms_b1",
               "latency_p99_ms_b1", "full_latency_p50_ms_b1", "full_latency_p90_ms_b1", "full_latency_p99_ms_b1",
               "real_vs_simulated_agreement", "reference_score", "reference_source", "rouge_l", "rouge_l_ci_low",
               "rouge_l_ci_high", "bert_f", "bert_f_ci_low", "bert_f_ci_high", "mean_layers_per_token",
               "speedup_measured", "tokens_per_s")
VERDICT_COLUMNS = ("kind", "table", "task", "comparison", "challenger", "challenger_display", "against",
                   "against_display", "measure", "measure_label", "challenger_value", "against_value", "difference",
                   "ci_low", "ci_high", "interval_levels", "verdict", "reason")
WARNING = "⚠"


# ---------------------------------------------------------------- the Table 3 mirror

@dataclass
class Table3:
    """One rendered table: title, header, body and the notes under it. Each line is the row label, then six
    columns per task (score, Δ vs full, Δ vs own top layer, top layer, layers, speed-up), then the two averages."""

    title: str
    header: list[str]
    body: list[list[str]]
    notes: list[str]

    PER_TASK: ClassVar[int] = 6

    def stacked(self) -> tuple[list[str], list[list[str]]]:
        """Header and body with each task's six columns stacked three by three (score over Δ over Δ top; top layer
        over layers over speed-up), so that three tasks fit a terminal."""
        def stack(line: list[str], marks: tuple[str, ...]) -> list[str]:
            cells, out = line[1:-2], []
            for i in range(0, len(cells), self.PER_TASK):
                group = cells[i:i + self.PER_TASK]
                for part, mark in ((group[:3], marks[:3]), (group[3:], marks[3:])):
                    out.append("\n".join(m + v for v, m in zip(part, mark) if v and v != "–") or "–")
            return [line[0], *out, *line[-2:]]

        header = [self.header[0]]
        for i in range(1, len(self.header) - 2, self.PER_TASK):
            group = self.header[i:i + self.PER_TASK]
            header += [f"{group[0]}\nΔ full · Δ top", "top layer\nlayers · ×b1/b32"]
        return header + self.header[-2:], [stack(line, ("", "Δ ", "Δtop ", "top ", "", "×")) for line in self.body]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _saving(x: float) -> str:
    """Saved layers as Table 3 shows them (−53%); nothing saved is 0%, not −0%."""
    return f"−{100 * x:.0f}%" if round(100 * x) else "0%"


def half_width(low: float | None, high: float | None) -> float | None:
    """Half an interval's width, the ± a table shows (None without both bounds)."""
    return None if low is None or high is None else (high - low) / 2


def signed_points(x: float) -> str:
    """A fraction as signed points, with a true minus (−1.5, +0.3)."""
    return f"{100 * x:+.1f}".replace("-", "−")


def _score_text(cell: dict[str, Any]) -> str:
    text = _pct(cell["score_mean"])
    half = half_width(cell["score_ci_low"], cell["score_ci_high"])
    text += f" ± {100 * half:.1f}" if half is not None else "†"
    if cell["score_sd"] is not None:
        text += f" (sd {100 * cell['score_sd']:.1f})"
    text += ("‡" if cell["converged"] is False else "") + ("⊘" if cell.get("collapsed") else "")
    if cell["method"] == "full" and cell.get("degenerate"):
        return f"{text} {WARNING} degenerate"
    return text + (" ◇" if cell.get("constant_predictor") and cell["method"] != "full" else "")


def _delta_text(value: float | None, low: float | None, high: float | None, within: bool | None,
                mark: str = "†") -> str:
    if value is None:
        return "–"
    half = half_width(low, high)
    if half is None:
        return signed_points(value) + mark
    return signed_points(value) + f" ± {100 * half:.1f}" + (" (within noise)" if within else "")


def _top_text(cell: dict[str, Any]) -> str:
    if cell.get("top_layer_score") is None:
        return "–"
    half = half_width(cell.get("top_layer_ci_low"), cell.get("top_layer_ci_high"))
    return _pct(cell["top_layer_score"]) + (f" ± {100 * half:.1f}" if half is not None else "")


def _layers_text(cell: dict[str, Any]) -> str:
    if cell["fallback_seeds"] == cell["seeds"]:
        return FALLBACK
    text = _saving(cell["saved_layers"])
    if cell["saved_layers"] or cell["saved_layers_sd"]:  # else the full depth on every example and seed: no spread
        half = half_width(cell["saved_layers_ci_low"], cell["saved_layers_ci_high"])
        text += f" ± {100 * half:.0f}" if half is not None else ""
        if cell["saved_layers_sd"] is not None:
            text += f" (sd {100 * cell['saved_layers_sd']:.0f})"
    if cell["fallback_seeds"]:
        text += f" ({FALLBACK} in {cell['fallback_seeds']}/{cell['seeds']} seeds)"
    if cell.get("static_depth"):
        text += f" (static: all exit at layer {cell['static_depth']})"
    return text


def _speed_one(cell: dict[str, Any], batch: str) -> str:
    value = cell.get(f"speedup_wall_{batch}")
    if value is None:
        return "–"
    half = half_width(cell.get(f"speedup_{batch}_ci_low"), cell.get(f"speedup_{batch}_ci_high"))
    text = f"{value:.2f}" + (f" ± {half:.2f}" if half is not None else "")
    return text + (" (noise)" if cell.get(f"realised_noise_{batch}") else "")


def _speed_text(cell: dict[str, Any]) -> str:
    b1, b32 = cell.get("speedup_wall_b1"), cell.get("speedup_wall_b32")
    return "–" if b1 is None and b32 is None else "/".join(_speed_one(cell, b) for b in ("b1", "b32"))


def _cells_text(cell: dict[str, Any] | None) -> list[str]:
    if cell is None:
        return ["–"] * Table3.PER_TASK
    if cell.get("guarantee_empty"):
        return [f"empty: {cell['guarantee_empty']}"] + ["–"] * (Table3.PER_TASK - 1)
    if not shown(cell):
        met = f" ({cell['met_seeds']}/{cell['seeds']} seeds met)" if cell["met_seeds"] else ""
        return [f"not reached{met}", "–", "–", _top_text(cell), "–", "–"]
    return [_score_text(cell),
            _delta_text(cell["delta_vs_full"], cell["delta_ci_low"], cell["delta_ci_high"], cell["within_noise"]),
            _delta_text(cell.get("delta_vs_top"), cell.get("delta_top_ci_low"), cell.get("delta_top_ci_high"),
                        cell.get("within_noise_top"), "§") if cell["method"] != "full" else "–",
            _top_text(cell), _layers_text(cell), _speed_text(cell)]


def _rows(cells: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(label, method, op) of each row: the full model, then per operating point every method in registry order;
    a "★ no loss" row only for a method that reached it somewhere."""
    order = method_order()
    methods = sorted({c["method"] for c in cells}, key=lambda m: (order.get(m, len(order)), m))
    ops = sorted({c["operating_point"] for c in cells if c["method"] != "full"}, key=op_order)
    display = {c["method"]: c["method_display"] for c in cells}
    rows = [(display["full"], "full", "")] if "full" in methods else []
    for op in ops:
        for method in methods:
            mine = [c for c in cells if c["method"] == method and c["operating_point"] == op]
            if method == "full" or not mine or (op == "no_loss" and not any(c["met"] for c in mine)):
                continue
            rows.append((f"{display[method]} ({op_label(op, mine)})", method, op))
    return rows


def _lookup(cells: list[dict[str, Any]], task: str, method: str, op: str) -> dict[str, Any] | None:
    return next((c for c in cells if c["task"] == task and c["method"] == method
                 and (method == "full" or c["operating_point"] == op)), None)


def table3(group: Group, tasks: list[TaskCells]) -> Table3:
    """Header, body and notes of the Table 3 mirror of one group."""
    cells = [c for t in tasks for c in t.cells]
    names = group.tasks
    metric = {t: next(c["metric"] for c in cells if c["task"] == t) for t in names}
    header = ["Method"]
    for t in names:
        header += [f"{t} {METRIC_SHORT.get(metric[t], metric[t])}", f"{t} Δ", f"{t} Δ top", f"{t} top layer",
                   f"{t} layers", f"{t} ×b1/b32"]
    header += ["Avg score", "Avg layers"]
    rows = _rows(cells)
    grid = {(label, t): _lookup(cells, t, method, op) for label, method, op in rows for t in names}
    degenerate = {t.evidence.task for t in tasks if t.degenerate}
    common = [t for t in names if all(grid[(label, t)] is not None for label, _, _ in rows)]
    averaged = [t for t in common if t not in degenerate]
    body = []
    for label, _, _ in rows:
        line = [label]
        for t in names:
            line += _cells_text(grid[(label, t)])
        avg = [grid[(label, t)] for t in averaged]
        if avg and all(shown(c) for c in avg):
            line += [_pct(np.mean([c["score_mean"] for c in avg])),
                     _saving(float(np.mean([c["saved_layers"] for c in avg])))]
        else:
            line += ["–", "–"]
        body.append(line)
    return Table3(_title(group, cells), header, body, _notes(group, tasks, common, averaged))


def _title(group: Group, cells: list[dict[str, Any]]) -> str:
    f = group.fields
    model = f" (model {f['model']})" if f["model"] not in (None, f["backbone"]) else ""
    counts = sorted({c["seeds"] for c in cells})
    seeds = sorted({s for c in cells for s in c["seed_list"].split(";")}, key=lambda s: (len(s), s))
    seed_text = (f"{counts[0]} seed{'s' if counts[0] > 1 else ''} ({', '.join(seeds)})" if len(counts) == 1
                 else f"{counts[0]}–{counts[-1]} seeds per cell ({', '.join(seeds)})")
    splits = ", ".join(sorted({str(c["split"]) for c in cells if c.get("split")}))
    chosen = ", ".join(sorted({str(c["selected_on"]) for c in cells if c.get("selected_on")}))
    return (f"Table 3 mirror — {f['backbone']}{model}, preset {f['preset']}, pooling {f['pooling']}, device "
            f"{f['device']}, dtype {f['dtype']}; {seed_text}; scores on {splits}, operating points chosen on "
            f"{chosen}; {code_text(group.records)}")


def interval_note(levels: set[str], resamples: list[int]) -> str:
    """What the ± of a table covers, from the levels its intervals reached."""
    counted = f"{'/'.join(map(str, resamples))} resamples" if resamples else "none computed here, see †"
    parts = [f"± = half-width of the 95% two-level paired-bootstrap interval ({counted}; the same draws of seeds "
             "and examples for every method of a task)"]
    if BOTH in levels:
        parts.append("over seeds and dev examples: each resample draws the seeds, then the examples, and averages "
                     "the drawn seeds; the seed level is widened for few seeds (×√(S/(S−1))·t/z, 2.7 at 3 seeds), "
                     "so it is about a t-interval over the seeds plus the examples' noise")
    if EXAMPLES in levels:
        parts.append("with one seed the interval covers the dev examples only: retraining noise is not in it")
    if SEEDS in levels:
        parts.append("cells without per-example logs: over the seeds only")
    return "; ".join(parts) + ". sd = spread over seeds."


def _notes(group: Group, tasks: list[TaskCells], common: list[str], averaged: list[str]) -> list[str]:
    cells = [c for t in tasks for c in t.cells]
    resamples = sorted({c["bootstrap_resamples"] for c in cells if c.get("bootstrap_resamples")})
    judged = [c for c in cells if c["within_noise"] is not None and shown(c)]
    notes = [interval_note({c["interval_levels"] for c in cells if c.get("interval_levels")}, resamples)
             + " Δ = score − the full model's (same seed where it exists), points; Δ top = score − the method's own "
             "top layer (its training budget apart from its exits); \"within noise\" = the interval contains 0. "
             "The full bounds are in the CSV.",
             (f"within noise: {sum(bool(c['within_noise']) for c in judged)} of {len(judged)} cells shown with a Δ "
              "interval." if judged else "within noise: no cell shown has a Δ interval.")]
    for t in tasks:
        if t.degenerate:
            notes.append(f"{WARNING} {t.evidence.task} is {t.degenerate}: every row's numbers there are a constant "
                         "predictor's, so it is left out of Avg and of the verdict's aggregate.")
    if any(c.get("constant_predictor") and c["method"] != "full" and shown(c) for c in cells):
        notes.append("◇ a constant predictor: the cell answers one class on ≥ 95% of the dev rows or is not above "
                     "the best constant predictor (majority class; all-positive for F1).")
    layers = sorted({(c["task"], c["method_display"], c["constant_layers"]) for c in cells
                     if c.get("constant_layers") and c["method"] != "full"})
    if layers:
        notes.append("exit layers that are constant predictors used alone: "
                     + "; ".join(f"{task} {name}: {text.replace(';', ', ')}" for task, name, text in layers) + ".")
    notes.append("not reached = no threshold met the target on held-out train (the CSV keeps the best point, "
                 "met=false); a ★ no loss row appears only for a method that reached it.")
    left = [t for t in common if t not in averaged]
    notes.append(f"Avg over {', '.join(averaged)} (the tasks every row has"
                 + (f"; {', '.join(left)} left out: degenerate" if left else "") + "); a row with a cell not reached "
                 "gets –." if averaged else "Avg: no task is common to every row and not degenerate, so no average.")
    notes += _guarantee_notes(cells)
    notes += _speed_notes(cells)
    notes += _selection_notes(group, tasks)
    if any(c.get("static_depth") for c in cells):
        notes.append("static: every example of every seed exits at that one layer: the point is a shallower static "
                     "model, not an adaptive rule (the verdict's static-depth control compares the whole curves).")
    if any(c["interval_note"] == NO_LOG and c.get("interval_levels") is None for c in cells):
        notes.append("† no per-example predictions in the record (written before per-example logs) and one seed: "
                     "no interval, so no within-noise verdict; re-run to get them.")
    if any(c.get("delta_vs_top") is not None and c.get("delta_top_ci_low") is None and shown(c) for c in cells):
        notes.append("§ no per-layer predictions in the record (written before they were kept): the top layer and Δ "
                     "top carry no interval.")
    if any(c["converged"] is False for c in cells):
        notes.append("‡ ConsistentEE: the chosen α's rounds stopped at max_rounds without converging.")
    if any(c.get("collapsed") for c in cells):
        notes.append("⊘ ConsistentEE: the chosen α's model collapsed (≥ 95% of held-out rows exit at one layer, "
                     "within noise of a constant predictor).")
    limits = [f"{t}: " + ", ".join(f"{k}={v}" for k, v in group.limits(t).items()) for t in group.tasks]
    notes.append("data limits: " + "; ".join(limits))
    return notes


def _guarantee_notes(cells: list[dict[str, Any]]) -> list[str]:
    ltt = [c for c in cells if c["operating_point"] == LTT_POINT and c["method"] != "full"]
    if not ltt:
        return []
    notes = ["LTT rows: Learn-then-Test certifies, at the stated confidence, that the chosen point's disagreement "
             "with the reference (the full-model record's predictions, or the method's own top layer where there is "
             "none) is ≤ 1% of the reference's accuracy on the distribution of the named split — which bounds the "
             "accuracy drop, not F1; \"fallback: full depth\" = no threshold passed the test."]
    void = sorted({(c["method_display"], c["guarantee_void"]) for c in ltt if c.get("guarantee_void")})
    if void:
        notes.append("guarantee void: " + "; ".join(f"{name}: {why}" for name, why in void)
                     + " (records from before the calibration slice).")
    empty = sorted({(c["task"], c["method_display"], c["guarantee_empty"]) for c in ltt if c.get("guarantee_empty")})
    if empty:
        notes.append("empty LTT rows: " + "; ".join(f"{t} {name}: {why}" for t, name, why in empty) + ".")
    return notes


def _speed_notes(cells: list[dict[str, Any]]) -> list[str]:
    full = {c["task"]: c for c in cells if c["method"] == "full"}
    levels = sorted({c[f"speedup_{b}_levels"] for c in cells for b in ("b1", "b32") if c.get(f"speedup_{b}_levels")})
    notes = ["×b1/b32 = measured speed-up, full model's wall-clock ÷ early exit's, at batch 1 / batch 32, same process, "
             "interleaved; ± over " + (", ".join(levels) if levels else "nothing: one seed and no per-example times")
             + ". (noise) = realised fraction (measured ÷ layer speed-up) above "
             f"{NOISE:.2f}, which skipping layers cannot give: the ratio is timing noise."]
    if full:
        notes[0] += (" The full model through the same layer-by-layer path: "
                     + "; ".join(f"{t} {_speed_text(c)}" for t, c in sorted(full.items())) + " (the path's own "
                     "overhead).")
    mismatch = [c for c in cells if c.get("exit_mismatch_b1")]
    if mismatch:
        notes.append("batch-1 exits that differ from the simulation: " + "; ".join(
            f"{c['task']} {c['method_display']} {c['operating_point']}: {c['exit_mismatch_b1']}" for c in mismatch))
    return notes


def _selection_notes(group: Group, tasks: list[TaskCells]) -> list[str]:
    """Where selection happens and how that text differs from dev (median words per example, from the data)."""
    parts = []
    for t in tasks:
        words = split_words([r for r in group.records if r["task"] == t.evidence.task])
        if words and words.get("heldout") is not None and words.get("dev") is not None:
            calibration = (f", calibration slice {words['calibration']:g}" if words.get("calibration") is not None
                           else "")
            parts.append(f"{t.evidence.task}: held-out {words['heldout']:g}{calibration}, dev {words['dev']:g}")
    if not parts:
        return []
    own = any("calibration slice" in p for p in parts)
    return ["selection split: operating points, temperatures and convergence are chosen on held-out, a slice of GLUE "
            "train; Learn-then-Test calibrated on " + ("its own slice of train" if own else "held-out too (records "
            "from before the calibration slice)") + "; scores are on dev. Median words per example — "
            + "; ".join(parts) + " (where they differ, every choice was made on other text)."]


# ---------------------------------------------------------------- renderings

def rich_tables(report: Report) -> list[Table]:
    """The Table 3 mirrors, terminal form: each task's six columns stacked three by three."""
    tables = []
    for t in report.tables:
        table = Table(title=t.title, caption="\n".join(t.notes), caption_justify="left", show_lines=True)
        header, body = t.stacked()
        for column in header:  # the row labels wrap (the guarantee's is long) so the numbers keep their width
            table.add_column(column, justify="left" if column == "Method" else "right",
                             max_width=30 if column == "Method" else None)
        for line in body:
            table.add_row(*line)
        tables.append(table)
    return tables


def rich_text(renderables: list[Any], terminal: bool = False) -> str:
    """Rich renderables as text: a terminal's width and colours, or plain text 160 characters wide (logs, pipes and
    files get whole rows)."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=None if terminal else 160,
                      color_system="auto" if terminal else None)
    if terminal:
        console.width = Console().width
    for renderable in renderables:
        console.print(renderable)
    return out.getvalue()


def markdown(report: Report) -> str:
    parts = []
    for t in report.tables:
        lines = [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
        lines += ["| " + " | ".join(line) + " |" for line in t.body]
        lines += [""] + [f"- {note}" for note in t.notes]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def to_frame(rows: list[dict[str, Any]]) -> "pandas.DataFrame":
    """The CSV's rows as a pandas DataFrame, the CSV's columns in its order: for a notebook, without a file in
    between (`to_frame(build_report(records).rows)`)."""
    import pandas

    return pandas.DataFrame([{column: row.get(column) for column in CSV_COLUMNS} for row in rows],
                            columns=list(CSV_COLUMNS))


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_json(report: Report, verdict_only: bool = False) -> str:
    """The report as JSON: every cell (classification and generation), the verdict and the warnings — or only the
    verdict's rows."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            return value.item()
        return value

    def rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: clean(v) for k, v in row.items() if not k.startswith("_")} for row in items]

    if verdict_only:
        return json.dumps(rows(report.verdict), indent=1, ensure_ascii=False) + "\n"
    payload = {"tables": [{"title": t.title, "notes": t.notes} for t in report.tables], "cells": rows(report.rows),
               "generation": rows([r for g in report.generation for r in g]), "verdict": rows(report.verdict),
               "headline": headline(report.verdict), "warnings": report.warnings}
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
