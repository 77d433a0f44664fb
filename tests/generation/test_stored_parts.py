"""Generation's trained parts in the model store (cee_bench/generation/sharing.py): the anytime exit adapters,
CALM's meta-classifier and ConsistentEE's policies are stored by training key and reused by a later run, a run with
another grid or another method list, or a sweep's job, with records equal to those of the run that trained them."""

from __future__ import annotations

import json
from pathlib import Path

from test_run import _run, _tiny_model, _write_data

METHODS = ["calm-meta", "calm-anytime", "consistentee"]
TIMING = ("tokens_per_s", "speedup_measured", "seconds", "wall_s", "latency")


def _numbers(record: dict) -> dict:
    """What a rerun must repeat: the curve, the chosen point, per-example exit layers and the training notes."""
    curve = [{k: v for k, v in p.items() if k not in TIMING} for p in record["curve"]]
    return {"curve": curve, "exits": record["per_example"]["points"]["ltt"]["exit_layers"],
            "notes": record["method_meta"]["training"]}


def _records(paths: list[Path]) -> dict[str, dict]:
    return {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in paths}


def test_every_trained_part_is_stored_once_and_reused_with_the_same_numbers(tmp_path):
    model, data = str(_tiny_model(tmp_path / "model")), _write_data(tmp_path / "data")
    first = _records(_run(data, tmp_path / "out", model=model, methods=METHODS, greedy=True))
    trained = [(m, t["part"]) for m, r in first.items() for t in r["training"]["trained"]]
    assert sorted(trained) == [("calm-anytime", "anytime-exits"), ("calm-meta", "calm-meta"),
                               ("consistentee", "consistentee-policy")]  # smoke: one alpha
    assert len(list((tmp_path / "out" / "models" / "cnndm").iterdir())) == 3

    again = _records(_run(data, tmp_path / "out", model=model, methods=METHODS, greedy=True, force=True))
    for method, record in again.items():
        assert record["training"]["trained"] == [] and record["training"]["reused_from"] or method == "calm-anytime"
        assert _numbers(record) == _numbers(first[method]), method

    # a job of one method (as a sweep starts it) loads the stage 1 another method trained, and agrees with the run
    alone = _records(_run(data, tmp_path / "out2", model=model, methods=["consistentee"], greedy=True))
    assert _numbers(alone["consistentee"]) == _numbers(first["consistentee"])


def test_another_grid_trains_only_the_new_alpha(tmp_path):
    model, data = str(_tiny_model(tmp_path / "model")), _write_data(tmp_path / "data")
    _run(data, tmp_path / "out", model=model, methods=["consistentee"], greedy=True, thresholds=[0.05])
    [path] = _run(data, tmp_path / "out", model=model, methods=["consistentee"], greedy=True,
                  thresholds=[0.05, 0.2], force=True)
    training = json.loads(path.read_text())["training"]
    assert [t["part"] for t in training["reused_from"]] == ["anytime-exits", "consistentee-policy"]
    assert [t["part"] for t in training["trained"]] == ["consistentee-policy"]
