"""`cee-bench compare A B`: the report's cells of two folders paired on the same examples, with the report's own
bootstrap, and what cannot be paired named."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from cee_bench.errors import UserError
from cee_bench.intervals import PairedBootstrap, interval, metric_samples
from cee_bench.report.compare import compare_folders, render_comparison
from cee_bench.results import save_result
from test_table3 import L, _data, _full, _record


def _folder(labels, full_preds, pabee_preds, exits, seed=42, **kw):
    return [_full("rte", labels, full_preds, seed=seed, **kw),
            _record("rte", "pabee", labels, {"le1_loss": (pabee_preds, exits, True)}, seed=seed, **kw)]


def test_a_folder_against_itself_changes_nothing():
    labels, preds = _data(n=120)
    records = _folder(labels, preds, preds, np.full(120, 3))
    comparison = compare_folders(records, records, resamples=50)
    assert [r["label"] for r in comparison.rows] == ["full depth", "≤1% loss"]
    for row in comparison.rows:
        assert row["score_delta"] == 0 and row["score_delta_ci_low"] == row["score_delta_ci_high"] == 0
        assert row["score_within_noise"] and row["saved_layers_within_noise"] and row["speedup_b1_ratio"] == 1
    assert comparison.settings == [] and comparison.unpaired == []


def test_the_delta_and_its_interval_are_paired_on_the_same_resamples():
    """B's PABEE is right on 10% more examples and exits one layer later: Δ and its interval are those of the
    per-resample difference of the two folders' scores, on the task's own resamples."""
    n = 200
    labels, preds = _data(n=n, seed=1, accuracy=0.7)
    better = np.where(np.arange(n) < 20, labels, preds)
    a = _folder(labels, preds, preds, np.full(n, 3))
    b = _folder(labels, preds, better, np.full(n, 4), seed=43)
    comparison = compare_folders(a, b, resamples=200, names=("before", "after"))
    pabee = next(r for r in comparison.rows if r["method"] == "PABEE")
    boot = PairedBootstrap("rte", n, 200)
    expected = interval(metric_samples(boot, "accuracy", better, labels) - metric_samples(boot, "accuracy", preds,
                                                                                            labels))
    assert pabee["score_delta"] == pytest.approx(np.mean(better == labels) - np.mean(preds == labels))
    assert (pabee["score_delta_ci_low"], pabee["score_delta_ci_high"]) == pytest.approx(expected)
    assert pabee["saved_layers_delta"] == pytest.approx(-1 / L)
    assert pabee["saved_layers_delta_ci_low"] == pytest.approx(-1 / L) and not pabee["saved_layers_within_noise"]
    assert comparison.settings == ["seeds: 42 → 43"]


def test_cells_on_one_side_other_examples_and_generation_records_are_named():
    labels, preds = _data(n=60)
    a = _folder(labels, preds, preds, np.full(60, 3))
    a.append(_record("rte", "deebert", labels, {"le1_loss": (preds, np.full(60, 2), True)}))
    a.append(_full("sst2", labels, preds))
    b = _folder(labels, preds, preds, np.full(60, 3))
    other_labels, other_preds = _data(n=50)
    b.append(_full("sst2", other_labels, other_preds))
    b.append({"task": "cnndm", "method": "calm", "kind": "generation", "seed": 42})
    comparison = compare_folders(a, b, resamples=20)
    assert "only in A: rte deebert (≤1% loss)" in comparison.unpaired
    assert "sst2: the folders scored different dev examples, so no cell of it is paired" in comparison.unpaired
    assert any(line.startswith("B: 1 generation record(s) not compared") for line in comparison.unpaired)
    assert {r["task"] for r in comparison.rows} == {"rte"}


def test_folders_with_nothing_in_common_or_of_mixed_settings_are_refused():
    labels, preds = _data(n=40)
    with pytest.raises(UserError, match="have no cell in common"):
        compare_folders([_full("rte", labels, preds)], [_full("sst2", labels, preds)], resamples=10)
    mixed = _folder(labels, preds, preds, np.full(40, 3)) + [_full("rte", labels, preds, preset="smoke")]
    with pytest.raises(UserError, match="records of 2 different settings \\(preset\\).*--filter"):
        compare_folders(mixed, mixed, resamples=10)


def test_every_format_renders_the_same_cells():
    labels, preds = _data(n=80)
    records = _folder(labels, preds, preds, np.full(80, 3))
    comparison = compare_folders(records, records, resamples=20)
    rows = list(csv.DictReader(io.StringIO(render_comparison(comparison, "csv"))))
    assert [r["method"] for r in rows] == ["Full", "PABEE"] and rows[1]["score_within_noise"] == "True"
    markdown = render_comparison(comparison, "markdown")
    assert "| rte | PABEE (≤1% loss) |" in markdown and "(within noise)" in markdown
    assert "<table>" in render_comparison(comparison, "html")
    assert "PABEE (≤1% loss)" in render_comparison(comparison, "table")


def test_the_command_writes_to_output_and_refuses_bad_input_writing_nothing(tmp_path, cli):
    labels, preds = _data(n=40)
    for record in _folder(labels, preds, preds, np.full(40, 3)):
        save_result(tmp_path / "a", record)
        save_result(tmp_path / "b", record)
    save_result(tmp_path / "c", _full("sst2", labels, preds))
    code, out, err = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "csv", "--bootstrap", "20",
                         "--output", str(tmp_path / "out.csv"))
    assert code == 0 and out == "" and err.strip() == f"wrote {tmp_path / 'out.csv'}"
    assert (tmp_path / "out.csv").read_text().startswith("task,method,operating_point")
    new = str(tmp_path / "new.md")
    before = sorted(tmp_path.rglob("*"))
    for args, message in [((str(tmp_path / "a"), str(tmp_path / "c"), "--output", new), "have no cell in common"),
                          ((str(tmp_path / "a"), str(tmp_path / "b"), "--format", "pdf", "--output", new),
                           "unknown format 'pdf'"),
                          ((str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path)), "is a folder")]:
        code, out, err = cli("compare", *args)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
        assert sorted(tmp_path.rglob("*")) == before
