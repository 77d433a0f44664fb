"""The report as one self-contained HTML page (`report --format html`): the same tables and notes as the Markdown, and
the figures embedded as base64 PNG, with inline CSS, so the one file can be mailed, attached to a CI run or opened
offline.

A page is a list of `Section`s, each a heading and its HTML: `report_sections` makes the report's, `page` joins any
list of them. A section of plain data (a list of dicts, e.g. per-task verdicts) is one `dicts_section` call, so
another part of the report adds itself by inserting a section, without touching the page.
"""

from __future__ import annotations

import base64
import html
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from cee_bench.report.cells import Report
from cee_bench.report.figure3 import plot_curves
from cee_bench.report.figure5 import plot_generation
from cee_bench.report.generation_tables import generation_lines
from cee_bench.report.verdict_tables import verdict_grid

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #1b1f24; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.3em; }
.sub { color: #57606a; margin-top: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 0.8em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f6f8fa; position: sticky; top: 0; }
th.l, td.l { text-align: left; }
td:first-child { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
ul.notes { color: #424a53; font-size: 0.92em; padding-left: 1.2em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; }
figure img { max-width: 640px; width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Section:
    """One part of the page: a heading and the HTML under it."""

    title: str
    body: str


def _table(header: Sequence[str], body: Iterable[Sequence[Any]], left: int) -> str:
    """A table whose first `left` columns (labels) align left, the rest (figures) right."""
    def cell(tag: str, i: int, value: Any) -> str:
        align = ' class="l"' if i < left else ""
        return f"<{tag}{align}>{html.escape('' if value is None else str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    rows = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(line)) + "</tr>" for line in body)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _notes(notes: Iterable[str]) -> str:
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f'<ul class="notes">{items}</ul>' if items else ""


def table_section(title: str, header: Sequence[str], body: Iterable[Sequence[Any]], notes: Iterable[str] = (),
                  left: int = 1) -> Section:
    """A table with its notes under it; its first `left` columns are labels."""
    return Section(title, _table(header, body, left) + _notes(notes))


def dicts_section(title: str, rows: list[dict[str, Any]], columns: Sequence[str] | None = None,
                  notes: Iterable[str] = ()) -> Section:
    """Plain data as a table: one row per dict, the columns given or the first dict's keys, every one aligned left."""
    columns = list(columns) if columns is not None else list(rows[0]) if rows else []
    return table_section(title, columns, ([row.get(c) for c in columns] for row in rows), notes, left=len(columns))


def figure_section(title: str, paths: Iterable[Path]) -> Section:
    """PNG files embedded as data URIs, each captioned by its file name."""
    figures = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode("ascii")}"><figcaption>{html.escape(p.name)}</figcaption></figure>'
        for p in paths)
    return Section(title, figures)


def report_sections(report: Report, records: list[dict[str, Any]]) -> list[Section]:
    """The report's tables (each with its notes) and its figures (Figure 3 per task, Figure 5 for generation)."""
    sections = [table_section(t.title, t.header, t.body, t.notes) for t in report.tables]
    sections += [table_section(*generation_lines(rows), left=3) for rows in report.generation]
    sections += [table_section(f"Verdict — {title}", header, body, notes, left=4)
                 for title, header, body, notes in verdict_grid(report.verdict)]
    with tempfile.TemporaryDirectory() as folder:
        written = [*plot_curves(report, Path(folder)), *plot_generation(records, Path(folder))]
        pngs = [path for path in written if path.suffix == ".png"]  # each figure once (they come as SVG too)
        if pngs:
            sections.append(figure_section("Figures: score against saved layers (classification), quality against "
                                           "measured speed-up (generation)", pngs))
    return sections


def page(title: str, sections: Iterable[Section], subtitle: str = "") -> str:
    """One HTML document holding every section, with its CSS inline and nothing fetched from elsewhere."""
    parts = [f"<h2>{html.escape(s.title)}</h2>\n{s.body}" for s in sections]
    sub = f'<p class="sub">{html.escape(subtitle)}</p>' if subtitle else ""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<style>{STYLE}</style>\n</head>\n'
            f"<body>\n<h1>{html.escape(title)}</h1>\n{sub}\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def report_page(report: Report, records: list[dict[str, Any]], subtitle: str = "") -> str:
    return page("cee-bench report", report_sections(report, records), subtitle)
