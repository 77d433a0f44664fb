"""Two result folders side by side (`cee-bench compare A B`): CPU against GPU, fp32 against bf16, before against after
a change.

The report's cells of each folder (`cells.summarise`: seeds aggregated) are paired by (task, method, operating point).
Where both folders scored the same dev examples, the report's own bootstrap gives paired intervals: a task's
resamples are seeded by its name and number of examples (`cee_bench.intervals`), so both folders' cells are scored on
the very same resampled sets, and B − A is taken resample by resample, for the score and for the saved layers. The
measured speed-up is compared as the ratio B ÷ A of the records' medians, without an interval: the records keep a
median per batch size, not the rounds behind it. What cannot be paired (a cell on one side only, other examples, no
per-example log, generation records, which keep no per-example scores) is named, one line each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cee_bench.errors import UserError
from cee_bench.intervals import interval
from cee_bench.report.cells import shown, summarise
from cee_bench.report.grouping import OP_LABELS, TABLE_KEYS, TASK_KEYS, Group, group_records, method_order, op_order

CSV_COLUMNS = ("task", "method", "operating_point", "label", "seeds_a", "seeds_b", "threshold_a", "threshold_b",
               "reached_a", "reached_b", "score_a", "score_b", "score_delta", "score_delta_ci_low",
               "score_delta_ci_high", "score_within_noise", "saved_layers_a", "saved_layers_b", "saved_layers_delta",
               "saved_layers_delta_ci_low", "saved_layers_delta_ci_high", "saved_layers_within_noise",
               "speedup_wall_b1_a", "speedup_wall_b1_b", "speedup_b1_ratio", "speedup_wall_b32_a",
               "speedup_wall_b32_b", "speedup_b32_ratio", "bootstrap_resamples")
SAMPLES = "_samples"  # a cell's two-level bootstrap samples of the mean over its seeds, by figure


@dataclass
class Comparison:
    """The paired cells of two folders, what differs between the folders' settings, and what could not be paired."""

    names: tuple[str, str]
    rows: list[dict[str, Any]]
    settings: list[str]  # "device: cpu → cuda", one per setting that differs
    unpaired: list[str] = field(default_factory=list)
    resamples: int = 0


def _one_group(records: list[dict[str, Any]], name: str) -> Group | None:
    groups, _ = group_records(records)
    if len(groups) > 1:
        differ = sorted({k for g in groups for k in TABLE_KEYS if g.fields[k] != groups[0].fields[k]}) or ["settings"]
        raise UserError(f"{name} holds records of {len(groups)} different settings ({', '.join(differ)}): select one "
                        "with --filter KEY=VALUE, which applies to both folders")
    return groups[0] if groups else None


def _label(cell: dict[str, Any]) -> str:
    return "full depth" if cell["method"] == "full" else OP_LABELS.get(cell["operating_point"], cell["operating_point"])


def _key(cell: dict[str, Any]) -> tuple[str, str, str]:
    return cell["task"], cell["method"], "" if cell["method"] == "full" else cell["operating_point"]


def _ids(group: Group, task: str) -> list[str] | None:
    return next((list(r["per_example"]["ids"]) for r in group.records if r["task"] == task
                 and (r.get("per_example") or {}).get("ids")), None)


def _settings(a: Group, b: Group) -> list[str]:
    """The settings that differ between the folders: the table keys, each task's data limits and the seeds."""
    lines = [f"{k}: {a.fields[k]} → {b.fields[k]}" for k in TABLE_KEYS if a.fields[k] != b.fields[k]]
    for task in sorted(set(a.tasks) & set(b.tasks)):
        la, lb = a.limits(task), b.limits(task)
        lines += [f"{task} {k}: {la[k]} → {lb[k]}" for k in TASK_KEYS if la[k] != lb[k]]
    seeds = [sorted({r.get("seed") for r in g.records}, key=str) for g in (a, b)]
    if seeds[0] != seeds[1]:
        lines.append(f"seeds: {', '.join(map(str, seeds[0]))} → {', '.join(map(str, seeds[1]))}")
    return lines


def _delta(row: dict[str, Any], name: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    """B − A of one figure, with its paired interval where both cells kept bootstrap samples."""
    field_ = "score_mean" if name == "score" else name
    row[f"{name}_a"], row[f"{name}_b"] = a[field_], b[field_]
    row[f"{name}_delta"] = b[field_] - a[field_]
    row[f"{name}_delta_ci_low"] = row[f"{name}_delta_ci_high"] = row[f"{name}_within_noise"] = None
    if name in a.get(SAMPLES, {}) and name in b.get(SAMPLES, {}):
        low, high = interval(b[SAMPLES][name] - a[SAMPLES][name])
        row[f"{name}_delta_ci_low"], row[f"{name}_delta_ci_high"] = low, high
        row[f"{name}_within_noise"] = low <= 0.0 <= high


def _ratio(b: float | None, a: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else b / a


def _row(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"task": a["task"], "method": a["method_display"], "operating_point": _key(a)[2],
                           "label": _label(a), "seeds_a": a["seed_list"], "seeds_b": b["seed_list"],
                           "threshold_a": a["threshold"], "threshold_b": b["threshold"], "reached_a": shown(a),
                           "reached_b": shown(b), "bootstrap_resamples": a["bootstrap_resamples"]}
    _delta(row, "score", a, b)
    _delta(row, "saved_layers", a, b)
    for batch in ("b1", "b32"):
        row[f"speedup_wall_{batch}_a"], row[f"speedup_wall_{batch}_b"] = a[f"speedup_wall_{batch}"], \
            b[f"speedup_wall_{batch}"]
        row[f"speedup_{batch}_ratio"] = _ratio(b[f"speedup_wall_{batch}"], a[f"speedup_wall_{batch}"])
    return row


def _cells(group: Group, resamples: int, tasks: set[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The report's cells of `tasks`, by key, each with its two-level samples (`SAMPLES`) where its seeds logged their
    examples: the example draws are the task's own in both folders (seeded by the task and its examples), so B − A is
    paired on the examples, while each folder's seeds are drawn on their own."""
    out = {}
    for task in summarise(group, resamples):
        if task.evidence.task not in tasks:
            continue
        for cell in task.cells:
            if cell["method"] == "full":
                score, saved = task.reference, None
            else:
                score, saved = task.methods[cell["method"]].points.get(cell["operating_point"], (None, None))
            drawn = {name: task.evidence.bootstrap(s) for name, s in (("score", score), ("saved_layers", saved))
                     if s is not None and s.examples}
            if cell["method"] == "full" and "score" in drawn:
                drawn["saved_layers"] = np.zeros_like(drawn["score"])  # the full depth saves nothing, on every draw
            out[_key(cell)] = {**cell, SAMPLES: drawn} if drawn else cell
    return out


def compare_folders(a_records: list[dict[str, Any]], b_records: list[dict[str, Any]], resamples: int,
                    names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Pair the classification cells of two folders; a user error when they have no cell in common."""
    unpaired = [f"{name}: {n} generation record(s) not compared (they keep no per-example scores to pair)"
                for name, recs in zip(names, (a_records, b_records))
                if (n := sum(r.get("kind") == "generation" for r in recs))]
    groups = [_one_group(recs, name) for recs, name in zip((a_records, b_records), names)]
    if groups[0] is None or groups[1] is None:
        raise UserError(f"nothing to compare: {' and '.join(n for n, g in zip(names, groups) if g is None)} holds no "
                        "classification record")
    a, b = groups
    same = {task for task in set(a.tasks) & set(b.tasks) if _ids(a, task) == _ids(b, task)}
    unpaired += [f"{task}: the folders scored different dev examples, so no cell of it is paired"
                 for task in sorted(set(a.tasks) & set(b.tasks) - same)]
    cells = [_cells(g, resamples, same) for g in (a, b)]
    common = cells[0].keys() & cells[1].keys()
    for name, side in zip(names, cells):
        unpaired += [f"only in {name}: {task} {method}{f' ({OP_LABELS.get(op, op)})' if op else ''}"
                     for task, method, op in sorted(side.keys() - common)]
    if not common:
        other = sorted(set(a.tasks) & set(b.tasks) - same)
        why = (f"they share {', '.join(other)} but scored different dev examples" if other else
               f"tasks {', '.join(a.tasks)} against {', '.join(b.tasks)}")
        raise UserError(f"{names[0]} and {names[1]} have no cell in common ({why}; a cell is a task, method and "
                        "operating point scored on the same dev examples)")
    order = method_order()
    keys = sorted(common, key=lambda k: (k[0], order.get(k[1], len(order)), op_order(k[2])))
    unpaired += [f"no per-example log in {name}: {k[0]} {k[1]} ({_label(side[k])}), so no interval"
                 for k in keys for name, side in zip(names, cells) if SAMPLES not in side[k]]
    return Comparison(names, [_row(cells[0][k], cells[1][k]) for k in keys], _settings(a, b), unpaired, resamples)


# ---------------------------------------------------------------- renderings

HEADER = ("task", "method (point)", "score A", "score B", "Δ score", "saved A", "saved B", "Δ saved",
          "×b1 A → B", "×b32 A → B")


def _pct(value: float | None, reached: bool = True) -> str:
    return "–" if value is None else f"{100 * value:.1f}" + ("" if reached else " (not reached)")


def _signed(row: dict[str, Any], name: str) -> str:
    text = f"{100 * row[f'{name}_delta']:+.1f}".replace("-", "−")
    if row[f"{name}_delta_ci_low"] is None:
        return text + "†"
    low, high = (f"{100 * row[f'{name}_delta_ci_{end}']:+.1f}".replace("-", "−") for end in ("low", "high"))
    return f"{text} [{low}, {high}]" + (" (within noise)" if row[f"{name}_within_noise"] else "")


def _speed(row: dict[str, Any], batch: str) -> str:
    a, b, ratio = row[f"speedup_wall_{batch}_a"], row[f"speedup_wall_{batch}_b"], row[f"speedup_{batch}_ratio"]
    if a is None and b is None:
        return "–"
    text = " → ".join("–" if v is None else f"{v:.2f}" for v in (a, b))
    return text + (f" (×{ratio:.2f})" if ratio is not None else "")


def lines(comparison: Comparison) -> tuple[str, list[str], list[list[str]], list[str]]:
    """Title, header, one line per paired cell, and the notes: what every rendering shows."""
    a, b = comparison.names
    body = [[r["task"], r["method"] if r["operating_point"] == "" else f"{r['method']} ({r['label']})",
             _pct(r["score_a"], r["reached_a"]), _pct(r["score_b"], r["reached_b"]), _signed(r, "score"),
             _pct(r["saved_layers_a"]) + "%", _pct(r["saved_layers_b"]) + "%", _signed(r, "saved_layers"),
             _speed(r, "b1"), _speed(r, "b32")]
            for r in comparison.rows]
    judged = [r for r in comparison.rows if r["score_within_noise"] is not None]
    notes = [f"A = {a}; B = {b}. " + ("They differ in " + "; ".join(comparison.settings) + "."
                                      if comparison.settings else "Their settings are the same."),
             f"Δ = B − A in points, with the 95% paired-bootstrap interval over the same dev examples "
             f"({comparison.resamples} resamples, the report's own; several seeds are averaged on each side); "
             "\"within noise\" = the interval contains 0. † = a side has no per-example log, so no interval.",
             f"score: {sum(bool(r['score_within_noise']) for r in judged)} of {len(judged)} paired cells within noise.",
             "×b1 / ×b32 = measured speed-up (full model's wall-clock ÷ early exit's) at batch 1 / 32, A → B, and "
             "their ratio B ÷ A; no interval: the records keep one median per batch size.",
             "(not reached) = the target was not met on held-out train in every seed; the score shown is the best "
             "point's, as the report's CSV keeps it."]
    return f"Comparison — {a} → {b}", list(HEADER), body, notes + [f"unpaired: {u}" for u in comparison.unpaired]


def render_comparison(comparison: Comparison, fmt: str, *, terminal: bool = False) -> str:
    """The comparison in one of the report's formats."""
    title, header, body, notes = lines(comparison)
    if fmt == "json":
        import json

        return json.dumps({"a": comparison.names[0], "b": comparison.names[1], "settings": comparison.settings,
                           "unpaired": comparison.unpaired, "bootstrap_resamples": comparison.resamples,
                           "rows": comparison.rows}, indent=1, default=str) + "\n"
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(comparison.rows)
        return out.getvalue()
    if fmt == "markdown":
        text = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        text += ["| " + " | ".join(line) + " |" for line in body] + [""] + [f"- {note}" for note in notes]
        return "\n".join(text) + "\n"
    if fmt == "html":
        from cee_bench.report.html import page, table_section

        return page("cee-bench comparison", [table_section(title, header, body, notes, left=2)])
    from rich.table import Table

    from cee_bench.report.tables import rich_text

    table = Table(title=title, caption="\n".join(notes), caption_justify="left", show_lines=True)
    for column in header:
        table.add_column(column, justify="left" if column in ("task", "method (point)") else "right")
    for line in body:
        table.add_row(*line)
    return rich_text([table], terminal)

