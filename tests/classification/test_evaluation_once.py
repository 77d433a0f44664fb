"""Evaluation paid once (`classification.evaluation_cache`): in a run, each distinct (model, rule) of a record's
operating points is confirmed and timed once however many rows share it, PCEE-BERT reads PABEE's traces (the same
trained model), and a re-run reads every trace and confirmation instead of computing them again. A tiny SST-2 subset,
the packaged encoder, `smoke` stages."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cee_bench.classification import evaluation_cache, recipe
from cee_bench.classification.exits import Never
from cee_bench.classification.recipe import SPLITS
from cee_bench.options import RunOptions
from cee_bench.registry import get_method
from cee_bench.runner import run

METHODS = ("full", "pabee", "pcee-bert")


def options(glue: Path, out: Path, **changes) -> RunOptions:
    return RunOptions(task="sst2", methods=",".join(METHODS), data_dir=glue, output_dir=out, preset="smoke",
                      max_train_samples=16, max_eval_samples=24, max_seq_length=32, latency_examples=3, device="cpu",
                      quiet=True, **changes)


@pytest.fixture
def counted(monkeypatch):
    """Every batch size's timed settings (rule reprs, one list per `measure_latencies` call) and traces computed."""
    calls: dict[str, list] = {"timed": [], "traced": []}
    measure, trace = recipe.measure_latencies, evaluation_cache.compute_trace

    def measure_latencies(settings, data, **options):
        calls["timed"].append((options["batch_size"], [repr(rule) for _, rule in settings]))
        return measure(settings, data, **options)

    def compute_trace(model, data, **options):
        calls["traced"].append(options["split"])
        return trace(model, data, **options)

    monkeypatch.setattr(recipe, "measure_latencies", measure_latencies)
    monkeypatch.setattr(evaluation_cache, "compute_trace", compute_trace)
    return calls


def records(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / "sst2" / f"{name}__seed42.json").read_text()) for name in METHODS}


def rules_of(name: str, record: dict, *, reused: bool) -> set[str]:
    """The distinct rules of a record's operating points that were (not) read from the evaluation cache."""
    method = get_method(name)
    return {repr(Never() if point.get("fallback") else method.rule(None, point["threshold"]))
            for point in record["operating_points"].values() if point["evaluation_reused"] is reused}


def test_each_distinct_setting_is_timed_once_and_a_rerun_reads_every_evaluation(glue, tmp_path, counted):
    run(options(glue, tmp_path))
    first = records(tmp_path)
    for batch_size in (1, 32):
        timed = [rules for size, rules in counted["timed"] if size == batch_size]
        assert [Counter(rules) for rules in timed] == [Counter(rules_of(n, first[n], reused=False)) for n in METHODS]
    assert any(len(rules_of(n, first[n], reused=False)) < len(first[n]["operating_points"]) for n in METHODS), \
        "no record has two rows on one rule: the sharing is untested"
    # PCEE-BERT's model is PABEE's: what it shares with PABEE (its full-depth fallback) was timed once, for PABEE
    assert rules_of("pcee-bert", first["pcee-bert"], reused=True) <= rules_of("pabee", first["pabee"], reused=False)
    assert sorted(counted["traced"]) == sorted(SPLITS * 2)  # full's and PABEE's (= PCEE-BERT's), each split once
    assert not any(p["evaluation_reused"] for n in ("full", "pabee") for p in first[n]["operating_points"].values())

    counted["timed"].clear()
    counted["traced"].clear()
    run(options(glue, tmp_path, force=True))
    again = records(tmp_path)
    assert counted == {"timed": [], "traced": []}
    for name in METHODS:
        for point_name, point in again[name]["operating_points"].items():
            assert point["evaluation_reused"]
            assert point["latency"] == first[name]["operating_points"][point_name]["latency"]
        assert again[name]["curve"] == first[name]["curve"]
