"""GLUE reading on the real files in ../shared and on hand-written broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from cee_bench.classification.data import encode, heldout_size, load_splits, read_glue_tsv, split_words
from cee_bench.errors import UserError
from cee_bench.tasks import get_task


def test_real_files_parse_with_their_quirks(glue):
    assert len(read_glue_tsv(get_task("rte"), glue / "RTE" / "train.tsv")) == 2490
    mrpc = read_glue_tsv(get_task("mrpc"), glue / "MRPC" / "dev.tsv")  # starts with a UTF-8 BOM
    assert len(mrpc) == 408 and {e.label for e in mrpc} == {0, 1}
    assert len(read_glue_tsv(get_task("sst2"), glue / "SST-2" / "dev.tsv")) == 872


def test_heldout_and_calibration_are_fixed_disjoint_and_not_dev(glue):
    a = load_splits(get_task("rte"), glue, seed=1)
    b = load_splits(get_task("rte"), glue, seed=2, max_train=500)
    assert a.heldout == b.heldout and a.calibration == b.calibration  # the same rows for every seed and method
    assert len(a.heldout) == len(a.calibration) == 249 and len(a.train) == 2490 - 2 * 249 and len(a.dev) == 277
    held, calibration = set(map(id, a.heldout)), set(map(id, a.calibration))
    assert not held & set(map(id, a.train)) and not calibration & set(map(id, a.train)) and not held & calibration
    assert len(b.train) == 500


def test_split_words_tell_sst2_phrases_from_its_dev_sentences(glue):
    """SST-2's train (and so held-out and calibration) holds phrases, its dev whole sentences: measured, not assumed."""
    words = split_words(load_splits(get_task("sst2"), glue, max_eval=400))
    assert words["heldout"] < 10 < 15 < words["dev"] and words["calibration"] < 10


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


@pytest.mark.parametrize("rows, heldout", [(10, 3), (60, 20), (299, 99), (300, 100), (1500, 150), (20000, 1000)])
def test_the_heldout_and_calibration_slices_never_take_more_than_a_third_each(rows, heldout):
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
    rows = [f"{i}\t{i}\t{i + 1}\tq{i}?\tother {i}?\t{i % 2}\n" for i in range(220)]
    (qqp / "train.tsv").write_text(header + "".join(rows))
    (qqp / "dev.tsv").write_text(header + "".join(rows[:10]))
    splits = load_splits(get_task("qqp"), tmp_path)
    assert len(splits.heldout) == len(splits.calibration) == 73 and len(splits.train) == 74  # under 300: thirds
    encoded = encode(tokenizer, splits.dev, 32)
    batch = encoded.collate([0, 1])
    assert batch["input_ids"].shape[0] == 2 and "token_type_ids" in batch
