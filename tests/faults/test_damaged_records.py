"""A record a crash or a copy damaged is never misread: `run` names it, sets it aside and computes it again; `report`
names it and shows the others (or stops, with `--strict`); a record of a newer cee-bench is refused by `run` and
skipped by `report`."""

from __future__ import annotations

import json

import pytest

from damage import console, lines, record, run, snapshot, temp_files, unchanged

DAMAGES = {
    "truncated": lambda data: data[: len(data) // 3],  # a copy cut short
    "empty": lambda data: b"",  # a file created, never written
    "zeros": lambda data: b"\0" * len(data),  # a crash's unwritten blocks
    "not-utf8": lambda data: data.replace(b'"sst2"', b'"sst\xe92"', 1),
    "not-a-record": lambda data: b"[1, 2, 3]\n",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_run_names_a_damaged_record_sets_it_aside_and_recomputes_it(damage, results):
    path = results / "sst2" / "pabee__seed42.json"
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    before = snapshot(results)
    code, output = run(results)
    assert code == 0, output
    (warning,) = [line for line in lines(output) if line.startswith("warning: ")]
    assert str(path) in warning and any(line.startswith("2 result file(s)") for line in lines(output)), output
    assert warning.endswith("set aside as pabee__seed42.json.damaged, computing the record again")
    assert snapshot(results)["sst2/pabee__seed42.json.damaged"] == before["sst2/pabee__seed42.json"]
    pabee = record(results, "pabee")
    assert pabee["training"]["reused_from"] and not pabee["training"]["trained"]  # the store still had it
    assert unchanged(before, snapshot(results), but=("sst2/pabee__seed42.json",)) == []
    assert temp_files(results) == []


def test_report_names_an_unreadable_record_and_shows_the_others(results):
    path = results / "sst2" / "pabee__seed42.json"
    path.write_bytes(path.read_bytes()[:2000])
    before = snapshot(results)
    code, output = console("report", "--results-dir", str(results), "--format", "csv")
    assert code == 0, output
    assert f"warning: cannot read results file {path} (JSONDecodeError" in output and "skipped it" in output
    assert ",full," in output and ",pabee," not in output
    code, output = console("report", "--results-dir", str(results), "--strict")
    assert code == 2 and lines(output) == [lines(output)[0]], output
    assert lines(output)[0].startswith(f"error: cannot read results file {path}")
    assert snapshot(results) == before


def test_a_record_of_a_newer_version_is_skipped_by_report_and_refused_by_run(results):
    path = results / "sst2" / "pabee__seed42.json"
    newer = {**json.loads(path.read_text()), "schema": 99}
    path.write_text(json.dumps(newer))
    before = snapshot(results)
    code, output = console("report", "--results-dir", str(results), "--format", "csv")
    assert code == 0 and ",pabee," not in output and ",full," in output, output
    assert f"warning: results file {path} was written by a newer cee-bench (schema 99; this version reads 1); " \
           "skipped it" in output
    code, output = run(results)
    assert code == 2 and len(lines(output)) == 1 and "newer cee-bench (schema 99" in output, output
    assert "--force" in output and snapshot(results) == before
    code, output = run(results, "--force", methods="pabee")
    assert code == 0 and "set aside as pabee__seed42.json.damaged" in output, output
    assert json.loads((results / "sst2" / "pabee__seed42.json.damaged").read_text()) == newer
    assert record(results, "pabee")["schema"] == 1
