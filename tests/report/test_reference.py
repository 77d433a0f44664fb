"""The committed reference table is what `make reference` (the report) writes from the committed records: never
pasted, never stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from cee_bench import report as rep
from cee_bench.results import load_results

ROOT = Path(__file__).resolve().parents[2]


def test_results_reference_md_is_the_reports_markdown():
    if not (ROOT / "results" / "REFERENCE.md").is_file():
        pytest.skip("no committed reference table")
    records = load_results(ROOT / "results")
    expected = rep.render(rep.build_report(records), records, "markdown")
    assert (ROOT / "results" / "REFERENCE.md").read_text() == expected, "run `make reference` and commit the result"
    assert "$(BIN)/cee-bench report --results-dir results --format markdown --output results/REFERENCE.md" in \
        (ROOT / "Makefile").read_text()
