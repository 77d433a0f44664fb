"""Resume by content (cee_bench/resume.py): a stored record is reused only when the fields that define its numbers
equal the request."""

from __future__ import annotations

import json

import pytest

from cee_bench.errors import UserError
from cee_bench.resume import replace_damaged, reusable

WANTED = {"config": {"preset": "smoke", "stages": {"train": {"epochs": 2, "alphas": (0.1, 0.2)}}},
          "data.source": "glue/RTE", "seed": 42}


def _store(tmp_path, **changes):
    record = {"task": "rte", "method": "pabee", "seed": 42, "data": {"source": "glue/RTE"},
              "config": {"preset": "smoke", "stages": {"train": {"epochs": 2, "alphas": [0.1, 0.2]}}}}
    record.update(changes)
    path = tmp_path / "pabee__seed42.json"
    path.write_text(json.dumps(record))
    return path


def test_same_request_is_reused_tuples_and_lists_alike(tmp_path):
    assert reusable(_store(tmp_path), WANTED, force=False)


def test_absent_or_forced_records_are_computed(tmp_path):
    assert not reusable(tmp_path / "none.json", WANTED, force=False)
    assert not reusable(_store(tmp_path, seed=7), WANTED, force=True)


def test_a_difference_names_the_nested_field_and_the_way_out(tmp_path):
    path = _store(tmp_path, config={"preset": "smoke", "stages": {"train": {"epochs": 3, "alphas": [0.1, 0.2]}}})
    with pytest.raises(UserError, match=r"config.stages.train.epochs \(stored 3, requested 2\); pass --force .* "
                                        r"another --output-dir"):
        reusable(path, WANTED, force=False)


def test_a_field_the_record_lacks_counts_as_a_difference(tmp_path):
    path = _store(tmp_path, data={})
    with pytest.raises(UserError, match=r"data.source \(stored —, requested glue/RTE\)"):
        reusable(path, WANTED, force=False)


def test_an_unreadable_record_is_recomputed_and_set_aside_with_one_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"{\xff")
    assert not reusable(path, WANTED, force=False)
    said = []
    replace_damaged(path, said.append)
    assert not path.exists() and (tmp_path / "x.json.damaged").read_bytes() == b"{\xff"
    assert len(said) == 1 and "cannot read results file" in said[0] and "x.json.damaged" in said[0]


def test_a_record_of_a_newer_version_is_refused_not_misread(tmp_path):
    path = _store(tmp_path, schema=99)
    with pytest.raises(UserError, match=r"newer cee-bench \(schema 99; this version reads 1\).*--force"):
        reusable(path, WANTED, force=False)
    assert not reusable(path, WANTED, force=True)


def test_debris_of_an_interrupted_write_is_cleared_but_the_record_kept(tmp_path):
    path = _store(tmp_path)
    leftover = tmp_path / f".{path.name}.abc123.tmp"
    leftover.write_text('{"task": ')
    replace_damaged(path, lambda line: pytest.fail(line))
    assert path.exists() and not leftover.exists()
