"""A damaged model-store entry is never served: it is set aside (renamed, not deleted), one line says so, and the
training runs again; the entries and records that were whole are left as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from damage import lines, record, run, snapshot, store_key, temp_files, unchanged


def _truncate(entry: Path) -> str:
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1_000_000])  # what a full disk or an interrupted copy leaves
    return "its weights are 1,000,000 bytes, the entry recorded"


def _flip(entry: Path) -> str:
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed: bit rot, a bad copy
    weights.write_bytes(bytes(data))
    return "its weights' sha256 is not the one the entry recorded"


def _no_config(entry: Path) -> str:
    (entry / "config.json").unlink()
    return "its config is missing"


def _garbage_config(entry: Path) -> str:
    (entry / "config.json").write_bytes(b"\0" * 512)  # the unwritten blocks a crash leaves
    return "its config cannot be read"


def _no_weights(entry: Path) -> str:
    (entry / "model.safetensors").unlink()
    return "its weights are missing"


@pytest.mark.parametrize("damage", [_truncate, _flip, _no_config, _garbage_config, _no_weights],
                         ids=["truncated-weights", "flipped-byte", "no-config", "garbage-config", "no-weights"])
def test_a_damaged_entry_is_set_aside_and_trained_again(damage, results):
    key = store_key(results, "pabee")
    entry = results / "models" / "sst2" / key
    why = damage(entry)
    before = snapshot(results)
    code, output = run(results, "--force", methods="pabee")
    assert code == 0, output
    warnings = [line for line in lines(output) if line.startswith("warning:")]
    assert len(warnings) == 1, output
    assert warnings[0].startswith(f"warning: store entry models/sst2/{key} is damaged ({why}")
    assert warnings[0].endswith(f"set aside as models/sst2/{key}.damaged, training it again")
    aside = {name.replace(f"{key}.damaged", key): digest for name, digest in snapshot(results).items()
             if f"{key}.damaged/" in name}
    assert aside == {name: digest for name, digest in before.items() if f"{key}/" in name}  # kept byte for byte
    pabee = record(results, "pabee")
    assert [t["recipe"] for t in pabee["training"]["trained"]] == [key] and not pabee["training"]["reused_from"]
    assert json.loads((entry / "config.json").read_text())["weights"]["sha256"]
    assert unchanged(before, snapshot(results), but=(f"models/sst2/{key}", "sst2/pabee__seed42.json")) == []
    assert temp_files(results) == []


def test_the_next_run_reuses_the_retrained_entry_without_a_word(results):
    _truncate(results / "models" / "sst2" / store_key(results, "pabee"))
    assert run(results, "--force", methods="pabee")[0] == 0
    code, output = run(results, "--force", methods="pabee")
    assert code == 0 and "warning" not in output, output
    assert record(results, "pabee")["training"]["reused_from"][0]["recipe"] == store_key(results, "pabee")
