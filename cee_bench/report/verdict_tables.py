"""The verdict as tables: per report table, one line per (task, comparison, method, against) and one column per
measure, each cell yes / no / inconclusive with the difference and its interval, and the notes that say how to read
them; in Rich (the terminal) and Markdown, and as the grid the HTML page renders. `verdict.py` decides the verdicts,
this room only draws them: it is its own room so that the Table 3 mirror's module holds only that table and the rows'
exports, each under 500 lines.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cee_bench.report.evidence import SEEDS
from cee_bench.report.tables import signed_points
from cee_bench.report.verdict import AGGREGATE, CURVE, VS_BEST, VS_STATIC, headline


def _verdict_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    if row["difference"] is None:
        return f"{row['verdict']} ({row['reason']})"
    text = f"{row['verdict']} {signed_points(row['difference'])}"
    if row["comparison"] == VS_BEST and row["task"] != AGGREGATE:
        text = f"{text} vs {row['against_display']}"
    if row["ci_low"] is not None:
        text += f" [{signed_points(row['ci_low'])}, {signed_points(row['ci_high'])}]"
    if row["verdict"] == "inconclusive" and row["reason"] and row["reason"] != "interval contains 0":
        text += f" ({row['reason']})"
    return text


def verdict_grid(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]], list[str]]]:
    """Per table: its title, header, body and notes — one line per (task, comparison, challenger, against), one
    column per measure."""
    out = []
    tables = sorted({(r.get("kind") or "classification", r["table"]) for r in rows})
    for kind, table in tables:  # each kind numbers its own tables from 1
        mine = [r for r in rows if (r.get("kind") or "classification", r["table"]) == (kind, table)]
        measures = list(dict.fromkeys(r["measure"] for r in mine if r["measure"] != CURVE)) + [CURVE]
        labels = {r["measure"]: r["measure_label"] for r in mine}
        lines: dict[tuple, dict[str, dict[str, Any]]] = {}
        for r in mine:
            against = "best baseline" if r["comparison"] == VS_BEST else r["against_display"]
            lines.setdefault((r["task"], r["comparison"], r["challenger_display"], against), {})[r["measure"]] = r
        header = ["task", "comparison", "method", "against", *(labels.get(m, m) for m in measures)]
        body = [[task, comparison, challenger, against, *(_verdict_cell(found.get(m)) for m in measures)]
                for (task, comparison, challenger, against), found in lines.items()]
        body.sort(key=lambda line: (line[0] == AGGREGATE, line[0]))
        notes = [f"{kind} table {table}: the paper's claim — "
                 + ("; ".join(headline(mine)) or "no ConsistentEE row against a baseline"),
                 "yes = the 95% two-level interval of the difference (method − against, saved layers in points) lies "
                 "above 0; no = at or below 0 (it does not save more); inconclusive = it contains 0, or the "
                 "comparison cannot speak (why in brackets). Best baseline = the baseline other than the method that "
                 "saves the most on that measure. vs own static depth: the rule's curve against every example exiting "
                 "at one layer k with the same heads; yes = adaptivity earns credit.",
                 "aggregate = the mean of the per-task differences over the tasks that are not degenerate, its "
                 "interval from their resamples."]
        levels: dict[str, set[str]] = {}
        for r in mine:
            if r["interval_levels"] and r["task"] != AGGREGATE:
                levels.setdefault(r["measure_label"], set()).add(r["interval_levels"])
        if levels:
            notes.append("intervals over: " + "; ".join(f"{label}: {', '.join(sorted(found))}"
                                                         for label, found in levels.items()) + ".")
        if any(r["comparison"] == VS_STATIC and r["interval_levels"] == SEEDS for r in mine):
            notes.append("a static-depth control from records without per-layer logs is their per_layer_scores: the "
                         "last grid value's model only where each grid value trains its own (ConsistentEE's α).")
        out.append((f"Verdict — {kind} table {table}", header, body, notes))
    return out


def verdict_rich(rows: list[dict[str, Any]]) -> list[Table]:
    tables = []
    for title, header, body, notes in verdict_grid(rows):
        table = Table(title=title, caption="\n".join(notes), caption_justify="left", show_lines=True)
        for column in header:
            table.add_column(column, overflow="fold")
        for line in body:
            table.add_row(*line)
        tables.append(table)
    return tables


def verdict_markdown(rows: list[dict[str, Any]]) -> str:
    parts = []
    for title, header, body, notes in verdict_grid(rows):
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(line) + " |" for line in body]
        lines += [""] + [f"- {note}" for note in notes]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
