"""The report's tables, both kinds: the Table 3 mirror (Rich, Markdown) and the generation table, and the CSV of
every cell.

An operating point whose target was not met on held-out train is shown as "not reached", never under the target's
name; averages run only over the tasks every row has; a Learn-then-Test point that found no safe candidate reads
"fallback: full depth", either kind.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from rich.table import Table

from cee_bench.report.cells import FALLBACK, NO_LOG, NO_SCORES, Report, shown
from cee_bench.report.grouping import OP_LABELS, TASK_KEYS, Group, method_order, op_order

METRIC_SHORT = {"f1": "F1", "accuracy": "acc"}
CSV_COLUMNS = ("kind", "table", "task", "method", "method_display", "operating_point", "label", "backbone", "model",
               "preset", "pooling", "device", "dtype", *TASK_KEYS, "split", "selected_on", "metric", "num_layers",
               "seeds", "seed_list", "threshold", "met", "met_seeds", "fallback_seeds", "converged", "collapsed",
               "score", "score_mean",
               "score_sd", "score_ci_low", "score_ci_high", "saved_layers", "saved_layers_sd", "saved_layers_ci_low",
               "saved_layers_ci_high", "delta_vs_full", "delta_ci_low", "delta_ci_high", "within_noise",
               "bootstrap_resamples", "interval_note", "mean_exit_layer", "layer_speedup", "speedup_wall_b1",
               "speedup_wall_b32", "realised_fraction_b1", "realised_fraction_b32", "latency_ms_b1",
               "full_latency_ms_b1", "real_vs_simulated_agreement", "reference_score", "reference_source",
               "rouge_l", "bert_f", "mean_layers_per_token", "speedup_measured", "tokens_per_s")
GENERATION_COLUMNS = ("task", "method", "operating_point", "threshold", "rouge_l", "bert_f", "mean_layers_per_token",
                      "saved_layers", "speedup_measured", "tokens_per_s")
GENERATION_HEADERS = dict(zip(GENERATION_COLUMNS, ("task", "method", "point", "threshold", "Rouge-L", "BERT-F",
                                                   "layers/token", "saved", "speed-up", "tok/s")))


# ---------------------------------------------------------------- the Table 3 mirror

@dataclass
class Table3:
    """One rendered table: title, header, body and the notes under it. Each line is the row label, then four
    columns per task (score, Δ, layers, speed-up), then the two averages."""

    title: str
    header: list[str]
    body: list[list[str]]
    notes: list[str]

    PER_TASK: ClassVar[int] = 4

    def stacked(self) -> tuple[list[str], list[list[str]]]:
        """Header and body with each task's four columns stacked two by two (score over Δ, layers over speed-up),
        so that three tasks fit a terminal."""
        def pairs(line: list[str], marks: tuple[str, str]) -> list[str]:
            cells, out = line[1:-2], []
            for i in range(0, len(cells), self.PER_TASK):
                score, delta, layers, speed = cells[i:i + self.PER_TASK]
                out += ["\n".join(v for v in (score, delta != "–" and marks[0] + delta) if v and v != "–") or "–",
                        "\n".join(v for v in (layers, speed != "–" and marks[1] + speed) if v and v != "–") or "–"]
            return [line[0], *out, *line[-2:]]

        return pairs(self.header, ("", "")), [pairs(line, ("Δ ", "×")) for line in self.body]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _saving(x: float) -> str:
    """Saved layers as Table 3 shows them (−53%); nothing saved is 0%, not −0%."""
    return f"−{100 * x:.0f}%" if round(100 * x) else "0%"


def _half(low: float | None, high: float | None) -> float | None:
    return None if low is None or high is None else (high - low) / 2


def _score_text(cell: dict[str, Any]) -> str:
    text = _pct(cell["score_mean"])
    half = _half(cell["score_ci_low"], cell["score_ci_high"])
    text += f" ± {100 * half:.1f}" if half is not None else "†"
    if cell["score_sd"] is not None:
        text += f" (sd {100 * cell['score_sd']:.1f})"
    return text + ("‡" if cell["converged"] is False else "") + ("§" if cell.get("collapsed") else "")


def _delta_text(cell: dict[str, Any]) -> str:
    if cell["delta_vs_full"] is None:
        return "–"
    text = f"{100 * cell['delta_vs_full']:+.1f}".replace("-", "−")
    half = _half(cell["delta_ci_low"], cell["delta_ci_high"])
    if half is None:
        return text + "†"
    return text + f" ± {100 * half:.1f}" + (" (within noise)" if cell["within_noise"] else "")


def _layers_text(cell: dict[str, Any]) -> str:
    if cell["fallback_seeds"] == cell["seeds"]:
        return FALLBACK
    text = _saving(cell["saved_layers"])
    if cell["saved_layers"] or cell["saved_layers_sd"]:  # else the full depth on every example and seed: no spread
        half = _half(cell["saved_layers_ci_low"], cell["saved_layers_ci_high"])
        text += f" ± {100 * half:.0f}" if half is not None else ""
        if cell["saved_layers_sd"] is not None:
            text += f" (sd {100 * cell['saved_layers_sd']:.0f})"
    if cell["fallback_seeds"]:
        text += f" ({FALLBACK} in {cell['fallback_seeds']}/{cell['seeds']} seeds)"
    return text


def _speed_text(cell: dict[str, Any]) -> str:
    b1, b32 = cell["speedup_wall_b1"], cell["speedup_wall_b32"]
    return "–" if b1 is None and b32 is None else "/".join("–" if v is None else f"{v:.2f}" for v in (b1, b32))


def _cells_text(cell: dict[str, Any] | None) -> list[str]:
    if cell is None:
        return ["–"] * 4
    if not shown(cell):
        met = f" ({cell['met_seeds']}/{cell['seeds']} seeds met)" if cell["met_seeds"] else ""
        return [f"not reached{met}", "–", "–", "–"]
    return [_score_text(cell), _delta_text(cell), _layers_text(cell), _speed_text(cell)]


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
            rows.append((f"{display[method]} ({OP_LABELS.get(op, op)})", method, op))
    return rows


def _lookup(cells: list[dict[str, Any]], task: str, method: str, op: str) -> dict[str, Any] | None:
    return next((c for c in cells if c["task"] == task and c["method"] == method
                 and (method == "full" or c["operating_point"] == op)), None)


def table3(group: Group, cells: list[dict[str, Any]]) -> Table3:
    """Header, body and notes of the Table 3 mirror of one group."""
    tasks = group.tasks
    metric = {t: next(c["metric"] for c in cells if c["task"] == t) for t in tasks}
    header = ["Method"]
    for t in tasks:
        header += [f"{t} {METRIC_SHORT.get(metric[t], metric[t])}", f"{t} Δ", f"{t} layers", f"{t} ×b1/b32"]
    header += ["Avg score", "Avg layers"]
    rows = _rows(cells)
    grid = {(label, t): _lookup(cells, t, method, op) for label, method, op in rows for t in tasks}
    common = [t for t in tasks if all(grid[(label, t)] is not None for label, _, _ in rows)]
    body = []
    for label, _, _ in rows:
        line = [label]
        for t in tasks:
            line += _cells_text(grid[(label, t)])
        avg = [grid[(label, t)] for t in common]
        if avg and all(shown(c) for c in avg):
            line += [_pct(np.mean([c["score_mean"] for c in avg])),
                     _saving(float(np.mean([c["saved_layers"] for c in avg])))]
        else:
            line += ["–", "–"]
        body.append(line)
    return Table3(_title(group, cells), header, body, _notes(group, cells, common, rows))


def _title(group: Group, cells: list[dict[str, Any]]) -> str:
    f = group.fields
    model = f" (model {f['model']})" if f["model"] not in (None, f["backbone"]) else ""
    counts = sorted({c["seeds"] for c in cells})
    seeds = sorted({s for c in cells for s in c["seed_list"].split(";")}, key=lambda s: (len(s), s))
    seed_text = (f"{counts[0]} seed{'s' if counts[0] > 1 else ''} ({', '.join(seeds)})" if len(counts) == 1
                 else f"{counts[0]}–{counts[-1]} seeds per cell ({', '.join(seeds)})")
    splits = ", ".join(sorted({str(c["split"]) for c in cells}))
    chosen = ", ".join(sorted({str(c["selected_on"]) for c in cells}))
    return (f"Table 3 mirror — {f['backbone']}{model}, preset {f['preset']}, pooling {f['pooling']}, device "
            f"{f['device']}, dtype {f['dtype']}; {seed_text}; scores on {splits}, operating points chosen on {chosen}")


def _notes(group: Group, cells: list[dict[str, Any]], common: list[str], rows: list) -> list[str]:
    resamples = sorted({c["bootstrap_resamples"] for c in cells if c["bootstrap_resamples"]})
    judged = [c for c in cells if c["within_noise"] is not None and shown(c)]
    counted = f"{'/'.join(map(str, resamples))} resamples" if resamples else "none computed here, see †"
    notes = [f"± = half-width of the 95% paired-bootstrap interval over the dev examples ({counted}; the same "
             "resamples for every method of a task; with several seeds each resample averages them); "
             "sd = spread over seeds. Δ = score − the full model's (same seed where it exists), points; "
             "\"within noise\" = Δ's interval contains 0. The full CI bounds are in the CSV.",
             (f"within noise: {sum(bool(c['within_noise']) for c in judged)} of {len(judged)} cells shown with a Δ "
              "interval." if judged else "within noise: no cell shown has a Δ interval."),
             "not reached = no threshold met the target on held-out train (the CSV keeps the best point, met=false); "
             "a ★ no loss row appears only for a method that reached it.",
             (f"Avg over {', '.join(common)} (the tasks every row has); a row with a cell not reached gets –."
              if common else "Avg: no task is common to every row, so no average.")]
    if any(c["operating_point"] == "ltt90_le1" for c in cells):
        notes.append("≤1% loss @90% conf., LTT = chosen by Learn-then-Test on held-out train; \"fallback: full "
                     "depth\" = no threshold passed the test.")
    full = {c["task"]: c for c in cells if c["method"] == "full"}
    if full:
        notes.append("×b1/b32 = measured speed-up, full model's wall-clock ÷ early exit's, at batch 1 / batch 32 "
                     "(ratios: ms swing with machine load). The full model through the same layer-by-layer path: "
                     + "; ".join(f"{t} {_speed_text(c)}" for t, c in sorted(full.items()))
                     + " (the path's own overhead).")
    if any(c["interval_note"] == NO_LOG for c in cells):
        notes.append("† no per-example predictions in the record (written before per-example logs): no interval, "
                     "so no within-noise verdict; re-run to get them.")
    if any(c["converged"] is False for c in cells):
        notes.append("‡ ConsistentEE: the chosen α's rounds stopped at max_rounds without converging.")
    if any(c.get("collapsed") for c in cells):
        notes.append("§ ConsistentEE: the chosen α's model collapsed (≥ 95% of held-out rows exit at one layer, "
                     "within noise of a constant predictor).")
    limits = [f"{t}: " + ", ".join(f"{k}={v}" for k, v in group.limits(t).items()) for t in group.tasks]
    notes.append("data limits: " + "; ".join(limits))
    return notes


# ---------------------------------------------------------------- renderings

def rich_tables(report: Report) -> list[Table]:
    """The Table 3 mirrors, terminal form: each task's four columns stacked two by two."""
    tables = []
    for t in report.tables:
        table = Table(title=t.title, caption="\n".join(t.notes), caption_justify="left", show_lines=True)
        header, body = t.stacked()
        for column in header:
            table.add_column(column, justify="left" if column == "Method" else "right", no_wrap=column == "Method")
        for line in body:
            table.add_row(*line)
        tables.append(table)
    return tables


def markdown(report: Report) -> str:
    parts = []
    for t in report.tables:
        lines = [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
        lines += ["| " + " | ".join(line) + " |" for line in t.body]
        lines += [""] + [f"- {note}" for note in t.notes]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------- generation

def _generation_text(row: dict[str, Any], column: str) -> str:
    """A generation cell as the tables show it: the mean over seeds, with the seed sd of the scores (from two seeds
    on) and the half-width of the saved layers' interval where the records give one."""
    value = row.get(column)
    if column == "operating_point":
        if row.get("fallback"):
            return f"{value} ({FALLBACK})"
        if row.get("fallback_seeds"):
            return f"{value} ({FALLBACK} in {row['fallback_seeds']}/{row['seeds']} seeds)"
    text = _fmt(value)
    if column == "saved_layers":
        half = _half(row.get("saved_layers_ci_low"), row.get("saved_layers_ci_high"))
        text += f" ± {half:.3f}" if half is not None else ""
    if column in ("rouge_l", "bert_f", "saved_layers") and row.get(f"{column}_sd") is not None:
        text += f" (sd {row[f'{column}_sd']:.3f})"
    return text


def _generation_title(rows: list[dict[str, Any]]) -> str:
    """What one generation table's rows share: backbone, model, preset, device and their seeds."""
    first = rows[0] if rows else {}
    model = f" (model {first['model']})" if first.get("model") not in (None, first.get("backbone")) else ""
    seeds = sorted({s for r in rows for s in str(r.get("seed_list", "")).split(";") if s}, key=lambda s: (len(s), s))
    counts = sorted({r.get("seeds", 1) for r in rows})
    seed_text = f"{counts[0]}{'–' + str(counts[-1]) if len(counts) > 1 else ''} seed(s) ({', '.join(seeds)})"
    return (f"Generation — {first.get('backbone')}{model}, preset {first.get('preset')}, device {first.get('device')}, "
            f"dtype {first.get('dtype', 'fp32')}; {seed_text}; quality vs measured speed-up (named operating points)")


def _generation_notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    if any(row["fallback_seeds"] for row in rows):
        notes.append(f"{FALLBACK}: Learn-then-Test found no candidate safe on the calibration prompts")
    if any(row.get("saved_layers_ci_low") is not None for row in rows):
        resamples = sorted({row["bootstrap_resamples"] for row in rows if row.get("bootstrap_resamples")})
        notes.append(f"± = half-width of the 95% paired-bootstrap interval over the evaluation prompts "
                     f"({'/'.join(map(str, resamples))} resamples), {NO_SCORES}; sd = spread over seeds")
    return notes


def generation_rich_table(rows: list[dict[str, Any]]) -> Table:
    """One generation table (the rows of one group, `cells.generation_cells`), terminal form."""
    table = Table(title=_generation_title(rows))
    for column in GENERATION_COLUMNS:
        table.add_column(GENERATION_HEADERS[column],
                         justify="left" if column in ("task", "method", "operating_point") else "right")
    for row in rows:
        if row["operating_point"] != "curve":
            table.add_row(*(_generation_text(row, c) for c in GENERATION_COLUMNS))
    notes = _generation_notes(rows)
    if notes:
        table.caption = "\n".join(notes)
    return table


def generation_markdown(rows: list[dict[str, Any]]) -> str:
    """One generation table (the rows of one group), Markdown."""
    lines = [f"**{_generation_title(rows)}**", "", "| " + " | ".join(GENERATION_COLUMNS) + " |",
             "|" + "---|" * len(GENERATION_COLUMNS)]
    lines += ["| " + " | ".join(_generation_text(r, c) for c in GENERATION_COLUMNS) + " |" for r in rows
              if r["operating_point"] != "curve"]
    notes = _generation_notes(rows)
    if notes:
        lines += [""] + [f"- {note}." for note in notes]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)
