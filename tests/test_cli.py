"""The CLI's contract with a user: one clear line and exit code 2 on bad input, nothing written or lost; resume;
the report's formats. The end-to-end smoke run uses the packaged encoder and the real RTE files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest



def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


# `cee-bench run` mistakes and the message each must name (tests/test_bad_input.py runs them through the console
# script too).
BAD_RUN_ARGS = [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "rte", "--methods", "pabee,nope"], "unknown method 'nope'"),
    (["--task", "rte", "--data-dir", "/no/such/folder"], "data folder not found"),
    (["--task", "rte", "--batch-size", "0"], "--batch-size must be positive"),
    (["--task", "rte", "--epochs", "-1"], "--epochs must be positive"),
    (["--task", "rte", "--preset", "huge"], "unknown preset 'huge'"),
    (["--task", "rte", "--model", "./no/such/model"], "model path not found"),
    (["--task", "rte", "--methods", "pabee", "--grid", "-1"], "patience must be a whole number"),
    (["--task", "rte", "--methods", "pabee", "--grid", "x"], "--grid: 'x' is not a number"),
]


@pytest.mark.parametrize("args, message", BAD_RUN_ARGS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, glue, args, message, cli):
    out_dir = tmp_path / "results"
    (out_dir / "rte").mkdir(parents=True)
    keep = out_dir / "rte" / "pabee__seed42.json"
    keep.write_text('{"task": "rte", "method": "pabee"}')
    before = snapshot(out_dir)
    data = [] if "--data-dir" in args else ["--data-dir", str(glue)]
    preset = [] if "--preset" in args else ["--preset", "smoke"]
    code, _, err = cli("run", *args, *data, *preset, "--output-dir", str(out_dir))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(out_dir) == before


def test_unreadable_model_folder(tmp_path, glue, cli):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    code, _, err = cli("run", "--task", "rte", "--model", str(folder), "--data-dir",
                          str(glue), "--output-dir", str(tmp_path / "out"), "--preset", "smoke")
    assert code == 2 and "cannot load model" in err and not (tmp_path / "out").exists()


def test_report_on_a_corrupt_or_missing_results_folder(tmp_path, cli):
    code, _, err = cli("report", "--results-dir", str(tmp_path / "none"))
    assert code == 2 and "results folder not found" in err
    (tmp_path / "r" / "rte").mkdir(parents=True)
    (tmp_path / "r" / "rte" / "x.json").write_text("{")
    code, _, err = cli("report", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "cannot read results file" in err and "skipped it" in err and "no result records" in err


def test_smoke_run_report_and_resume(tmp_path, glue, cli):
    """`run` end to end on real RTE with the packaged encoder, then `report` in every format, then a resumed run."""
    out_dir = tmp_path / "results"
    code, _, err = cli("run", "--task", "rte", "--methods", "full,pabee", "--preset", "smoke",
                          "--data-dir", str(glue), "--output-dir", str(out_dir), "--quiet")
    assert code == 0, err
    record = json.loads((out_dir / "rte" / "pabee__seed42.json").read_text())
    assert record["config"]["pooling"] == "mean" and record["eval_split"] == "dev"
    assert record["select_split"] == "heldout" and record["curve_kind"] == "simulated"
    assert record["reference"]["source"] == "full-model record"  # same data and model: the full row is the bar
    assert len(record["curve"]) == record["num_layers"] == 6
    for point in record["operating_points"].values():
        assert point["real_vs_simulated_agreement"] == 1.0
        assert point["latency"]["b1"]["ee_ms_median"] > 0
    assert set(record["per_example"]["points"]) == set(record["operating_points"])
    for point in record["per_example"]["points"].values():
        assert len(point["exit_layers"]) == len(point["predictions"]) == record["data"]["dev"]
    assert record["environment"]["packages"]["torch"] and record["environment"]["hardware"]["processor"]

    code, out, err = cli("report", "--results-dir", str(out_dir), "--format", "csv",
                         "--plots", str(tmp_path / "plots"))
    assert code == 0 and "wrote" not in out and "curve_rte.png" in err  # data on stdout, messages on stderr
    rows = list(csv.DictReader(io.StringIO(out)))
    needed = {"task", "method", "backbone", "split", "metric", "score", "num_layers", "mean_exit_layer",
              "saved_layers", "operating_point", "latency_ms_b1", "speedup_wall_b1"}
    assert needed <= set(rows[0]) and {r["method"] for r in rows} == {"full", "pabee"}
    assert (tmp_path / "plots" / "curve_rte.png").stat().st_size > 1000
    code, out, _ = cli("report", "--results-dir", str(out_dir), "--format", "markdown")
    assert code == 0 and "| Method |" in out and "PABEE (★ no loss)" in out

    before = snapshot(out_dir)
    code, _, err = cli("run", "--task", "rte", "--methods", "pabee", "--preset", "smoke",
                          "--data-dir", str(glue), "--output-dir", str(out_dir), "--quiet")
    assert code == 0 and snapshot(out_dir) == before  # finished results are kept, not recomputed
