"""A user's own GLUE-layout data with surprises: a training file too small for the usual held-out and calibration slices
is carved in thirds (and one too small for that says how many rows it needs); a damaged or malformed file is one line
naming the file, the line and the field, exit 2, and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from damage import GLUE, console, lines, snapshot

HEADER = b"sentence\tlabel\n"


def _data(tmp_path: Path, train: bytes) -> Path:
    """A GLUE-layout folder whose SST-2 `train.tsv` is `train` (the real dev file beside it)."""
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_bytes(train)
    shutil.copy(GLUE / "SST-2" / "dev.tsv", folder / "dev.tsv")
    return folder.parent


def _rows(count: int) -> bytes:
    real = (GLUE / "SST-2" / "train.tsv").read_bytes().splitlines(keepends=True)[1:count + 1]
    return HEADER + b"".join(real)


def _run(data: Path, output: Path, *args: str) -> tuple[int, str]:
    return console("run", "--task", "sst2", "--methods", "full", "--preset", "smoke", "--data-dir", str(data),
                   "--output-dir", str(output), "--quiet", *args)


def test_a_60_row_training_file_is_carved_in_thirds(tmp_path):
    output = tmp_path / "out"
    code, out = _run(_data(tmp_path, _rows(60)), output)
    assert code == 0, out
    record = json.loads((output / "sst2" / "full__seed42.json").read_text())
    assert record["data"]["train"] == record["data"]["heldout"] == record["data"]["calibration"] == 20


ROW = "a fine film\t1\n"
SURPRISES = {  # the train file's bytes → what the one line must say (`<train>` is its path)
    "too-few-rows": (_rows(9), "<train>: 9 training row(s); at least 10 are needed"),
    "nul-byte": (HEADER + (ROW * 20).encode() + b"a \0 film\t1\n", "<train>:22: a NUL byte"),
    "unknown-label": (HEADER + (ROW * 20).encode() + b"a film\tpositive\n",
                      "<train>:22: field 'label': label 'positive' is not one of 0, 1"),
    "extra-field": (HEADER + (ROW * 5).encode() + b"a\tfilm\t1\n", "<train>:7: malformed row (3 fields, header has 2)"),
    "not-utf8": (HEADER + (ROW * 3).encode() + b"caf\xe9\t1\n", "<train>:5: bytes that are not UTF-8"),
    "no-label-column": (b"sentence\tscore\n" + (ROW * 20).encode(), "<train>: missing column(s) label in header"),
    "header-only": (HEADER, "empty train split"),
    "empty-file": (b"", "<train>: empty file"),
}


@pytest.mark.parametrize("surprise", list(SURPRISES))
def test_a_surprising_training_file_is_one_line_and_exit_2(surprise, tmp_path):
    content, message = SURPRISES[surprise]
    data = _data(tmp_path, content)
    output = tmp_path / "out"
    (output / "sst2").mkdir(parents=True)
    (output / "sst2" / "keep.json").write_text("{}")  # something already there, which must stay as it was
    before = snapshot(output)
    code, out = _run(data, output)
    assert code == 2 and len(lines(out)) == 1 and "Traceback" not in out, out
    assert message.replace("<train>", str(data / "SST-2" / "train.tsv")) in out, out
    assert snapshot(output) == before and not (output / ".locks").exists()


def test_windows_line_endings_and_a_byte_order_mark_read_as_the_plain_file(tmp_path):
    from cee_bench.classification.data import read_glue_tsv
    from cee_bench.tasks import get_task

    plain = _rows(30)
    windows = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")
    read = [read_glue_tsv(get_task("sst2"), _data(tmp_path / name, content) / "SST-2" / "train.tsv")
            for name, content in (("plain", plain), ("windows", windows))]
    assert read[0] == read[1] and len(read[0]) == 30
