"""The classification task registry: where each GLUE task's data comes from and how it is scored.

A task is pure description (files, columns, label names, metrics); `data.py` does the reading. Label ids follow the
Hugging Face `nyu-mll/glue` datasets, so a model trained on local TSV files and one trained on the hub data agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from cee_bench.errors import UserError

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class Task:
    """One GLUE classification task."""

    name: str
    glue_dir: str  # folder name in the GLUE download layout
    train_file: str
    dev_file: str
    text_columns: tuple[str, ...]  # column names in the local TSV
    label_column: str  # column name in the local TSV
    label_names: tuple[str, ...]  # index = label id, as in the hub dataset
    tsv_labels: tuple[str, ...]  # the label strings of the TSV, aligned with label_names
    hub_config: str
    hub_text_columns: tuple[str, ...]
    hub_dev_split: str
    metrics: tuple[str, ...]  # first one is the task's main score (Table 3's column)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("rte", "RTE", "train.tsv", "dev.tsv", ("sentence1", "sentence2"), "label",
             ("entailment", "not_entailment"), ("entailment", "not_entailment"),
             "rte", ("sentence1", "sentence2"), "validation", ("accuracy",)),
        Task("mrpc", "MRPC", "train.tsv", "dev.tsv", ("#1 String", "#2 String"), "Quality",
             ("not_equivalent", "equivalent"), ("0", "1"),
             "mrpc", ("sentence1", "sentence2"), "validation", ("f1", "accuracy")),
        Task("sst2", "SST-2", "train.tsv", "dev.tsv", ("sentence",), "label",
             ("negative", "positive"), ("0", "1"),
             "sst2", ("sentence",), "validation", ("accuracy",)),
        Task("qnli", "QNLI", "train.tsv", "dev.tsv", ("question", "sentence"), "label",
             ("entailment", "not_entailment"), ("entailment", "not_entailment"),
             "qnli", ("question", "sentence"), "validation", ("accuracy",)),
        Task("qqp", "QQP", "train.tsv", "dev.tsv", ("question1", "question2"), "is_duplicate",
             ("not_duplicate", "duplicate"), ("0", "1"),
             "qqp", ("question1", "question2"), "validation", ("f1", "accuracy")),
        Task("mnli", "MNLI", "train.tsv", "dev_matched.tsv", ("sentence1", "sentence2"), "gold_label",
             ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
             "mnli", ("premise", "hypothesis"), "validation_matched", ("accuracy",)),
    )
}


def get_task(name: str) -> Task:
    """The task called `name`, or a user error listing the known ones."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise UserError(f"unknown task '{name}'; known tasks: {', '.join(TASKS)}") from None
