"""Generation rows and the Figure-5-style plot from hand-made records."""

from __future__ import annotations

import pytest

from cee_bench.report import generation_rows
from cee_bench.report.figure5 import plot_generation


def _point(threshold, rouge, speedup, **extra):
    return {"threshold": threshold, "rouge_l": rouge, "bert_f": rouge + 0.5, "mean_layers_per_token": 30 / speedup,
            "saved_layers": 1 - 1 / speedup, "layer_speedup": speedup, "tokens_per_s": 10 * speedup,
            "speedup_measured": speedup, **extra}


def _record(method, display):
    full = _point(1.0, 0.3, 1.0, full_model=True)
    curve = [full, _point(0.9, 0.28, 1.5), _point(0.5, 0.2, 2.5)]
    return {"task": "cnndm", "method": method, "method_display": display, "backbone": "tiny", "seed": 0,
            "kind": "generation", "curve": curve, "operating_points": {"ltt": curve[1], "full": full}}


def test_rows_hold_operating_points_and_curve_points():
    rows = generation_rows([_record("calm", "CALM (state)"), {"task": "rte", "method": "pabee"}])
    assert {r["operating_point"] for r in rows} == {"ltt", "full", "curve"}
    assert len(rows) == 4 and all(r["method"] == "CALM (state)" for r in rows)
    ltt = next(r for r in rows if r["operating_point"] == "ltt")
    assert ltt["threshold"] == 0.9 and ltt["speedup_measured"] == 1.5


def test_plot_writes_one_png_per_task(tmp_path):
    paths = plot_generation([_record("calm", "CALM (state)"), _record("consistentee", "ConsistentEE")], tmp_path)
    assert [p.name for p in paths] == ["generation_cnndm.png"] and paths[0].stat().st_size > 1000


def test_a_learn_then_test_fallback_is_labelled_in_rows_and_tables():
    from cee_bench.report.generation_tables import generation_markdown, generation_rich_table

    record = _record("consistentee", "ConsistentEE")
    full = record["operating_points"]["full"]
    record["operating_points"]["ltt"] = {**full, "fallback": True}
    rows = generation_rows([record, _record("calm", "CALM (state)")])
    assert [r["fallback"] for r in rows if r["operating_point"] == "ltt"] == [True, False]
    assert "| ltt (fallback: full depth) |" in generation_markdown(rows)
    assert "no candidate safe" in generation_markdown(rows)
    assert generation_rich_table(rows).caption


def test_per_prompt_values_give_generation_rows_intervals_and_a_verdict():
    """Generation records keep per-prompt ROUGE-L, BERT-F, layers and tokens at every curve point: their rows get
    two-level intervals over seeds and prompts, and ConsistentEE is put against CALM like on classification."""
    import numpy as np

    from cee_bench import report as rep

    def examples(rouge, layers_per_token, seed):
        rng = np.random.default_rng(seed)
        values = (rouge + rng.normal(0, 0.05, 12)).clip(0, 1)
        return {"rouge_l": values.tolist(), "bert_f": (values + 0.5).tolist(),
                "layers": [int(layers_per_token * 10)] * 12, "tokens": [10] * 12}

    records = []
    for seed in (0, 1, 2):
        for method, display, saved in (("calm", "CALM (state)", 0.2), ("consistentee", "ConsistentEE", 0.6)):
            record = _record(method, display)
            record.update(seed=seed, num_layers=30)
            logs = [examples(0.3, 30, seed), examples(0.3, 30 * (1 - saved), seed + 10),
                    examples(0.2, 10, seed + 20)]
            for point, log in zip(record["curve"], logs):
                point["saved_layers"] = 1 - np.mean(log["layers"]) / 10 / 30
                point["rouge_l"] = float(np.mean(log["rouge_l"]))
            record["operating_points"] = {"ltt": {**record["curve"][1], "curve_index": 1},
                                          "full": {**record["curve"][0], "curve_index": 0}}
            record["per_example"] = {"ids": [str(i) for i in range(12)], "curve": logs}
            records.append(record)
    report = rep.build_report(records, resamples=200)
    ltt = next(r for r in report.generation[0] if r["method"] == "ConsistentEE" and r["operating_point"] == "ltt")
    assert ltt["interval_levels"] == "seeds and examples" and ltt["rouge_l_ci_low"] < ltt["rouge_l"]
    assert ltt["bert_f_ci_low"] is not None and ltt["saved_layers_ci_low"] == pytest.approx(0.6)
    row = next(r for r in report.verdict if r["kind"] == "generation" and r["challenger"] == "consistentee"
               and r["measure"] == "ltt" and r["comparison"] == "vs baseline")
    assert row["verdict"] == "yes" and row["difference"] == pytest.approx(0.4, abs=0.01)
