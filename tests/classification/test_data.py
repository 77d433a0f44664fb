"""GLUE reading on the real files in ../shared and on hand-written broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from cee_bench.classification.data import encode, heldout_size, load_splits, read_glue_tsv
from cee_bench.errors import UserError
from cee_bench.tasks import get_task


def test_real_files_parse_with_their_quirks(glue):
    assert len(read_glue_tsv(get_task("rte"), glue / "RTE" / "train.tsv")) == 2490
    mrpc = read_glue_tsv(get_task("mrpc"), glue / "MRPC" / "dev.tsv")  # starts with a UTF-8 BOM
    assert len(mrpc) == 408 and {e.label for e in mrpc} == {0, 1}
    assert len(read_glue_tsv(get_task("sst2"), glue / "SST-2" / "dev.tsv")) == 872


def test_heldout_is_fixed_disjoint_and_not_dev(glue):
    a = load_splits(get_task("rte"), glue, seed=1)
    b = load_splits(get_task("rte"), glue, seed=2, max_train=500)
    assert a.heldout == b.heldout  # the same held-out rows for every seed and method
    assert len(a.heldout) == 249 and len(a.train) == 2490 - 249 and len(a.dev) == 277
    held = set(map(id, a.heldout))
    assert not held & set(map(id, a.train))
    assert len(b.train) == 500


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "RTE"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(text)
    return folder / "train.tsv"


def test_malformed_row_names_file_and_line(tmp_path):
    path = _write(tmp_path, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\tfields\n")
    with pytest.raises(UserError, match=r"train.tsv:3: malformed row"):
        read_glue_tsv(get_task("rte"), path)


def test_label_outside_label_set(tmp_path):
    path = _write(tmp_path, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(UserError, match="label 'maybe' is not one of"):
        read_glue_tsv(get_task("rte"), path)


def test_a_nul_byte_names_file_and_line(tmp_path):
    path = _write(tmp_path, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\x00b\tc\tentailment\n")
    with pytest.raises(UserError, match=r"train.tsv:3: a NUL byte"):
        read_glue_tsv(get_task("rte"), path)


@pytest.mark.parametrize("rows, heldout", [(10, 5), (60, 30), (199, 99), (200, 100), (1500, 150), (20000, 1000)])
def test_the_heldout_slice_never_takes_more_than_half(rows, heldout):
    assert heldout_size(rows, "train.tsv") == heldout


def test_a_file_too_small_to_carve_says_how_many_rows_are_needed():
    with pytest.raises(UserError, match=r"train.tsv: 9 training row\(s\); at least 10 are needed"):
        heldout_size(9, "train.tsv")


def test_missing_column_and_missing_file(tmp_path):
    path = _write(tmp_path, "index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(UserError, match="missing column"):
        read_glue_tsv(get_task("rte"), path)
    with pytest.raises(UserError, match="task folder not found"):
        load_splits(get_task("mrpc"), tmp_path)


def test_tasks_not_at_hand_load_from_a_local_glue_folder(tmp_path, tokenizer):
    """QQP and MNLI are not in ../shared: the loader must still read their glue layout."""
    qqp = tmp_path / "QQP"
    qqp.mkdir()
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    rows = [f"{i}\t{i}\t{i + 1}\tq{i}?\tother {i}?\t{i % 2}\n" for i in range(120)]
    (qqp / "train.tsv").write_text(header + "".join(rows))
    (qqp / "dev.tsv").write_text(header + "".join(rows[:10]))
    splits = load_splits(get_task("qqp"), tmp_path)
    assert len(splits.heldout) == 60 and len(splits.train) == 60  # under 200 rows: two halves
    encoded = encode(tokenizer, splits.dev, 32)
    batch = encoded.collate([0, 1])
    assert batch["input_ids"].shape[0] == 2 and "token_type_ids" in batch
