"""The committed reference table and the README's reference section are what `make reference` (the report) writes
from the committed records: never pasted, never stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from cee_bench import report as rep
from cee_bench.results import load_results

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "reference-verdict"


def _readme_section():
    spec = importlib.util.spec_from_file_location("readme_section", ROOT / "scripts" / "readme_section.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> tuple[Any, list[dict[str, Any]]]:
    if not (ROOT / "results" / "REFERENCE.md").is_file():
        pytest.skip("no committed reference table")
    records = load_results(ROOT / "results")
    return rep.build_report(records), records


def test_results_reference_md_is_the_reports_markdown(reference):
    built, records = reference
    expected = rep.render(built, records, "markdown")
    assert (ROOT / "results" / "REFERENCE.md").read_text() == expected, "run `make reference` and commit the result"
    assert "$(BIN)/cee-bench report --results-dir results --format markdown --output results/REFERENCE.md" in \
        (ROOT / "Makefile").read_text()


def test_readme_verdict_is_the_reports_verdict(reference):
    built, records = reference
    expected = rep.render(built, records, "markdown", verdict=rep.verdict_methods(built, "consistentee"))
    assert _readme_section().section(README.read_text(), SECTION) == expected.rstrip("\n") + "\n", \
        "run `make reference` and commit the README"
    assert f"--verdict consistentee --format markdown | $(BIN)/python scripts/readme_section.py {SECTION} README.md" \
        in (ROOT / "Makefile").read_text()


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table in `text`: (header cells, body rows' cells)."""
    found: list[tuple[list[str], list[list[str]]]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("|---"):
            body = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                body.append([c.strip() for c in row.strip("|").split(" | ")])
            found.append(([c.strip() for c in line.strip("|").split(" | ")], body))
    return found


def test_readme_example_row_is_a_row_of_the_reference_table():
    """"Reading one row" quotes cells of the committed table: each must be that row's cell under that column."""
    if not (ROOT / "results" / "REFERENCE.md").is_file():
        pytest.skip("no committed reference table")
    reading = README.read_text().split("## Reading one row", 1)[1].split("\n## ", 1)[0]
    (header, rows), = _tables(reading)
    table = {(h, row[0]): cell for head, body in _tables((ROOT / "results" / "REFERENCE.md").read_text())
             for row in body for h, cell in zip(head, row)}
    for row in rows:
        for column, cell in zip(header[1:], row[1:]):
            assert table.get((column, row[0])) == cell, f"README's {row[0]} / {column}: run `make reference`"
