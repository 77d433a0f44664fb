"""The Table 3 mirror from hand-made records: honest operating points, averages over common tasks, seeds, paired
bootstrap intervals and Δ vs the full model, no mixing of settings, and the report command's bad input."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cee_bench import report as rep
from cee_bench.classification.metrics import METRICS, f1_binary
from cee_bench.errors import UserError
from cee_bench.intervals import PairedBootstrap, interval, metric_samples, saved_layer_samples
from cee_bench.report import cells, figure3, grouping, tables
from cee_bench.results import save_result

ROOT = Path(__file__).resolve().parents[2]
L = 6
# what a Learn-then-Test row certified before the calibration slice: its own top layer, on held-out
LTT_OLD = "≤1% acc. loss vs own top layer @90% conf., LTT on heldout"
DISPLAY = {"full": "Full", "pabee": "PABEE", "deebert": "DeeBERT", "consistentee": "ConsistentEE"}


def _point(preds, exits, labels, metric, met=True, threshold=0.5, **extra) -> dict[str, Any]:
    score = METRICS[metric](np.asarray(preds), np.asarray(labels))
    saved = 1 - float(np.mean(exits)) / L
    return {"threshold": threshold, "met_on_selection": met, "score": score, "scores": {metric: score},
            "saved_layers": saved, "mean_exit_layer": float(np.mean(exits)), "layer_speedup": L / float(np.mean(exits)),
            "split": "dev", "selected_on": "heldout", "real_vs_simulated_agreement": 1.0,
            "latency": {"b1": {"speedup_wall": 1.5 if saved else 0.93, "realised_fraction": 0.9,
                               "full_ms_median": 20.0, "ee_ms_median": 13.0},
                        "b32": {"speedup_wall": 1.8 if saved else 1.01, "realised_fraction": 0.95}}, **extra}


def _record(task: str, method: str, labels, points: dict[str, tuple], seed: int = 42, metric: str = "accuracy",
            log: bool = True, preset: str = "cpu", epochs: float = 3, max_seq_length: int = 128,
            **meta) -> dict[str, Any]:
    """points: op → (predictions, exit layers, met[, extra fields])."""
    labels = list(map(int, labels))
    ids = [f"{task}-{i}" for i in range(len(labels))]
    ops = {op: _point(p[0], p[1], labels, metric, p[2], **(p[3] if len(p) > 3 else {})) for op, p in points.items()}
    record = {"task": task, "method": method, "method_display": DISPLAY.get(method, method), "backbone": "tiny",
              "seed": seed, "kind": "classification", "num_layers": L, "metric": metric, "metrics": [metric],
              "config": {"preset": preset, "pooling": "mean", "device": "cpu", "model": "tiny",
                         "max_seq_length": max_seq_length, "max_train_samples": 100, "max_eval_samples": None,
                         "stages": {"train": {"epochs": epochs}}},
              "method_meta": {"grid": [0.5], **meta}, "reference": {"source": "full-model record", "dev": 0.8},
              "operating_points": ops,
              "curve": [{"threshold": t, "score": ops[next(iter(ops))]["score"] - 0.01 * i, "saved_layers": 0.1 * i}
                        for i, t in enumerate((0.1, 0.5, 0.9))]}
    if log:
        record["per_example"] = {"ids": ids, "labels": labels, "points": {
            op: {"predictions": list(map(int, p[0])), "exit_layers": list(map(int, p[1])),
                 "real_exit_layers": list(map(int, p[1]))} for op, p in points.items()}}
    return record


def _data(n=200, seed=0, accuracy=0.8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    preds = np.where(rng.random(n) < accuracy, labels, 1 - labels)
    return labels, preds


def _full(task, labels, preds, seed=42, **kw):
    full = (preds, np.full(len(labels), L), True)
    return _record(task, "full", labels, {"no_loss": full, "le1_loss": full}, seed=seed, **kw)


def _body(report: rep.Report, table: int = 0) -> dict[str, dict[str, str]]:
    t = report.tables[table]
    return {line[0]: dict(zip(t.header, line)) for line in t.body}


def test_a_target_not_reached_is_shown_as_not_reached():
    labels, preds = _data()
    worse = np.where(np.arange(len(labels)) < 60, 1 - labels, labels)
    exits = np.full(len(labels), 3)
    records = [_full("rte", labels, preds),
               _record("rte", "pabee", labels, {"no_loss": (worse, exits, False), "le1_loss": (worse, exits, False)}),
               _record("rte", "deebert", labels, {"no_loss": (preds, exits, True), "le1_loss": (preds, exits, True)})]
    report = rep.build_report(records, resamples=200)
    body = _body(report)
    assert "PABEE (★ no loss)" not in body  # never reached: no ★ row at all, as in the paper
    assert body["PABEE (≤1% loss)"]["rte acc"] == "not reached"
    assert body["PABEE (≤1% loss)"]["rte layers"] == "–" and body["PABEE (≤1% loss)"]["Avg score"] == "–"
    assert body["DeeBERT (★ no loss)"]["rte acc"].startswith(f"{100 * np.mean(preds == labels):.1f} ± ")
    csv_rows = list(csv.DictReader(io.StringIO(tables.to_csv(report.rows))))
    kept = next(r for r in csv_rows if r["method"] == "pabee" and r["operating_point"] == "le1_loss")
    assert kept["met"] == "False" and float(kept["score"]) == pytest.approx(np.mean(worse == labels))


def test_avg_only_over_the_tasks_every_row_has():
    labels, preds = _data()
    good = np.where(np.arange(len(labels)) < 100, labels, preds)
    exits = np.full(len(labels), 2)
    records = [_full("rte", labels, preds), _full("sst2", labels, good),
               _record("rte", "pabee", labels, {"le1_loss": (preds, exits, True)})]
    table = rep.build_report(records, resamples=100).tables[0]
    body = {line[0]: dict(zip(table.header, line)) for line in table.body}
    full_rte = 100 * np.mean(preds == labels)
    assert body["Full"]["Avg score"] == f"{full_rte:.1f}"  # sst2 is not in every row: left out of every Avg
    assert body["PABEE (≤1% loss)"]["Avg score"] == f"{full_rte:.1f}"
    assert body["PABEE (≤1% loss)"]["sst2 acc"] == "–"
    assert any(note.startswith("Avg over rte (the tasks every row has)") for note in table.notes)


def test_bootstrap_interval_covers_the_truth_about_95_percent_of_the_time():
    truth, n, covered = 0.7, 200, 0
    rng = np.random.default_rng(1)
    for draw in range(200):
        labels = rng.integers(0, 2, n)
        preds = np.where(rng.random(n) < truth, labels, 1 - labels)
        low, high = interval(metric_samples(PairedBootstrap(f"draw{draw}", n), "accuracy", preds, labels))
        covered += low <= truth <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_vectorised_metrics_equal_the_scalar_ones_on_each_resample():
    labels, preds = _data(n=57, seed=3, accuracy=0.6)
    exits = np.random.default_rng(2).integers(1, L + 1, 57)
    boot = PairedBootstrap("mrpc", 57, resamples=30, chunk=7)
    idx = np.concatenate(list(boot.indices()))
    assert idx.shape == (30, 57)
    assert np.allclose(metric_samples(boot, "f1", preds, labels), [f1_binary(preds[i], labels[i]) for i in idx])
    assert np.allclose(metric_samples(boot, "accuracy", preds, labels), [np.mean(preds[i] == labels[i]) for i in idx])
    assert np.allclose(saved_layer_samples(boot, exits, L), [1 - exits[i].mean() / L for i in idx])
    # the same resamples for every method of a task (and on every call); another task draws others
    assert np.array_equal(idx, np.concatenate(list(PairedBootstrap("mrpc", 57, 30).indices())))
    assert not np.array_equal(idx, np.concatenate(list(PairedBootstrap("rte", 57, 30).indices())))


def test_seeds_give_mean_sd_interval_and_paired_delta():
    labels, preds = _data()
    n = len(labels)
    records = []
    for k, seed in enumerate((42, 43, 44)):
        full_preds = np.where(np.arange(n) < 10 * k, labels, preds)
        records.append(_full("mrpc", labels, full_preds, seed=seed, metric="f1"))
        same = (full_preds, np.full(n, 4), True)
        much_worse = (1 - labels, np.full(n, 1), True)
        records.append(_record("mrpc", "pabee", labels, {"le1_loss": same}, seed=seed, metric="f1"))
        records.append(_record("mrpc", "deebert", labels, {"le1_loss": much_worse}, seed=seed, metric="f1"))
    report = rep.build_report(records, resamples=300)
    cells = {c["method"]: c for c in report.cells[0]}
    scores = [f1_binary(np.where(np.arange(n) < 10 * k, labels, preds), labels) for k in range(3)]
    assert cells["full"]["seeds"] == 3 and cells["full"]["score_mean"] == pytest.approx(np.mean(scores))
    assert cells["full"]["score_sd"] == pytest.approx(np.std(scores, ddof=1))
    assert cells["full"]["score_ci_low"] < np.mean(scores) < cells["full"]["score_ci_high"]
    assert cells["pabee"]["saved_layers_ci_low"] == pytest.approx(1 / 3) == cells["pabee"]["saved_layers_ci_high"]
    # identical predictions to the full model of the same seed: Δ is exactly 0 on every resample
    assert cells["pabee"]["delta_vs_full"] == 0 and cells["pabee"]["within_noise"] is True
    assert cells["deebert"]["within_noise"] is False and cells["deebert"]["delta_ci_high"] < 0
    table = report.tables[0]
    assert "3 seeds (42, 43, 44)" in table.title and "pooling mean" in table.title and "preset cpu" in table.title
    body = {line[0]: dict(zip(table.header, line)) for line in table.body}
    assert "(within noise)" in body["PABEE (≤1% loss)"]["mrpc Δ"]
    assert "within noise" not in body["DeeBERT (≤1% loss)"]["mrpc Δ"]
    assert "(sd " in body["Full"]["mrpc F1"] and " ± " in body["Full"]["mrpc F1"]
    assert "within noise: 1 of 2 cells shown with a Δ interval." in table.notes
    assert body["PABEE (≤1% loss)"]["mrpc ×b1/b32"] == "1.50 ± 0.00/1.80 ± 0.00"  # the same in both seeds
    assert any("mrpc 0.93 ± 0.00/1.01 ± 0.00" in note for note in table.notes)  # the full model's own layer-by-layer ratio


def test_a_grid_each_seed_chooses_on_held_out_is_not_a_setting():
    """ConsistentEE's `cpu` α grid comes from each seed's held-out rows: seeds with other values share one cell; fixed
    grids that differ still never do."""
    labels, preds = _data()
    point = {"le1_loss": (preds, np.full(len(labels), 3), True)}
    chosen = [_record("rte", "consistentee", labels, point, seed=s, grid=grid,
                      alpha_grid={"rule": "break-even points on held-out", "values": grid})
              for s, grid in ((42, [0.0, 0.33]), (43, [0.0, 0.32]))]
    fixed = [_record("rte", "pabee", labels, point, seed=s, grid=grid) for s, grid in ((42, [1, 2]), (43, [1, 3]))]
    report = rep.build_report([_full("rte", labels, preds), *chosen], resamples=50)
    assert len(report.groups) == 1 and next(c for c in report.cells[0] if c["method"] == "consistentee")["seeds"] == 2
    assert len(rep.build_report([_full("rte", labels, preds), *fixed], resamples=50).groups) == 2


def test_two_configs_never_share_a_cell():
    labels, preds = _data()
    exits = np.full(len(labels), 3)
    point = {"le1_loss": (preds, exits, True)}
    records = [_full("rte", labels, preds), _record("rte", "pabee", labels, point),
               _record("rte", "pabee", labels, point, seed=43, preset="smoke"),  # a smoke run dropped beside
               _record("rte", "pabee", labels, point, seed=44, epochs=1),  # other stage settings
               _record("sst2", "pabee", labels, point, seed=42),
               _record("sst2", "pabee", labels, point, seed=45, max_seq_length=64)]  # other data limits
    report = rep.build_report(records, resamples=50)
    assert len(report.groups) == 4 and len(report.warnings) == 1
    warning = report.warnings[0]
    assert "preset (cpu, smoke)" in warning and "stage settings" in warning and "max_seq_length" in warning
    assert all(c["seeds"] == 1 for cells in report.cells for c in cells)
    sets = [{(r["task"], r["method"], r["seed"]) for r in g.records} for g in report.groups]
    assert sets[0] == {("rte", "full", 42), ("rte", "pabee", 42), ("sst2", "pabee", 42)}
    assert sets[1] == {("rte", "full", 42), ("rte", "pabee", 44)}  # other stages: own table, the same full model
    assert next(c for c in report.cells[1] if c["method"] == "pabee")["delta_ci_low"] is not None
    assert [t.title for t in report.tables][-1].count("preset smoke") == 1
    assert len(grouping.filter_records(records, ["preset=smoke"])) == 1
    assert len(grouping.filter_records(records, ["max_seq_length=64", "task=sst2"])) == 1
    with pytest.raises(UserError, match="unknown key 'nope'; known keys: backbone, model, preset"):
        grouping.filter_records(records, ["nope=1"])


def test_ltt_fallback_unconverged_alpha_and_old_records_are_labelled():
    labels, preds = _data()
    n = len(labels)
    records = [_full("rte", labels, preds),
               _record("rte", "pabee", labels, {"ltt90_le1": (preds, np.full(n, L), False, {"fallback": True})}),
               _record("rte", "consistentee", labels, {"le1_loss": (preds, np.full(n, 3), True, {"threshold": 0.01})},
                       converged={"0.01": False, "0.04": True}),
               _record("rte", "consistentee-pi", labels,
                       {"le1_loss": (preds, np.full(n, 1), True, {"threshold": [0.04, 0.3]})},
                       converged={"0.01": True, "0.04": False}, collapsed={"0.01": False, "0.04": True}),
               _record("rte", "deebert", labels, {"le1_loss": (preds, np.full(n, 3), True)}, log=False)]
    report = rep.build_report(records, resamples=50)
    table = report.tables[0]
    body = {line[0]: dict(zip(table.header, line)) for line in table.body}
    assert body[f"PABEE ({LTT_OLD})"]["rte layers"] == "fallback: full depth"
    assert body["ConsistentEE (≤1% loss)"]["rte acc"].endswith("‡")
    assert body["consistentee-pi (≤1% loss)"]["rte acc"].endswith("‡⊘")  # the flags of the pair's α
    assert any(note.startswith("⊘ ConsistentEE") for note in table.notes)
    old = body["DeeBERT (≤1% loss)"]
    assert old["rte acc"].endswith("†") and old["rte Δ"] == "+0.0†"
    assert any(note.startswith("‡ ConsistentEE") for note in table.notes)
    cee = next(r for r in records if r["method"] == "consistentee")
    cee["curve"][1]["threshold"] = 0.01  # the curve point of the unconverged α is marked in Figure 3
    assert figure3._seed_curves([cee])[2].tolist() == [False, True, False]
    assert any(note.startswith("† no per-example") for note in table.notes)
    deebert = next(c for c in report.cells[0] if c["method"] == "deebert")
    assert deebert["score_ci_low"] is None and deebert["interval_note"] == cells.NO_LOG


def test_plots_one_png_per_task_with_fixed_colours(tmp_path):
    labels, preds = _data()
    records = [_full("mrpc", labels, preds, seed=s, metric="f1") for s in (42, 43)]
    records += [_record("mrpc", "pabee", labels, {"le1_loss": (preds, np.full(len(labels), 3), True)}, seed=s,
                        metric="f1") for s in (42, 43)]
    paths = figure3.plot_curves(rep.build_report(records, resamples=20), tmp_path)
    assert [p.name for p in paths] == ["curve_mrpc.png", "curve_mrpc.svg"] and paths[0].stat().st_size > 1000
    assert figure3.method_colour("pabee") == figure3.method_colour("pabee") != figure3.method_colour("deebert")


def test_committed_records_render_with_intervals():
    """The committed reference records carry per-example logs: the report gives every cell an interval."""
    if not (ROOT / "results").is_dir():
        pytest.skip("no committed results")
    from cee_bench.results import load_results

    report = rep.build_report(load_results(ROOT / "results"), resamples=10)
    text = tables.markdown(report)
    assert " ± " in text and "†" not in text and "Avg over" in text and "seeds" in text


@pytest.mark.parametrize("args, message", [
    (["--filter", "colour=red"], "--filter: unknown key 'colour'; known keys: backbone"),
    (["--filter", "preset"], "--filter expects key=value"),
    (["--filter", "preset=paper"], "match --filter preset=paper"),
    (["--bootstrap", "0"], "--bootstrap must be a positive integer, got '0'"),
    (["--bootstrap", "-5"], "--bootstrap must be a positive integer"),
    (["--bootstrap", "x"], "--bootstrap must be a positive integer, got 'x'"),
    (["--bootstrap", "2.5"], "--bootstrap must be a positive integer"),
])
def test_report_bad_input_is_one_line_exit_2(tmp_path, cli, args, message):
    labels, preds = _data(n=20)
    save_result(tmp_path, _full("rte", labels, preds))
    code, out, err = cli("report", "--results-dir", str(tmp_path), *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_report_command_filters_warns_and_writes_the_csv(tmp_path, cli):
    labels, preds = _data(n=40)
    point = {"le1_loss": (preds, np.full(40, 3), True)}
    for record in (_full("rte", labels, preds), _record("rte", "pabee", labels, point),
                   _record("rte", "pabee", labels, point, seed=43, preset="smoke")):
        save_result(tmp_path, record)
    code, out, err = cli("report", "--results-dir", str(tmp_path), "--format", "csv", "--bootstrap", "50")
    assert code == 0 and len(err.strip().splitlines()) == 1 and "separate tables" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    needed = {"seeds", "score_mean", "score_sd", "score_ci_low", "score_ci_high", "saved_layers_ci_low",
              "saved_layers_ci_high", "met", "delta_vs_full", "delta_ci_low", "delta_ci_high", "within_noise"}
    assert needed <= set(rows[0]) and {r["table"] for r in rows} == {"1", "2"}
    assert {r["bootstrap_resamples"] for r in rows} == {"50"}
    code, out, err = cli("report", "--results-dir", str(tmp_path), "--format", "markdown", "--filter", "preset=cpu")
    assert code == 0 and err == "" and out.count("**Table 3 mirror") == 1 and "PABEE (≤1% loss)" in out


def test_a_fallback_in_some_seeds_is_named_even_at_full_depth():
    """Learn-then-Test fell back in one seed of two and the other passed at full depth too: the cell still says so."""
    labels, preds = _data()
    n = len(labels)
    records = [_full("rte", labels, preds, seed=s) for s in (42, 43)]
    records += [_record("rte", "pabee", labels, {"ltt90_le1": (preds, np.full(n, L), s == 43, {"fallback": s == 42})},
                        seed=s) for s in (42, 43)]
    body = _body(rep.build_report(records, resamples=20))
    assert body[f"PABEE ({LTT_OLD})"]["rte layers"] == "0% (fallback: full depth in 1/2 seeds)"


def test_to_frame_is_the_csv_as_a_dataframe():
    """`report.to_frame`: the CSV's rows and columns, for a notebook, with the numbers as numbers."""
    labels, preds = _data(n=60)
    report = rep.build_report([_full("rte", labels, preds),
                               _record("rte", "pabee", labels, {"le1_loss": (preds, np.full(60, 3), True)})],
                              resamples=20)
    frame = rep.to_frame(report.rows)
    assert list(frame.columns) == list(tables.CSV_COLUMNS) and len(frame) == len(report.rows) == 2
    from_csv = list(csv.DictReader(io.StringIO(tables.to_csv(report.rows))))
    assert frame["method"].tolist() == [r["method"] for r in from_csv]
    assert frame["score_mean"].tolist() == pytest.approx([float(r["score_mean"]) for r in from_csv])
