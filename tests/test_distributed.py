"""Multi-process training for real: `torchrun --nproc_per_node 2` on the CPU (gloo) against a one-process run with the
same global batch, on the packaged encoder and ../shared RTE.

What it proves: every training stage of full, DeeBERT, PABEE and ConsistentEE runs under DDP (frozen and unused
parameters included); only the main process writes (one record per method, one summary line); the record says the
world it was trained in; its dev decisions are exactly those of the stored weights evaluated again in this one
process; and two processes train what one process trains, up to the noise stated in `test_two_processes_train_what_one_process_trains`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cee_bench import distributed
from cee_bench.errors import UserError
from data_paths import GLUE

ROOT = Path(__file__).resolve().parents[1]
DATA = GLUE
METHODS = ("full", "deebert", "pabee", "consistentee")
BIN = Path(sys.executable).parent
# 32 training rows = two whole global batches of 16 (one of ConsistentEE's policy batch of 32): the two runs see
# the very same batches, so only dropout masks and summation order tell them apart.
RUN = ["run", "--task", "rte", "--methods", ",".join(METHODS), "--preset", "smoke", "--data-dir", str(DATA),
       "--quiet", "--max-train-samples", "32", "--max-eval-samples", "16", "--max-seq-length", "32",
       "--latency-examples", "2"]
SCORE_TOLERANCE = 0.2  # absolute dev score (3 of 16 examples): smoke models sit near chance, where one flip is 6%
LOSS_TOLERANCE = 0.02  # relative, per stage and epoch: the tight check that the same data trained the same way

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"needs GLUE data at {DATA}")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, subprocess.CompletedProcess]]:
    """{processes: (output folder, finished process)} for one process and for two."""
    out = tmp_path_factory.mktemp("distributed")
    commands = {1: [str(BIN / "cee-bench"), *RUN],
                2: [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "cee_bench", *RUN]}
    done = {}
    for n, command in commands.items():
        folder = out / f"world{n}"
        proc = subprocess.run([*command, "--output-dir", str(folder)], env=_env(), capture_output=True, text=True,
                              timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        done[n] = (folder, proc)
    return done


def _records(folder: Path) -> dict[str, dict]:
    return {p.stem.split("__")[0]: json.loads(p.read_text()) for p in sorted((folder / "rte").glob("*.json"))}


def test_two_processes_write_one_record_per_method_naming_their_world(runs) -> None:
    folder, proc = runs[2]
    records = _records(folder)
    assert sorted(records) == sorted(METHODS)
    assert proc.stderr.count("result file(s)") == 1  # the summary line: the main process alone
    for record in records.values():
        world = record["environment"]["distributed"]
        assert world["world_size"] == 2 and world["backend"] == "gloo"
        assert [d["rank"] for d in world["devices"]] == [0, 1]
        assert all(d["device"].startswith("cpu") for d in world["devices"])
        store = record["model_store"]
        assert all((folder / store["path"] / key / "config.json").is_file() for key in store["files"].values())
    assert runs[1][0].joinpath("rte", "full__seed42.json").is_file()
    one = _records(runs[1][0])["full"]["environment"]["distributed"]
    assert one["world_size"] == 1 and one["backend"] is None
    # ConsistentEE stores one model per α
    assert set(records["consistentee"]["model_store"]["files"]) == {"alpha_depth=0.1", "alpha_depth=1"}


def test_dev_decisions_of_the_stored_two_process_models_equal_the_record(runs) -> None:
    """The two-process model's weights, evaluated again here in one process, make the record's decisions."""
    from cee_bench.classification.curve import evaluate_rule
    from cee_bench.classification.data import encode, load_splits
    from cee_bench.classification.exits import Never
    from cee_bench.classification.multiexit import load_backbone
    from cee_bench.classification.store import SINGLE, load_model, variant_name
    from cee_bench.classification.trace import compute_trace
    from cee_bench.registry import get_method
    from cee_bench.tasks import get_task

    folder, _ = runs[2]
    records = _records(folder)
    config = records["full"]["config"]
    task = get_task("rte")
    splits = load_splits(task, DATA, max_train=config["max_train_samples"], max_eval=config["max_eval_samples"],
                         seed=42)
    _, tokenizer, _ = load_backbone(None)
    dev = encode(tokenizer, splits.dev, config["max_seq_length"])
    for name, record in records.items():
        method = get_method(name)
        store = record["model_store"]
        for point_name, point in record["operating_points"].items():
            fallback = point.get("fallback", False)  # Learn-then-Test found nothing: that model at full depth
            value = point["full_depth_of"] if fallback else point["threshold"]
            variant = variant_name(method.threshold_name, value)
            key = store["files"][variant if variant in store["files"] else SINGLE]
            model = load_model(folder / store["path"] / key)
            trace = compute_trace(model, dev, split="dev", batch_size=32)
            _, exits = evaluate_rule(trace, Never() if fallback else method.rule(model, value), task)
            preds = trace.signals["logits"][np.arange(len(exits)), exits - 1].argmax(-1).numpy()
            expected = record["per_example"]["points"][point_name]
            assert exits.tolist() == expected["exit_layers"], (name, point_name)
            assert preds.tolist() == expected["predictions"], (name, point_name)


def test_two_processes_train_what_one_process_trains(runs) -> None:
    """Same global batches, same seed: every stage's epoch losses within LOSS_TOLERANCE (relative), every dev score
    the report uses (operating points, top layer) within SCORE_TOLERANCE (absolute)."""
    one, two = _records(runs[1][0]), _records(runs[2][0])
    for name in METHODS:
        a, b = one[name], two[name]
        assert a["config"]["stages"] == b["config"]["stages"]
        losses_a, losses_b = _stage_losses(a["method_meta"]["log"]), _stage_losses(b["method_meta"]["log"])
        assert losses_a.keys() == losses_b.keys() and losses_a
        for stage, values in losses_a.items():
            assert np.allclose(values, losses_b[stage], rtol=LOSS_TOLERANCE), (name, stage, values, losses_b[stage])
        assert abs(a["per_layer_scores"]["dev"][-1] - b["per_layer_scores"]["dev"][-1]) <= SCORE_TOLERANCE, name
        for point in a["operating_points"]:
            assert abs(a["operating_points"][point]["score"] - b["operating_points"][point]["score"]) \
                <= SCORE_TOLERANCE, (name, point)


def _stage_losses(log: dict) -> dict[str, list[float]]:
    """Every stage's epoch cross-entropy losses from a record's log, ConsistentEE's per-round refinement included.
    The policy's REINFORCE loss is left out: with its mean-reward baseline it is zero on average, so its value is
    sampling noise, not a measure of what was learnt."""
    losses = {k: v for k, v in log.items() if isinstance(v, list) and all(isinstance(x, float) for x in v)}
    for alpha, rounds in log.get("rounds", {}).items():
        for row in rounds:
            losses[f"{alpha}/{row['round']}/refine"] = row["refine_loss"]
    return losses


def test_a_global_batch_that_does_not_divide_over_the_processes_is_refused(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.per_process_batch(16, "stage") == 8
    with pytest.raises(UserError, match="does not divide over 2 processes"):
        distributed.per_process_batch(15, "stage")
    # the command line refuses it before joining any process group or writing anything
    proc = subprocess.run([str(BIN / "cee-bench"), *RUN[:4], "full", "--data-dir", str(DATA), "--batch-size", "15",
                           "--output-dir", str(tmp_path / "out")], env={**_env(), "WORLD_SIZE": "2", "RANK": "0"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "batch size 15 does not divide over 2 processes" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_store_gives_back_every_entry_it_saved(tiny_encoder, tmp_path) -> None:
    import torch

    from cee_bench.classification.method import build_model
    from cee_bench.classification.store import load_model, save_entry
    from cee_bench.store import drop_entry, store_root
    from cee_bench.registry import get_method
    from cee_bench.tasks import get_task

    method, task = get_method("consistentee"), get_task("rte")
    root = store_root(tmp_path, "rte")
    models = {}
    for i, key in enumerate(("key-a", "key-b")):
        models[key] = build_model(method, tiny_encoder, task, "mean", seed=i)  # different weights per entry
        save_entry(root / key, models[key], task="rte", method="consistentee", seed=i, pooling="mean",
                   backbone=tiny_encoder, extra={"key": key})
    assert root == tmp_path / "models" / "rte"
    for key, model in models.items():
        assert sorted(p.name for p in (root / key).iterdir()) == ["config.json", "model.safetensors"]  # no temp file
        loaded = load_model(root / key)
        assert loaded.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    drop_entry(root / "key-a")
    assert not (root / "key-a").exists() and [p.name for p in root.iterdir()] == ["key-b"]
    with pytest.raises(UserError, match="not a model-store entry"):
        load_model(root / "key-a")


def test_a_failed_atomic_write_leaves_the_old_file_whole(tmp_path) -> None:
    from cee_bench.results import atomic_write

    path = atomic_write(tmp_path / "r.json", lambda tmp: tmp.write_text("old"))

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_one_process_run_records_a_world_of_one() -> None:
    from cee_bench.results import environment

    distributed.start("cpu")
    assert environment()["distributed"] == {"world_size": 1, "backend": None, "devices": [{"device": "cpu"}]}
    assert distributed.is_main() and distributed.from_main(7) == 7
    distributed.barrier()
