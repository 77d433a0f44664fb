"""`cee-bench data glue --to DIR`: the hub's GLUE tasks written once in GLUE's own TSV layout, so every later run can
read them offline with `--data-dir DIR` (and a machine that cannot reach the hub can be handed the folder).

What is written is what the loader reads back (`data.read_glue_tsv`): per task `<DIR>/<GLUE folder>/` with the
training file and the dev file the local layout names (MNLI: `dev_matched.tsv`), a header of the task's text columns
and its label column, label strings as GLUE's files spell them, tab-separated and unquoted. GLUE's own files hold no
tab or line break inside a text; a hub text that does (none in the GLUE tasks as published) has each replaced by a
space, and the count is reported, so a row can never split.
"""

from __future__ import annotations

import re
from pathlib import Path

from cee_bench.classification.data import Example, load_hub
from cee_bench.errors import UserError
from cee_bench.results import atomic_write
from cee_bench.tasks import CLASSIFICATION_TASKS, Task
from cee_bench.validation import check_output_folder

DEFAULT_TASKS = ("rte", "mrpc", "sst2")  # the three tasks the reference results and `make demo` use
_BREAKS = re.compile(r"[\t\r\n]")


def parse_tasks(text: str) -> list[Task]:
    """`--tasks rte,mrpc` or `all` → the tasks, each known."""
    names = list(CLASSIFICATION_TASKS) if text.strip() == "all" else [n.strip().lower() for n in text.split(",")]
    unknown = [n for n in names if n not in CLASSIFICATION_TASKS]
    if unknown or not names:
        raise UserError(f"--tasks: unknown GLUE task '{unknown[0] if unknown else text}'; choose from "
                        f"{', '.join(CLASSIFICATION_TASKS)} or all")
    return [CLASSIFICATION_TASKS[n] for n in dict.fromkeys(names)]


def targets(task: Task, folder: Path) -> tuple[Path, Path]:
    return folder / task.glue_dir / task.train_file, folder / task.glue_dir / task.dev_file


def check_targets(tasks: list[Task], folder: Path, force: bool) -> None:
    """Before anything is downloaded: the folder can hold the files, and none is overwritten without `force`."""
    for task in tasks:
        check_output_folder(folder, task.glue_dir)
        existing = [p for p in targets(task, folder) if p.exists()]
        if existing and not force:
            raise UserError(f"{existing[0]} exists; pass --force to write the hub's copy over it")


def tsv(task: Task, examples: list[Example]) -> tuple[str, int]:
    """The examples as one GLUE TSV file, and how many tabs or line breaks inside texts became spaces."""
    lines = ["\t".join((*task.text_columns, task.label_column))]
    replaced = 0
    for example in examples:
        texts = []
        for text in example.texts:
            clean, n = _BREAKS.subn(" ", text)
            texts.append(clean)
            replaced += n
        lines.append("\t".join((*texts, task.tsv_labels[example.label])))
    return "\n".join(lines) + "\n", replaced


def copy_task(task: Task, folder: Path) -> tuple[list[tuple[Path, int]], int]:
    """Write one task's train and dev files; returns each file with its row count, and the replacements made."""
    train, dev, _ = load_hub(task)
    written, replaced = [], 0
    for path, examples in zip(targets(task, folder), (train, dev)):
        text, n = tsv(task, examples)
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written.append((path, len(examples)))
        replaced += n
    return written, replaced
