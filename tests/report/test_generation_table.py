"""Generation rows and the Figure-5-style plot from hand-made records."""

from __future__ import annotations

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
    from cee_bench.report.tables import generation_markdown, generation_rich_table

    record = _record("consistentee", "ConsistentEE")
    full = record["operating_points"]["full"]
    record["operating_points"]["ltt"] = {**full, "fallback": True}
    rows = generation_rows([record, _record("calm", "CALM (state)")])
    assert [r["fallback"] for r in rows if r["operating_point"] == "ltt"] == [True, False]
    assert "| ltt (fallback: full depth) |" in generation_markdown(rows)
    assert "no candidate safe" in generation_markdown(rows)
    assert generation_rich_table(rows).caption
