"""The model store keeps its entries whole and verified (cee_bench/store.py): an entry appears complete or not at
all, a read checks the weights' size and sha256, a damaged entry is set aside (never deleted) with one line, and
what interrupted writes leave is removed by whoever holds the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filelock import FileLock

from cee_bench.locks import lock_path
from cee_bench.store import CONFIG, WEIGHTS, ModelStore, check_entry, drop_entry, write_entry

IDENTITY = {"recipe": "pabee", "seed": 42}


def _weights(text: str):
    return lambda path: Path(path).write_bytes(text.encode() * 1000)


def _store(tmp_path: Path, said: list[str]) -> ModelStore:
    return ModelStore(tmp_path, "sst2", log=said.append, warn=lambda line: said.append(f"warning: {line}"))


def test_an_entry_is_written_whole_and_read_back_verified(tmp_path):
    store = _store(tmp_path, [])
    write_entry(store.folder("k"), _weights("a"), {"identity": IDENTITY})
    config, problem = check_entry(store.folder("k"))
    assert problem is None and config["weights"]["size"] == 1000 and len(config["weights"]["sha256"]) == 64
    assert sorted(p.name for p in store.root.iterdir()) == ["k"]
    assert store.find("k", IDENTITY) == config and store.find("k", {**IDENTITY, "seed": 1}) is None


def test_a_failed_write_leaves_the_old_entry_and_no_temp_folder(tmp_path):
    store = _store(tmp_path, [])
    write_entry(store.folder("k"), _weights("a"), {"identity": IDENTITY})

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_entry(store.folder("k"), broken, {"identity": IDENTITY})
    assert check_entry(store.folder("k"))[0]["weights"]["size"] == 1000
    assert sorted(p.name for p in store.root.iterdir()) == ["k"]
    write_entry(store.folder("k"), _weights("b"), {"identity": IDENTITY})  # a retrained key replaces the entry
    assert (store.folder("k") / WEIGHTS).read_bytes()[:1] == b"b"
    assert sorted(p.name for p in store.root.iterdir()) == ["k"]
    drop_entry(store.folder("k"))
    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("damage, problem", [
    (lambda f: (f / WEIGHTS).write_bytes(b"a" * 999), "its weights are 999 bytes, the entry recorded 1,000"),
    (lambda f: (f / WEIGHTS).write_bytes(b"b" * 1000), "its weights' sha256 is not the one the entry recorded"),
    (lambda f: (f / WEIGHTS).unlink(), "its weights are missing"),
    (lambda f: (f / CONFIG).unlink(), "its config is missing"),
    (lambda f: (f / CONFIG).write_text('{"identity": '), "its config cannot be read (JSONDecodeError)"),
])
def test_a_damaged_entry_is_set_aside_with_one_line(damage, problem, tmp_path):
    said: list[str] = []
    store = _store(tmp_path, said)
    write_entry(store.folder("k"), _weights("a"), {"identity": IDENTITY})
    damage(store.folder("k"))
    assert check_entry(store.folder("k")) == (None, problem)
    with store.claim("k"):
        assert store.find("k", IDENTITY) is None
    assert said == [f"warning: store entry models/sst2/k is damaged ({problem}): set aside as "
                    "models/sst2/k.damaged, training it again"]
    assert not store.folder("k").exists() and (store.root / "k.damaged").is_dir()


def test_an_entry_from_before_checksums_is_parsed_then_given_one(tmp_path):
    from safetensors.torch import save_file
    import torch

    folder = tmp_path / "models" / "sst2" / "k"
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(3)}, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({"identity": IDENTITY, "weights": WEIGHTS}))  # the old layout
    config, problem = check_entry(folder)
    assert problem is None and json.loads((folder / CONFIG).read_text())["weights"]["sha256"] == \
        config["weights"]["sha256"]
    (folder / CONFIG).write_text(json.dumps({"identity": IDENTITY, "weights": WEIGHTS}))
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:-4])
    config, problem = check_entry(folder)
    assert config is None and problem.startswith("its weights cannot be read (Error while deserializing header")


def test_debris_is_cleared_unless_another_process_holds_its_key(tmp_path):
    store = _store(tmp_path, [])
    store.root.mkdir(parents=True)
    for key in ("free", "held"):
        (store.root / f".{key}.x1y2.tmp").mkdir()
        (store.root / f".{key}.x1y2.tmp" / WEIGHTS).write_bytes(b"half")
    other = FileLock(lock_path(tmp_path, store.folder("held")))  # another holder (flock: per open file)
    lock_path(tmp_path, store.folder("held")).parent.mkdir(parents=True, exist_ok=True)
    with other:
        store.clear_debris()
    assert [p.name for p in store.root.iterdir()] == [".held.x1y2.tmp"]
