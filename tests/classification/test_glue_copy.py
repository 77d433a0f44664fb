"""`cee-bench data glue --to DIR` against a stub of `datasets.load_dataset` (the hub cannot be reached from the tests):
what it writes is GLUE's layout, and the loader reads back exactly the hub's rows."""

from __future__ import annotations

import pytest

from cee_bench.classification.data import load_hub, load_splits
from cee_bench.tasks import CLASSIFICATION_TASKS

ROWS = {
    "mrpc": {"sentence1": ['He said "no" .', " Leading space", "A\ttab and a\nbreak"] * 40,
             "sentence2": ["Two", "pairs", "here"] * 40, "label": [1, 0, 1] * 40},
    "sst2": {"sentence": ["a fine film ", "dull"] * 60, "label": [1, 0] * 60},
    "mnli": {"premise": ["p"] * 120, "hypothesis": ["h"] * 120, "label": [0, 1, 2] * 40},
}


@pytest.fixture
def hub(monkeypatch):
    """`datasets.load_dataset` answering from small in-memory datasets (train and the task's dev split)."""
    import datasets

    calls = []

    def load_dataset(name, config):
        calls.append((name, config))
        columns = ROWS[config]
        dev = CLASSIFICATION_TASKS[config].hub_dev_split
        split = {key: values[:30] for key, values in columns.items()}
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({**columns, "idx": list(range(120))}),
                                     dev: datasets.Dataset.from_dict({**split, "idx": list(range(30))})})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_the_copy_reads_back_as_the_hubs_rows(hub, tmp_path, cli):
    code, out, err = cli("data", "glue", "--to", str(tmp_path / "glue"), "--tasks", "mrpc,sst2,mnli")
    assert code == 0 and out == "", err
    assert hub == [("nyu-mll/glue", "mrpc"), ("nyu-mll/glue", "sst2"), ("nyu-mll/glue", "mnli")]
    assert f"wrote {tmp_path / 'glue' / 'MNLI' / 'dev_matched.tsv'} (30 rows)" in err
    assert "mrpc: 100 tab(s) or line break(s) inside texts written as spaces" in err
    for name in ("mrpc", "sst2", "mnli"):
        task = CLASSIFICATION_TASKS[name]
        train, dev, _ = load_hub(task)
        local = load_splits(task, tmp_path / "glue")
        assert len(local.train) + len(local.heldout) + len(local.calibration) == len(train)
        assert len(local.dev) == len(dev)
        clean = [tuple(t.replace("\t", " ").replace("\n", " ") for t in e.texts) for e in dev]
        assert [e.texts for e in local.dev] == clean and [e.label for e in local.dev] == [e.label for e in dev]
    header = (tmp_path / "glue" / "MRPC" / "train.tsv").read_text().splitlines()[:2]
    assert header == ["#1 String\t#2 String\tQuality", 'He said "no" .\tTwo\t1']


def test_nothing_is_overwritten_without_force_and_bad_input_is_one_line(hub, tmp_path, cli):
    folder = tmp_path / "glue"
    assert cli("data", "glue", "--to", str(folder), "--tasks", "sst2")[0] == 0
    (folder / "SST-2" / "dev.tsv").write_text("mine\n")
    for args, message in [(["--tasks", "sst2"], "train.tsv exists; pass --force"),
                          (["--tasks", "nosuch"], "unknown GLUE task 'nosuch'")]:
        code, out, err = cli("data", "glue", "--to", str(folder), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert (folder / "SST-2" / "dev.tsv").read_text() == "mine\n"
    (tmp_path / "file").write_text("x")
    code, _, err = cli("data", "glue", "--to", str(tmp_path / "file"), "--tasks", "sst2")
    assert code == 2 and "is a file" in err
    assert cli("data", "glue", "--to", str(folder), "--tasks", "sst2", "--force")[0] == 0
    assert (folder / "SST-2" / "dev.tsv").read_text().startswith("sentence\tlabel\n")


def test_an_unreachable_hub_says_how_to_get_the_data(monkeypatch, tmp_path, cli):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    code, _, err = cli("data", "glue", "--to", str(tmp_path / "glue"), "--tasks", "rte")
    assert code == 2 and "cannot load nyu-mll/glue/rte from the hub (ConnectionError)" in err
    assert "cee-bench data glue --to DIR" in err and not (tmp_path / "glue" / "RTE").exists()
