"""The task registry, both kinds: where each task's data comes from and how it is scored.

A task is pure description (files, columns, label names, metrics) with a `kind` — "classification" (GLUE, read by
`classification/data.py`) or "generation" (prompts, read by `generation/tasks.py`) — like lm-evaluation-harness's
`output_type`: the kind picks the recipe `cee-bench run` hands the task to (`runner.RECIPES`) and the methods it
accepts. Label ids follow the Hugging
Face `nyu-mll/glue` datasets, so a model trained on local TSV files and one trained on the hub data agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    kind: str = "classification"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


CLASSIFICATION_TASKS: dict[str, Task] = {
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


@dataclass(frozen=True)
class GenerationTask:
    """One generation task: its local file (under the data folder), hub dataset (id, config, split), the fields every
    record must have, and what its outputs are scored against (`gold`: the dataset's reference; else the full
    model's own output, the paper's protocol for instruction data)."""

    name: str
    local_file: str
    hub: tuple[str, str | None, str]
    fields: tuple[str, ...]
    gold: bool
    metrics: tuple[str, ...] = ("rouge_l", "bert_f")
    kind: str = "generation"

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


TASKS: dict[str, Task | GenerationTask] = {**CLASSIFICATION_TASKS, **{
    task.name: task
    for task in (
        GenerationTask("cnndm", "cnn_dm/test-250.jsonl", ("abisee/cnn_dailymail", "3.0.0", "test"),
                       ("article", "highlights"), gold=True),
        GenerationTask("dolly", "dolly/prompts.jsonl", ("databricks/databricks-dolly-15k", None, "train"),
                       ("instruction", "context"), gold=False),
        GenerationTask("alpaca", "alpaca/alpaca_5000.json", ("tatsu-lab/alpaca", None, "train"),
                       ("instruction", "input", "output"), gold=False),
    )
}}


def task_names(kind: str) -> tuple[str, ...]:
    """The registered tasks of one kind, in registry order."""
    return tuple(name for name, task in TASKS.items() if task.kind == kind)


def get_task(name: str, kind: str | None = "classification") -> Any:
    """The task called `name` of `kind` (None: of any kind), or a user error listing the known ones — naming the
    task's kind when it exists under the other one."""
    task = TASKS.get(name.lower())
    if task is not None and (kind is None or task.kind == kind):
        return task
    known = [n for n, t in TASKS.items() if kind is None or t.kind == kind]
    if task is not None:
        raise UserError(f"{task.name} is a {task.kind} task; this takes {kind} tasks: {', '.join(known)}")
    raise UserError(f"unknown {kind + ' ' if kind == 'generation' else ''}task '{name}'; known tasks: "
                    f"{', '.join(known)}")
