"""One training per distinct training key and the model store (issue 10, items 1-4): shared stages give the weights each
method would train alone, an interrupted ConsistentEE run resumes at its round, an entry of another configuration is
never reused, `--retrain` trains again and another `--grid` trains nothing.

The sharing tests run `sharing.MethodTrainer` on the tiny BERT of conftest.py (seconds); the command-line tests run
`cee-bench run` on a tiny SST-2 subset with the packaged encoder and `smoke` stages."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cee_bench.classification import consistentee as cee
from cee_bench.classification.data import Encoded
from cee_bench.classification.method import resolve_stages
from cee_bench.classification.sharing import MethodTrainer, base_identity, training_key
from cee_bench.options import RunOptions
from cee_bench.progress import Progress
from cee_bench.registry import get_method
from cee_bench.tasks import get_task

TASK = get_task("sst2")
TINY = ["--preset", "smoke", "--max-train-samples", "16", "--max-eval-samples", "24", "--max-seq-length", "32",
        "--latency-examples", "2", "--quiet"]


def rows(n: int, seed: int) -> Encoded:
    """Rows of different lengths whose label is the parity of the first word piece."""
    g = torch.Generator().manual_seed(seed)
    ids = [[101, *torch.randint(1000, 2000, (int(torch.randint(3, 10, (1,), generator=g)),), generator=g).tolist(),
            102] for _ in range(n)]
    return Encoded(ids, None, torch.tensor([row[1] % 2 for row in ids]))


DATA = {"train": rows(32, 1), "heldout": rows(16, 2)}


def options(folder: Path, **changes) -> RunOptions:
    return RunOptions(task="sst2", output_dir=folder, preset="smoke", device="cpu", pooling="cls", **changes)


def stages_of(name: str, opts: RunOptions, **policy) -> dict:
    stages = resolve_stages(get_method(name), opts)
    if policy:
        stages["policy"] = replace(stages["policy"], **policy)
    return stages


def train(name: str, encoder, opts: RunOptions, data: dict | None = None, **policy):
    return MethodTrainer(get_method(name), TASK, encoder, data or DATA, stages_of(name, opts, **policy), opts,
                         Progress.quiet(), 16).run()


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shared_trainings_give_the_same_weights_as_training_each_method_alone(tiny_encoder, tmp_path) -> None:
    """Together, through the store, each stage trains once; alone, with sharing and the store off, every method
    trains its own copy of the shared stage: the weights are bit-identical, and DeeBERT's top head is the full
    model's."""
    together = options(tmp_path / "together")
    names = ("full", "deebert", "pabee", "pcee-bert", "consistentee", "consistentee-vanilla")
    shared = {name: train(name, tiny_encoder, together) for name in names}
    for name in names:
        alone = train(name, tiny_encoder, options(tmp_path / name, share=False))
        assert same(weights(shared[name].model), weights(alone.model)), name
        assert shared[name].variants.keys() == alone.variants.keys()
        for value, model in shared[name].variants.items():
            assert same(weights(model), weights(alone.variants[value])), (name, value)
        assert alone.training["steps"] > shared[name].training["steps"] or not get_method(name).shares, name
    full, deebert = shared["full"].model, shared["deebert"].model
    top = full.num_layers - 1
    assert torch.equal(deebert.heads.poolers[top].weight, full.heads.poolers[0].weight)
    assert torch.equal(deebert.heads.classifiers[top].weight, full.heads.classifiers[top].weight)
    assert same(weights(deebert.backbone), weights(full.backbone))
    pabee_key = shared["pabee"].model_store["files"]["model"]
    assert shared["pcee-bert"].training["steps"] == 0 and shared["pcee-bert"].model_store["files"]["model"] == pabee_key
    for name, stage in (("deebert", "finetune"), ("pcee-bert", "train"), ("consistentee", "init"),
                        ("consistentee-vanilla", "init")):
        reused = shared[name].training["reused_from"][0]
        assert reused["stage"] == stage and reused["method"] == get_method(name).shares[stage], name
        assert reused["record"] == f"sst2/{reused['method']}__seed42.json"
    assert [t["stage"] for t in shared["deebert"].training["trained"]] == ["highway"]


def test_paper_preset_trainings_are_not_shared_and_the_record_says_why(tiny_encoder, tmp_path) -> None:
    opts = RunOptions(task="sst2", preset="paper")
    for name, stage, source in (("deebert", "finetune", "full"), ("pcee-bert", "train", "pabee"),
                                ("consistentee", "init", "pabee")):
        (source_stage,) = get_method(source).stages["paper"]
        assert stages_of(name, opts)[stage] != resolve_stages(get_method(source), opts)[source_stage], name
    paper = replace(options(tmp_path), preset="paper")
    full, deebert = train("full", tiny_encoder, paper), train("deebert", tiny_encoder, paper)
    assert deebert.training["reused_from"] == []
    assert [t["stage"] for t in deebert.training["trained"]] == ["finetune", "highway"]
    assert deebert.stage_keys["finetune"] != full.model_store["files"]["model"]
    assert "batch_size 8 vs 32" in deebert.training["not_shared"]["finetune"]


def test_an_interrupted_deebert_starts_again_from_its_finished_stage(tiny_encoder, tmp_path, monkeypatch) -> None:
    import baselines.deebert as deebert_module

    original = deebert_module.train_on_states

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deebert_module, "train_on_states", killed)
    with pytest.raises(KeyboardInterrupt):
        train("deebert", tiny_encoder, options(tmp_path / "interrupted"))
    monkeypatch.setattr(deebert_module, "train_on_states", original)
    resumed = train("deebert", tiny_encoder, options(tmp_path / "interrupted"))
    assert [r["stage"] for r in resumed.training["reused_from"]] == ["finetune"]
    assert [t["stage"] for t in resumed.training["trained"]] == ["highway"]
    whole = train("deebert", tiny_encoder, options(tmp_path / "whole"))
    assert same(weights(resumed.model), weights(whole.model))


def test_a_kill_during_consistentees_second_round_resumes_at_that_round(tiny_encoder, tmp_path, monkeypatch) -> None:
    opts = options(tmp_path / "interrupted")
    policy = {"max_rounds": 2, "alphas": (0.1, 1.0), "exit_tolerance": 0.0, "score_tolerance": 0.0}
    calls: list[tuple[float, int]] = []
    original = cee.train_policy

    def killed_in_round_two(ctx, states, memorized, alpha, round_index):
        calls.append((alpha, round_index))
        if round_index == 1:
            raise KeyboardInterrupt
        return original(ctx, states, memorized, alpha, round_index)

    monkeypatch.setattr(cee, "train_policy", killed_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        train("consistentee", tiny_encoder, opts, **policy)
    assert calls == [(0.1 / (tiny_encoder.config.num_hidden_layers - 1), 0),
                     (0.1 / (tiny_encoder.config.num_hidden_layers - 1), 1)]
    calls.clear()

    def recording(ctx, states, memorized, alpha, round_index):
        calls.append((alpha, round_index))
        return original(ctx, states, memorized, alpha, round_index)

    monkeypatch.setattr(cee, "train_policy", recording)
    resumed = train("consistentee", tiny_encoder, replace(opts, fresh=set()), **policy)
    assert [r for _, r in calls] == [1, 0, 1]  # α=0.1 resumes at round 2; α=1 trains both rounds
    assert [r["stage"] for r in resumed.training["reused_from"]] == ["init", "alpha_depth=0.1 rounds 1-1"]
    uninterrupted = train("consistentee", tiny_encoder, options(tmp_path / "whole"), **policy)
    for value, model in uninterrupted.variants.items():
        assert same(weights(model), weights(resumed.variants[value])), value
    assert resumed.log["rounds"] == uninterrupted.log["rounds"]
    # each α keeps only its last round in the store
    stored = sorted(p.name for p in (tmp_path / "interrupted" / "models" / "sst2").iterdir())
    assert stored == sorted({resumed.stage_keys["init"], *resumed.model_store["files"].values()})


@pytest.mark.parametrize("change", ["seed", "pooling", "data", "stage", "backbone", "dtype"])
def test_every_part_of_a_training_identity_changes_its_key(tiny_encoder, change) -> None:
    def key(seed=42, pooling="cls", data=DATA, lr=1e-4, encoder=tiny_encoder, dtype="fp32") -> str:
        base = base_identity(TASK, encoder, data, pooling=pooling, seed=seed, eval_batch_size=16, dtype=dtype)
        return training_key({**base, "recipe": "full", "parents": [], "stages": {"train": {"lr": lr}}})

    other = {"seed": {"seed": 43}, "pooling": {"pooling": "mean"}, "data": {"data": {**DATA, "train": rows(32, 9)}},
             "stage": {"lr": 2e-4}, "dtype": {"dtype": "bf16"}}
    if change == "backbone":
        import copy

        changed = copy.deepcopy(tiny_encoder)
        changed._cee_weights_digest = None
        with torch.no_grad():
            changed.encoder.layer[0].output.dense.bias.add_(1e-3)
        other["backbone"] = {"encoder": changed}
    assert key() != key(**other[change])


def test_a_store_entry_from_another_config_is_never_reused(tiny_encoder, tmp_path) -> None:
    """An entry whose identity is not the requested one is trained over, even under the requested key."""
    first = train("full", tiny_encoder, options(tmp_path / "a"))
    other_data = {**DATA, "train": rows(32, 7)}
    probe = train("full", tiny_encoder, options(tmp_path / "probe"), other_data)
    wanted, stored = probe.model_store["files"]["model"], first.model_store["files"]["model"]
    assert wanted != stored
    root = tmp_path / "a" / "models" / "sst2"
    shutil.copytree(root / stored, root / wanted)  # a stale entry under the key the second config asks for
    second = train("full", tiny_encoder, options(tmp_path / "a"), other_data)
    assert second.training["reused_from"] == [] and second.training["steps"] > 0
    assert same(weights(second.model), weights(probe.model))
    assert json.loads((root / wanted / "config.json").read_text())["identity"]["data"]["train"] != \
        json.loads((root / stored / "config.json").read_text())["identity"]["data"]["train"]


# --- through the command line ----------------------------------------------------------------------------------------

def records(folder: Path) -> dict[str, dict]:
    return {p.stem.split("__")[0]: json.loads(p.read_text()) for p in (folder / "sst2").glob("*.json")}


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, glue) -> Path:
    import sys

    from cee_bench import cli as cli_module

    out = tmp_path_factory.mktemp("store")
    argv = sys.argv
    sys.argv = ["cee-bench", "run", "--task", "sst2", "--methods", "full,pabee,consistentee", "--data-dir", str(glue),
                "--output-dir", str(out), *TINY]
    try:
        cli_module.main()
    except SystemExit as exc:
        assert not exc.code
    finally:
        sys.argv = argv
    return out


def test_a_second_run_with_another_grid_trains_nothing(stored_run, glue, cli) -> None:
    first = records(stored_run)
    for method, grid in (("consistentee", "1"), ("pabee", "0,2")):
        code, out, err = cli("run", "--task", "sst2", "--methods", method, "--grid", grid, "--force", "--data-dir",
                             str(glue), "--output-dir", str(stored_run), *TINY)
        assert code == 0, out + err
        record = records(stored_run)[method]
        assert record["training"]["steps"] == 0 and record["training"]["trained"] == [], record["training"]
        assert record["method_meta"]["grid"] == [float(g) if method == "consistentee" else int(g)
                                                 for g in grid.split(",")]
        assert record["training"]["reused_from"]
    before = {p["threshold"]: p["score"] for p in first["consistentee"]["curve"]}
    after = {p["threshold"]: p["score"] for p in records(stored_run)["consistentee"]["curve"]}
    assert after == {1.0: before[1.0]}  # the same stored model, evaluated again


def test_the_pi_sweep_reads_consistentees_stored_models_and_confirms_its_points(stored_run, glue, cli) -> None:
    """`consistentee-pi` trains nothing where ConsistentEE ran (same training keys); its curve is every (α_depth, π)
    pair, the π = 0.5 points are ConsistentEE's own, real early exit agrees with the simulation at every chosen
    point, and the same request with a `--grid` is resumed, not refused."""
    args = ["run", "--task", "sst2", "--methods", "consistentee-pi", "--data-dir", str(glue), "--output-dir",
            str(stored_run), *TINY]
    code, out, err = cli(*args)
    assert code == 0, out + err
    pi, own = records(stored_run)["consistentee-pi"], records(stored_run)["consistentee"]
    assert pi["training"]["trained"] == [] and pi["training"]["steps"] == 0, pi["training"]
    grid = list(cee.METHOD.stages["smoke"]["policy"].alphas)
    assert pi["method_meta"]["grid"] == grid and pi["method_display"] == "ConsistentEE (π sweep)"
    assert [p["threshold"] for p in pi["curve"]] == [[a, p] for a in grid for p in cee.PI_GRID]
    own_curve = {p["threshold"]: p["score"] for p in own["curve"]}
    assert all(p["score"] == own_curve[p["threshold"][0]] for p in pi["curve"]
               if p["threshold"][1] == 0.5 and p["threshold"][0] in own_curve)
    assert all(point["real_vs_simulated_agreement"] == 1.0 for point in pi["operating_points"].values())
    assert any(d.startswith("pi sweep") for d in pi["method_meta"]["deviations"])
    assert pi["method_meta"]["estimator"] == own["method_meta"]["estimator"]
    path = stored_run / "sst2" / "consistentee-pi__seed42.json"
    code, out, err = cli(*args, "--grid", "1", "--force")
    assert code == 0, out + err
    written = path.read_bytes()
    code, out, err = cli(*args, "--grid", "1")
    assert code == 0, out + err
    assert path.read_bytes() == written and json.loads(written)["method_meta"]["grid"] == [1.0]  # kept


def test_retrain_trains_again(stored_run, glue, cli) -> None:
    code, out, err = cli("run", "--task", "sst2", "--methods", "full", "--retrain", "--data-dir", str(glue),
                         "--output-dir", str(stored_run), *TINY)
    assert code == 0, out + err
    record = records(stored_run)["full"]
    assert record["training"]["store"] == "retrain" and record["training"]["reused_from"] == []
    assert record["training"]["steps"] > 0 and record["training"]["trained"][0]["stage"] == "train"
    code, out, err = cli("run", "--task", "sst2", "--methods", "full", "--force", "--data-dir", str(glue),
                         "--output-dir", str(stored_run), *TINY)
    assert code == 0 and records(stored_run)["full"]["training"]["steps"] == 0  # without it, the store is used
