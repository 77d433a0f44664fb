"""Issue 19 from hand-made records: the verdict (method against method, yes / no / inconclusive), degenerate tasks,
the guarantee's label, timing intervals and noise, per-seed curves of separately trained grid points, records from
other code, and the report command's verdict and JSON output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cee_bench import report as rep
from cee_bench.classification.metrics import METRICS
from cee_bench.report import figure3, tables, verdict_tables
from cee_bench.report.verdict import CURVE, VS_BASELINE, VS_BEST, VS_STATIC
from cee_bench.results import pack_digits, save_result

L = 6
N = 300
SEEDS = (42, 43, 44)
DISPLAY = {"full": "Full", "pabee": "PABEE", "deebert": "DeeBERT", "consistentee": "ConsistentEE"}


def _labels(seed: int = 0, positive: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).random(N) < positive).astype(int)


def _noisy(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < accuracy, labels, 1 - labels)


def _record(task: str, method: str, labels: np.ndarray, seed: int, points: dict[str, tuple], *,
            metric: str = "accuracy", code: str = "abc", layers: np.ndarray | None = None,
            curve: list[tuple[np.ndarray, np.ndarray]] | None = None, **extra: Any) -> dict[str, Any]:
    """points: op → (predictions, exit layers[, point fields]); curve: per grid value (predictions, exit layers);
    layers: (L, n) every layer's own predictions (the static-depth control)."""
    def point(preds, exits, fields=None):
        score = METRICS[metric](preds, labels)
        return {"threshold": 0.5, "met_on_selection": True, "score": score, "saved_layers": 1 - exits.mean() / L,
                "mean_exit_layer": exits.mean(), "split": "dev", "selected_on": "heldout", **(fields or {})}

    ops = {op: point(*p) for op, p in points.items()}
    curve = curve or [(p[0], p[1]) for p in points.values()]
    layers = layers if layers is not None else np.stack([points[next(iter(points))][0]] * L)
    return {"task": task, "method": method, "method_display": DISPLAY.get(method, method), "backbone": "tiny",
            "seed": seed, "kind": "classification", "num_layers": L, "metric": metric, "metrics": [metric],
            "code": {"fingerprint": code, "commit": "0" * 40, "dirty": False},
            "config": {"preset": "cpu", "pooling": "mean", "device": "cpu", "model": "tiny", "max_seq_length": 64,
                       "max_train_samples": 100, "max_eval_samples": None, "stages": {"train": {"epochs": 1}}},
            "method_meta": {"grid": list(range(len(curve)))}, "operating_points": ops,
            "per_layer_scores": {"dev": [METRICS[metric](p, labels) for p in layers]},
            "curve": [{"threshold": i, **point(p, e)} for i, (p, e) in enumerate(curve)],
            "per_example": {"ids": [str(i) for i in range(N)], "labels": labels.tolist(),
                            "points": {op: {"predictions": p[0].tolist(), "exit_layers": p[1].tolist(),
                                            "top_layer": pack_digits(layers[-1])} for op, p in points.items()},
                            "curve": {"predictions": [pack_digits(p) for p, _ in curve],
                                      "exit_layers": [pack_digits(e) for _, e in curve]},
                            "layers": {"predictions": [pack_digits(p) for p in layers]}},
            **extra}


def _full(task: str, labels: np.ndarray, seed: int, preds: np.ndarray, **kw: Any) -> dict[str, Any]:
    top = (preds, np.full(N, L))
    return _record(task, "full", labels, seed, {"no_loss": top, "le1_loss": top}, **kw)


def _exits(saved: float, seed: int) -> np.ndarray:
    """Exit layers whose mean saves about `saved` of the layers."""
    mean = L * (1 - saved)
    low = int(np.floor(mean))
    return np.where(np.random.default_rng(seed).random(N) < mean - low, low + 1, low).clip(1, L)


def _pair(saved_cee: float, saved_pabee: float, task: str = "rte") -> list[dict[str, Any]]:
    """Full, PABEE and ConsistentEE on 3 seeds, both early exits keeping the full model's predictions, each saving
    its own share of the layers at ≤1% loss, and both curves spanning 0 to that saving."""
    labels, records = _labels(), []
    for seed in SEEDS:
        preds = _noisy(labels, 0.85, seed)
        records.append(_full(task, labels, seed, preds))
        for method, saved in (("pabee", saved_pabee), ("consistentee", saved_cee)):
            exits = _exits(saved, seed + len(method))
            curve = [(preds, np.full(N, L)), (preds, exits), (1 - preds, np.full(N, 1))]
            records.append(_record(task, method, labels, seed, {"le1_loss": (preds, exits)}, curve=curve))
    return records


def _verdict(report: rep.Report, challenger: str, comparison: str, measure: str, task: str = "rte",
             against: str | None = None) -> dict[str, Any]:
    return next(r for r in report.verdict if r["challenger"] == challenger and r["comparison"] == comparison
                and r["measure"] == measure and r["task"] == task and (against is None or r["against"] == against))


def test_verdict_is_no_where_the_baseline_dominates_and_yes_where_consistentee_does():
    report = rep.build_report(_pair(saved_cee=0.10, saved_pabee=0.50), resamples=300)
    for comparison, against in ((VS_BEST, "pabee"), (VS_BASELINE, "pabee")):
        for measure in ("le1_loss", CURVE):
            row = _verdict(report, "consistentee", comparison, measure, against=against)
            assert row["verdict"] == "no" and row["ci_high"] < 0, row
            assert row["interval_levels"] == "seeds and examples"
    assert _verdict(report, "consistentee", VS_BASELINE, "le1_loss")["difference"] == pytest.approx(-0.4, abs=0.03)
    flipped = rep.build_report(_pair(saved_cee=0.50, saved_pabee=0.10), resamples=300)
    assert _verdict(flipped, "consistentee", VS_BEST, "le1_loss")["verdict"] == "yes"
    close = rep.build_report(_pair(saved_cee=0.30, saved_pabee=0.30), resamples=300)
    assert _verdict(close, "consistentee", VS_BEST, "le1_loss")["verdict"] == "inconclusive"
    # the terminal, Markdown, CSV and JSON forms all carry it
    text = verdict_tables.verdict_markdown(report.verdict)
    assert "| rte | vs baseline | ConsistentEE | PABEE | no −" in text and "the paper's claim" in text
    rows = list(csv.DictReader(io.StringIO(tables.to_csv(report.verdict, tables.VERDICT_COLUMNS))))
    assert {r["verdict"] for r in rows} >= {"no"} and set(tables.VERDICT_COLUMNS) == set(rows[0])
    payload = json.loads(tables.to_json(report))
    assert payload["verdict"] and payload["headline"][0].startswith("rte: no")
    assert verdict_tables.verdict_rich(report.verdict)


def test_adaptivity_is_credited_only_where_the_rule_beats_its_own_static_depth():
    """An exit rule whose curve is what a static shallower model gives earns no credit for adaptivity: the same
    predictions at every layer make every static depth as good as the rule, so the rule cannot beat it."""
    report = rep.build_report(_pair(saved_cee=0.10, saved_pabee=0.50), resamples=200)
    row = _verdict(report, "pabee", VS_STATIC, CURVE)
    assert row["verdict"] == "no" and row["ci_high"] <= 0  # its static curve reaches 5/6 saved at no loss


def test_a_constant_predictor_task_is_flagged_and_left_out_of_avg_and_the_aggregate():
    positive = _labels(1, positive=0.7)
    records = _pair(saved_cee=0.5, saved_pabee=0.1, task="rte")
    for seed in SEEDS:  # mrpc: the full model and both exits answer "positive" for (almost) everyone
        preds = np.ones(N, dtype=int)
        preds[:3] = 0
        records.append(_full("mrpc", positive, seed, preds, metric="f1"))
        for method in ("pabee", "consistentee"):
            records.append(_record("mrpc", method, positive, seed, {"le1_loss": (preds, np.full(N, 1))},
                                   metric="f1"))
    report = rep.build_report(records, resamples=200)
    table = report.tables[0]
    body = {line[0]: dict(zip(table.header, line)) for line in table.body}
    assert body["Full"]["mrpc F1"].endswith("⚠ degenerate") and "⚠" not in body["Full"]["rte acc"]
    assert any(n.startswith("⚠ mrpc is degenerate: the full model is a constant predictor") for n in table.notes)
    assert any("Avg over rte (the tasks every row has; mrpc left out: degenerate)" in n for n in table.notes)
    cee = body["ConsistentEE (≤1% loss)"]
    assert cee["Avg layers"] == cee["rte layers"].split(" ")[0] and cee["mrpc F1"].endswith("◇")
    rows = list(csv.DictReader(io.StringIO(tables.to_csv(report.rows))))
    assert {r["degenerate"] for r in rows if r["task"] == "mrpc"} == {"True"}
    assert {r["degenerate"] for r in rows if r["task"] == "rte"} == {"False"}
    mrpc = _verdict(report, "consistentee", VS_BASELINE, "le1_loss", task="mrpc")
    assert mrpc["verdict"] == "inconclusive" and "degenerate" in mrpc["reason"]
    aggregate = _verdict(report, "consistentee", VS_BASELINE, "le1_loss", task="aggregate")
    assert aggregate["reason"].startswith("over rte; left out: mrpc") and aggregate["verdict"] == "yes"
    assert rep.degenerate_tasks(records, resamples=100)[0][0] == "mrpc"


def test_the_guarantee_label_names_metric_reference_split_and_confidence_and_an_empty_one_says_why():
    labels = _labels()
    preds = _noisy(labels, 0.8, 1)
    ltt = {"reference": "full-model record", "split": "calibration", "metric": "accuracy", "epsilon": 0.1,
           "loss": 0.01}
    point = (preds, np.full(N, 4), {"ltt": ltt, "selected_on": "calibration"})
    records = [_full("rte", labels, 42, preds), _record("rte", "pabee", labels, 42, {"ltt90_le1": point}),
               _record("rte", "deebert", labels, 42, {"le1_loss": (preds, np.full(N, 5))},
                       guarantee={**ltt, "empty": "δ = 0.01 × the reference's calibration accuracy 0 = 0 is "
                                                  "outside (0, 1)"})]
    report = rep.build_report(records, resamples=100)
    table = report.tables[0]
    labels_shown = [line[0] for line in table.body]
    assert "PABEE (≤1% acc. loss vs full model @90% conf., LTT on calibration)" in labels_shown
    body = {line[0]: dict(zip(table.header, line)) for line in table.body}
    empty = next(v for k, v in body.items() if k.startswith("DeeBERT (≤1% acc. loss"))
    assert empty["rte acc"].startswith("empty: δ = 0.01 × the reference's calibration accuracy 0")
    assert any(n.startswith("empty LTT rows: rte DeeBERT: δ") for n in table.notes)
    # a record from before the calibration slice: its own top layer, on the held-out rows Right-Tool fitted on
    old = _record("rte", "right-tool", labels, 42, {"ltt90_le1": (preds, np.full(N, 4))},
                  method_meta={"grid": [0], "log": {"calibration": {"split": "heldout"}}})
    table = rep.build_report([records[0], old], resamples=50).tables[0]
    assert "right-tool (≤1% acc. loss vs own top layer @90% conf., LTT on heldout)" in [b[0] for b in table.body]
    assert any("guarantee void: right-tool: its temperatures were fitted on the same heldout rows" in n
               for n in table.notes)


def _timed(saved: float, realised: float, raw: bool) -> dict[str, Any]:
    rng = np.random.default_rng(int(100 * realised))
    full = rng.normal(20, 2, 40).clip(5)
    early = full * (1 - saved) * rng.normal(1, 0.05, 40)
    latency = {"speedup_wall": float(full.sum() / early.sum()), "realised_fraction": realised}
    if raw:
        latency.update(full_ms={"p50": float(np.median(full)), "p99": float(np.percentile(full, 99)),
                                "raw": full.tolist()},
                       ee_ms={"p50": float(np.median(early)), "p90": float(np.percentile(early, 90)),
                              "p99": float(np.percentile(early, 99)), "raw": early.tolist()},
                       realised_above_limit=realised > 1.05, exit_mismatch=0, peak_memory_mb=12.5)
    return {"latency": {"b1": latency, "b32": latency}}


def test_timing_intervals_come_from_the_timed_examples_and_a_realised_fraction_above_1_05_is_noise():
    labels = _labels()
    records = []
    for seed in (42, 43):
        preds = _noisy(labels, 0.8, seed)
        records += [_full("rte", labels, seed, preds),
                    _record("rte", "pabee", labels, seed, {"le1_loss": (preds, np.full(N, 3), _timed(0.5, 0.9, True))}),
                    _record("rte", "deebert", labels, seed,
                            {"le1_loss": (preds, np.full(N, 3), _timed(0.5, 1.2, False))})]
    report = rep.build_report(records, resamples=200)
    cells = {c["method"]: c for c in report.cells[0]}
    pabee, deebert = cells["pabee"], cells["deebert"]
    assert pabee["speedup_b1_levels"] == "seeds and timed examples" and pabee["speedup_b32_levels"].endswith("batches")
    assert pabee["speedup_b1_ci_low"] < pabee["speedup_wall_b1"] < pabee["speedup_b1_ci_high"]
    assert pabee["latency_p99_ms_b1"] > pabee["latency_p50_ms_b1"] and pabee["peak_memory_mb_b1"] == 12.5
    assert pabee["realised_noise_b1"] is False and pabee["exit_mismatch_b1"] == 0
    assert deebert["speedup_b1_levels"] == "seeds only (no per-example times)" and deebert["realised_noise_b1"]
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(tables.to_csv(report.rows)))}
    assert float(rows["pabee"]["speedup_b1_ci_low"]) == pytest.approx(pabee["speedup_b1_ci_low"])
    assert rows["deebert"]["realised_noise_b1"] == "True" and rows["pabee"]["latency_p99_ms_b1"]
    body = {line[0]: dict(zip(report.tables[0].header, line)) for line in report.tables[0].body}
    assert "(noise)" in body["DeeBERT (≤1% loss)"]["rte ×b1/b32"]
    assert "(noise)" not in body["PABEE (≤1% loss)"]["rte ×b1/b32"] and " ± " in body["PABEE (≤1% loss)"]["rte ×b1/b32"]


def test_separately_trained_grid_points_are_drawn_per_seed_never_averaged(tmp_path):
    """ConsistentEE's α: seeds that saved 83%, 0% and 83% at one α must not appear as one point at 56%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels()
    records = []
    for seed, saved in zip(SEEDS, (5 / 6, 0.0, 5 / 6)):
        preds = _noisy(labels, 0.8, seed)
        exits = np.full(N, round(L * (1 - saved)))
        records += [_full("sst2", labels, seed, preds),
                    _record("sst2", "consistentee", labels, seed, {"le1_loss": (preds, exits)},
                            curve=[(preds, np.full(N, L)), (preds, exits)], curve_models="one per grid value")]
    report = rep.build_report(records, resamples=50)
    assert figure3.separately_trained([r for r in records if r["method"] == "consistentee"])
    fig, ax = plt.subplots()
    figure3._curve_panel(ax, records, report.cells[0], "sst2")
    drawn = {round(float(x), 6) for line in ax.get_lines() if line.get_label() != "99% of full"
             for x in np.atleast_1d(line.get_xdata())}
    plt.close(fig)
    assert round(100 * 5 / 6, 6) in drawn and 0.0 in drawn
    assert round(100 * 5 / 9, 6) not in drawn  # the average of 83%, 0% and 83%: nobody's point
    paths = figure3.plot_curves(report, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".svg"}


def test_a_record_from_other_code_lands_in_another_table():
    records = _pair(saved_cee=0.3, saved_pabee=0.3)
    stale = {**records[1], "seed": 45, "code": {"fingerprint": "other", "commit": "1" * 40, "dirty": True}}
    report = rep.build_report(records + [stale], resamples=50)
    assert len(report.groups) == 2 and "code (abc, other)" in report.warnings[0]
    assert [g.fields["code"] for g in report.groups] == ["abc", "other"]
    assert "code abc (commit 0000000)" in report.tables[0].title
    assert "code other (commit 1111111 (dirty))" in report.tables[1].title
    assert all("45" not in c["seed_list"] for c in report.cells[0])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for record in _pair(saved_cee=0.1, saved_pabee=0.5):
        save_result(tmp_path, record)
    return tmp_path


def test_report_command_prints_the_verdict_as_json_and_refuses_a_verdict_about_nothing(folder, cli):
    code, out, err = cli("report", "--results-dir", str(folder), "--format", "json", "--verdict", "consistentee",
                         "--bootstrap", "100")
    assert code == 0, err
    rows = json.loads(out)
    assert rows and {r["challenger"] for r in rows} == {"consistentee"}
    assert any(r["verdict"] == "no" for r in rows)
    code, out, err = cli("report", "--results-dir", str(folder), "--format", "markdown", "--bootstrap", "50")
    assert code == 0 and "**Verdict — classification table 1**" in out and "**Table 3 mirror" in out
    for args, message in ((["--verdict", "deebert"], "no records of method 'deebert'"),
                          (["--verdict", "nosuch"], "unknown method 'nosuch'"),
                          (["--verdict", "consistentee", "--filter", "task=sst2"], "match --filter task=sst2"),
                          (["--bootstrap", "0"], "--bootstrap must be a positive integer")):
        code, out, err = cli("report", "--results-dir", str(folder), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == "", (args, err)


def test_each_kind_gets_its_own_verdict_tables():
    """Classification and generation groups both number their tables from 1: their verdicts never share a table."""
    rows = rep.build_report(_pair(saved_cee=0.10, saved_pabee=0.50), resamples=50).verdict
    generated = [{**r, "kind": "generation", "task": "cnndm"} for r in rows]
    grid = verdict_tables.verdict_grid(rows + generated)
    assert [title for title, *_ in grid] == ["Verdict — classification table 1", "Verdict — generation table 1"]
    assert {line[0] for line in grid[0][2]} == {"rte"} and {line[0] for line in grid[1][2]} == {"cnndm"}
