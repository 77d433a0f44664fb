"""Reading GLUE data (local TSV layout or the hub), carving the held-out and calibration splits, tokenising and
batching.

Splits, named the same everywhere they are reported:
- `train`: what a method trains on (after the held-out and calibration rows are taken out);
- `heldout`: a fixed slice of the GLUE training file that no method trains on; thresholds, operating points, and what
  methods fit after training (Right-Tool's temperatures, ConsistentEE's convergence test) are chosen here, never on
  the split that is reported;
- `calibration`: a second fixed slice of the GLUE training file, the same size, that nothing is trained, fitted or
  chosen on except Learn-then-Test's guarantee (`ClassificationRecipe`, the `ltt90_le1` point). Learn-then-Test
  certifies a risk on data exchangeable with the test data *and independent of the model*; a temperature or a stopping
  rule fitted on its rows makes the model a function of them and voids the certificate. The slice is the calibration
  set rather than the held-out one because Right-Tool's temperatures and ConsistentEE's convergence are part of
  training (the stored model carries them), and the operating points without a guarantee lose nothing by sharing
  rows with them;
- `dev`: GLUE's dev set, the split Table 3 reports.

GLUE's training files are not always drawn like dev: SST-2's train holds phrases (its parse-tree nodes) and dev whole
sentences, so every choice made on a slice of train is made on other text. `split_words` measures it (median words per
example), the record keeps it under `data.words`, and the report's caption says it.
"""

from __future__ import annotations

import csv
import io
import os
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cee_bench.errors import UserError
from cee_bench.tasks import HUB_DATASET, Task
from cee_bench.validation import check_folder, read_text

HELDOUT_FRACTION = 0.1
HELDOUT_MIN, HELDOUT_MAX = 100, 1000
HELDOUT_SEED = 20240101  # fixed, so every method and seed shares the same held-out and calibration rows
MIN_TRAIN_ROWS = 10  # a smaller training file leaves too little to train on, to choose thresholds on and to calibrate


def heldout_size(rows: int, path: str) -> int:
    """How many rows of a `rows`-row training file (`path`, for the message) go to each of the held-out and the
    calibration slices: 10%, at least `HELDOUT_MIN` and at most `HELDOUT_MAX`, and never more than a third of the
    file, so a small file (under 300 rows) is carved in thirds instead of leaving nothing to train on. Below
    `MIN_TRAIN_ROWS` rows, one line says how many are needed."""
    if rows < MIN_TRAIN_ROWS:
        raise UserError(f"{path}: {rows} training row(s); at least {MIN_TRAIN_ROWS} are needed (a held-out and a "
                        "calibration slice are carved from them, the rest trains)")
    return min(rows // 3, HELDOUT_MAX, max(HELDOUT_MIN, int(HELDOUT_FRACTION * rows)))


@dataclass(frozen=True)
class Example:
    texts: tuple[str, ...]
    label: int
    id: str = ""  # the row's id in its source file: GLUE's `idx` on the hub, the 0-based data-row index of a TSV


@dataclass
class Splits:
    train: list[Example]
    heldout: list[Example]
    dev: list[Example]
    source: str  # where the data came from, for the results metadata
    files: tuple[Path, ...] = ()  # every local file read (their sha256 go into the record's provenance)
    hub: dict[str, Any] | None = None  # for hub data: dataset id, config and each split's fingerprint
    calibration: list[Example] = field(default_factory=list)  # Learn-then-Test's own slice of train


def resolve_data_dir(data_dir: Path | None) -> Path | None:
    """`--data-dir`, else `$CEE_BENCH_DATA_DIR`, else None (the hub)."""
    if data_dir is None and os.environ.get("CEE_BENCH_DATA_DIR"):
        data_dir = Path(os.environ["CEE_BENCH_DATA_DIR"])
    if data_dir is not None:
        check_folder(data_dir, "data folder", must_exist=True)
    return data_dir


def load_splits(task: Task, data_dir: Path | None, *, max_train: int | None = None,
                max_eval: int | None = None, seed: int = 42) -> Splits:
    """Train / held-out / dev examples of `task`, from a GLUE-layout folder or from the hub."""
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None:
        folder = Path(data_dir) / task.glue_dir
        check_folder(folder, "task folder", must_exist=False)
        if not folder.is_dir():
            raise UserError(f"task folder not found: {folder} (expected the GLUE layout <data-dir>/{task.glue_dir}/)")
        train_all = read_glue_tsv(task, folder / task.train_file)
        dev = read_glue_tsv(task, folder / task.dev_file)
        source, files, hub = str(folder), (folder / task.train_file, folder / task.dev_file), None
        train_source = str(folder / task.train_file)
    else:
        train_all, dev, hub = load_hub(task)
        source, files = f"hub:{HUB_DATASET}/{task.hub_config}", ()
        train_source = f"{source} (train)"
    if not train_all or not dev:
        raise UserError(f"task {task.name}: empty {'train' if not train_all else 'dev'} split in {source}")
    order = list(range(len(train_all)))
    random.Random(HELDOUT_SEED).shuffle(order)
    n_held = heldout_size(len(train_all), train_source)
    heldout = [train_all[i] for i in order[:n_held]]  # first: the same rows as before the calibration slice existed
    calibration = [train_all[i] for i in order[n_held:2 * n_held]]
    train = [train_all[i] for i in order[2 * n_held:]]
    if max_train is not None:
        train = random.Random(seed).sample(train, min(max_train, len(train)))
    if max_eval is not None:
        heldout, calibration, dev = heldout[:max_eval], calibration[:max_eval], dev[:max_eval]
    return Splits(train=train, heldout=heldout, dev=dev, source=source, files=files, hub=hub, calibration=calibration)


def median_words(examples: Sequence[Example]) -> float | None:
    """The median number of whitespace-separated words per example (both texts of a pair together)."""
    return float(statistics.median(sum(len(t.split()) for t in e.texts) for e in examples)) if examples else None


def split_words(splits: Splits) -> dict[str, float | None]:
    """Median words per example of every split: what tells a slice of train from dev (SST-2: phrases vs sentences)."""
    return {name: median_words(getattr(splits, name)) for name in ("train", "heldout", "calibration", "dev")}


def read_glue_tsv(task: Task, path: Path) -> list[Example]:
    """Parse one GLUE TSV file, naming the file and line of any malformed row.

    GLUE's files are tab-separated with no quoting (quotes are literal text), MRPC's start with a UTF-8 BOM, and a few
    rows carry stray leading spaces that the hub copies keep; all of that is read as is.
    """
    text = read_text(path, encoding="utf-8-sig")
    if "\x00" in text:  # what a crash leaves in a file's unwritten blocks; the csv module would read it as text
        raise UserError(f"{path}:{text[:text.index(chr(0))].count(chr(10)) + 1}: a NUL byte (the file is damaged, or "
                        "not text)")
    csv.field_size_limit(sys.maxsize)
    label_ids = {name: i for i, name in enumerate(task.tsv_labels)}
    examples = []
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file")
        needed = (*task.text_columns, task.label_column)
        missing = [c for c in needed if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} in header")
        cols = [header.index(c) for c in needed]
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{line_no}: malformed row ({len(row)} fields, header has {len(header)})")
            raw_label = row[cols[-1]].strip()
            if raw_label not in label_ids:
                raise UserError(f"{path}:{line_no}: field '{task.label_column}': label '{raw_label}' is not one of "
                                f"{', '.join(task.tsv_labels)}")
            examples.append(Example(tuple(row[c] for c in cols[:-1]), label_ids[raw_label], str(len(examples))))
    return examples


def load_hub(task: Task) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Train and dev examples of `task` from the hub (`nyu-mll/glue`), and the dataset's id and fingerprints."""
    try:
        import datasets
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()  # the one line below says it; the hub's retry warnings would repeat it
        datasets.utils.logging.set_verbosity_error()
        ds = datasets.load_dataset(HUB_DATASET, task.hub_config)
    except Exception as exc:  # any hub/network failure is the user's to fix (offline, no --data-dir)
        raise UserError(f"cannot load {HUB_DATASET}/{task.hub_config} from the hub ({type(exc).__name__}); "
                        "pass --data-dir with a GLUE-layout folder to run offline (`cee-bench data glue --to DIR` "
                        "writes one wherever the hub is reachable)") from None

    def convert(split: str) -> list[Example]:
        rows = ds[split]
        return [Example(tuple(r[c] for c in task.hub_text_columns), int(r["label"]), str(r.get("idx", n)))
                for n, r in enumerate(rows)]

    splits = ("train", task.hub_dev_split)
    hub = {"dataset": HUB_DATASET, "config": task.hub_config,
           "fingerprints": {split: getattr(ds[split], "_fingerprint", None) for split in splits}}
    return convert("train"), convert(task.hub_dev_split), hub


@dataclass
class Encoded:
    """A tokenised split: one id list per example, kept unpadded so batches pad only to their own longest row."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: torch.Tensor
    ids: list[str] | None = None  # the examples' ids (`Example.id`), for per-example logs

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch_rows(self, batch_size: int, indices: Sequence[int] | None = None, *,
                   by_length: bool = True) -> list[list[int]]:
        """The rows of each inference batch: with `by_length` (length bucketing), rows of similar length together.

        Rows are sorted by their number of real tokens (stably, so ties keep their order) and cut into batches of
        `batch_size`, so each batch pads little: a batch of file-order rows pads every row to the longest one drawn,
        which on GLUE pairs carries about 2.4× the real tokens at batch 32. Padded positions are masked, so a row's
        result does not depend on the batch it lands in (up to float rounding). Without `by_length`: file order.
        """
        order = list(indices) if indices is not None else list(range(len(self)))
        if by_length:
            order.sort(key=lambda i: len(self.input_ids[i]))
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def map_in_order(self, fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                     batch_size: int) -> dict[str, torch.Tensor]:
        """`fn` over length-bucketed batches of the whole split, its outputs (dim 0 = the batch's rows)
        concatenated back in the split's own row order: the one way evaluation, tracing and state collection batch."""
        parts: dict[str, list[torch.Tensor]] = {}
        rows = []
        for batch in map(self.collate, self.batch_rows(batch_size)):
            for key, value in fn(batch).items():
                parts.setdefault(key, []).append(value)
            rows.append(batch["index"])
        return {key: in_row_order(chunks, rows) for key, chunks in parts.items()}

    def padding_ratio(self, batches: Sequence[Sequence[int]]) -> float:
        """Token slots the batches compute (rows × longest row, summed) ÷ the real tokens of their rows."""
        slots = sum(len(rows) * max(len(self.input_ids[i]) for i in rows) for rows in batches)
        return slots / sum(len(self.input_ids[i]) for rows in batches for i in rows)

    def collate(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        width = max(len(self.input_ids[i]) for i in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        types = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(self.input_ids[i])
            ids[r, :n] = torch.tensor(self.input_ids[i])
            mask[r, :n] = 1
            if self.token_type_ids is not None:
                types[r, :n] = torch.tensor(self.token_type_ids[i])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": self.labels[list(rows)],
                 "index": torch.tensor(list(rows))}
        if self.token_type_ids is not None:
            batch["token_type_ids"] = types
        return batch


def in_row_order(chunks: Sequence[torch.Tensor], rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-batch outputs concatenated and sorted by their rows' indices (each batch's `index`)."""
    values = torch.cat(list(chunks))
    return values[torch.argsort(torch.cat(list(rows))).to(values.device)]


def encode(tokenizer: Any, examples: list[Example], max_length: int) -> Encoded:
    """Tokenise (pairs as pairs), truncating to `max_length` word pieces."""
    columns = [list(column) for column in zip(*(e.texts for e in examples))]
    out = tokenizer(*columns, truncation=True, max_length=max_length)
    return Encoded(input_ids=out["input_ids"], token_type_ids=out.get("token_type_ids"),
                   labels=torch.tensor([e.label for e in examples], dtype=torch.long), ids=[e.id for e in examples])
