"""`report --format html`: one self-contained page with the tables, their notes and the figures, and what a person
sees of it in a real browser (headless Chromium, where installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cee_bench import report as rep
from cee_bench.report import html, verdict_tables
from cee_bench.results import save_result
from test_table3 import _data, _full, _record

ROOT = Path(__file__).resolve().parents[2]
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)


def _records():
    labels, preds = _data(n=120)
    return [_full("rte", labels, preds),
            _record("rte", "pabee", labels, {"le1_loss": (preds, np.full(120, 3), True)})]


def test_the_page_holds_the_tables_notes_and_figures_and_fetches_nothing():
    records = _records()
    built = rep.build_report(records, resamples=20)
    page = rep.render(built, records, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<table>") == 1 + len(verdict_tables.verdict_grid(built.verdict))
    assert "Table 3 mirror" in page and "Verdict" in page and "PABEE (≤1% loss)" in page and "paired-bootstrap interval" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 1  # Figure 3 of rte, embedded
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not fetch anything"
    assert "<script" not in page


def test_a_section_of_plain_data_joins_the_page():
    """Another part of the report (e.g. per-task verdicts, a list of dicts) is one more section."""
    records = _records()
    sections = html.report_sections(rep.build_report(records, resamples=20), records)
    verdicts = [{"task": "rte", "claim": "ConsistentEE saves more layers than PABEE", "verdict": "inconclusive"}]
    page = html.page("cee-bench report", [html.dicts_section("Verdicts", verdicts), *sections])
    assert page.index("<h2>Verdicts</h2>") < page.index("Table 3 mirror")
    assert "<td class=\"l\">inconclusive</td>" in page
    assert "<td class=\"l\">&lt;b&gt;</td>" in html.dicts_section("escaped", [{"a": "<b>"}]).body


def test_the_command_writes_the_page_to_output_and_nothing_to_stdout(tmp_path, cli):
    for record in _records():
        save_result(tmp_path / "results", record)
    out_file = tmp_path / "report.html"
    code, out, err = cli("report", "--results-dir", str(tmp_path / "results"), "--format", "html", "--bootstrap", "20",
                         "--output", str(out_file))
    assert code == 0 and out == "" and err.strip() == f"wrote {out_file}"
    assert out_file.read_text().rstrip().endswith("</html>")


@pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install -y chromium)")
def test_chromium_renders_the_page(tmp_path):
    """The screenshot script on the committed reference results: a PNG of the page, not a blank one."""
    from matplotlib.image import imread

    from cee_bench.results import load_results

    records = load_results(ROOT / "results")
    (tmp_path / "report.html").write_text(rep.render(rep.build_report(records, resamples=20), records, "html"))
    done = subprocess.run([str(ROOT / "scripts" / "html_screenshot.sh"), str(tmp_path / "report.html"),
                           str(tmp_path / "report.png"), "1200", "1600"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pixels = imread(tmp_path / "report.png")
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"
