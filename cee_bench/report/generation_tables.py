"""The generation table: per generation group, its named operating points' quality (ROUGE-L, BERT-F with their
intervals and seed sd) against the layers per token, the saved layers and the measured speed-up, with a title that
says what the rows share and notes on fallbacks and intervals; in Rich and Markdown, and as the lines the HTML page
renders. The rows come from `generation_cells`; the curve points are Figure 5's. It is its own room because generation
has its own columns and cells, apart from the Table 3 mirror's, and together they passed 500 lines.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cee_bench.report.cells import FALLBACK, NO_LOG
from cee_bench.report.tables import half_width, interval_note

GENERATION_COLUMNS = ("task", "method", "operating_point", "threshold", "rouge_l", "bert_f", "mean_layers_per_token",
                      "saved_layers", "speedup_measured", "tokens_per_s")
GENERATION_HEADERS = dict(zip(GENERATION_COLUMNS, ("task", "method", "point", "threshold", "Rouge-L", "BERT-F",
                                                   "layers/token", "saved", "speed-up", "tok/s")))


def _generation_text(row: dict[str, Any], column: str) -> str:
    """A generation cell as the tables show it: the mean over seeds, with the half-width of its two-level interval
    where the records give one and, from two seeds on, the seed sd."""
    value = row.get(column)
    if column == "operating_point":
        if row.get("fallback"):
            return f"{value} ({FALLBACK})"
        if row.get("fallback_seeds"):
            return f"{value} ({FALLBACK} in {row['fallback_seeds']}/{row['seeds']} seeds)"
    text = _fmt(value)
    if column in ("rouge_l", "bert_f", "saved_layers"):
        half = half_width(row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high"))
        text += f" ± {half:.3f}" if half is not None else ""
        if row.get(f"{column}_sd") is not None:
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
            f"dtype {first.get('dtype', 'fp32')}; {seed_text}; quality vs measured speed-up (named operating points); "
            f"code {str(first.get('code'))[:12]}")


def _generation_notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    if any(row["fallback_seeds"] for row in rows):
        notes.append(f"{FALLBACK}: Learn-then-Test found no candidate safe on the calibration prompts")
    levels = {row["interval_levels"] for row in rows if row.get("interval_levels")}
    if levels:
        resamples = sorted({row["bootstrap_resamples"] for row in rows if row.get("bootstrap_resamples")})
        notes.append(interval_note(levels, resamples).replace("dev examples", "evaluation prompts")
                     .replace("examples", "prompts").rstrip("."))
    if any(row.get("interval_note") == NO_LOG for row in rows):
        notes.append("rows without ±: records from before per-example scores were kept")
    return notes


def generation_lines(rows: list[dict[str, Any]]) -> tuple[str, list[str], list[list[str]], list[str]]:
    """One generation table (the rows of one group, `generation_cells.generation_cells`): title, header, the named
    operating points' lines (curve points are the figure's) and the notes, which every rendering shows."""
    body = [[_generation_text(r, c) for c in GENERATION_COLUMNS] for r in rows if r["operating_point"] != "curve"]
    return _generation_title(rows), [GENERATION_HEADERS[c] for c in GENERATION_COLUMNS], body, _generation_notes(rows)


def generation_rich_table(rows: list[dict[str, Any]]) -> Table:
    """One generation table, terminal form."""
    title, header, body, notes = generation_lines(rows)
    table = Table(title=title)
    for column, name in zip(GENERATION_COLUMNS, header):
        table.add_column(name, justify="left" if column in ("task", "method", "operating_point") else "right")
    for line in body:
        table.add_row(*line)
    if notes:
        table.caption = "\n".join(notes)
    return table


def generation_markdown(rows: list[dict[str, Any]]) -> str:
    """One generation table, Markdown."""
    title, _, body, notes = generation_lines(rows)
    lines = [f"**{title}**", "", "| " + " | ".join(GENERATION_COLUMNS) + " |", "|" + "---|" * len(GENERATION_COLUMNS)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    if notes:
        lines += [""] + [f"- {note}." for note in notes]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)
