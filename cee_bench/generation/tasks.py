"""Reading generation tasks (registered with their files and fields in `cee_bench.tasks`): prompts, references and
training text.

- `cnndm`: CNN/DailyMail; the reference is the gold highlights. Local `<data>/cnn_dm/test-250.jsonl` (id, article,
  highlights) or the hub dataset abisee/cnn_dailymail (test split).
- `dolly`: Dolly-15k prompts (`<data>/dolly/prompts.jsonl`: instruction, context); the reference is the
  unaccelerated model's own output (the paper's protocol), generated once and cached.
- `alpaca`: Alpaca records (`<data>/alpaca/alpaca_5000.json`: instruction, input, output); as a task, scored
  against the full model's output like Dolly; its records are also the training text for exits and policies.

Splits are disjoint and fixed by position: evaluation examples first, then calibration (Learn-then-Test), and the
training text is taken from the *end* of the training source, so nothing trained or calibrated on is reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cee_bench.errors import UserError
from cee_bench.tasks import get_task
from cee_bench.validation import read_text

CNNDM_INSTRUCTION = "Summarize the following news article in a few sentences.\n\n"


@dataclass(frozen=True)
class PromptExample:
    """One prompt: `prompt` is the user message, `gold` the gold reference (None: score against the full model),
    `target` the response text used when the example serves as training text."""

    id: str
    prompt: str
    gold: str | None
    target: str


def _read_rows(task: str, data_dir: Path | None) -> tuple[list[dict], str]:
    """Raw rows of a task and a description of their source; one clear line when they cannot be had."""
    if data_dir is None:
        return _hub_rows(task)
    path = data_dir / get_task(task, "generation").local_file
    text = read_text(path)
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise UserError(f"{path}: expected a JSON array of records")
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    for number, row in enumerate(rows, start=1):
        missing = [f for f in get_task(task, "generation").fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise UserError(f"{path}: record {number} lacks field {missing[0]!r}")
    if not rows:
        raise UserError(f"{path}: the dataset is empty")
    return rows, str(path)


def _hub_rows(task: str) -> tuple[list[dict], str]:
    hub_id, config, split = get_task(task, "generation").hub
    try:
        from datasets import load_dataset

        rows = [dict(r) for r in load_dataset(hub_id, config, split=split)]
    except Exception as exc:  # noqa: BLE001 - any failure (no package, offline, missing dataset) is one line
        raise UserError(f"{task}: no data folder given (--data-dir or CEE_BENCH_DATA_DIR) and the hub dataset "
                        f"{hub_id} could not be loaded ({type(exc).__name__})") from None
    if task == "dolly":
        rows = [{**r, "index": i} for i, r in enumerate(rows)]
    if not rows:
        raise UserError(f"{task}: the hub dataset {hub_id} is empty")
    return rows, f"hub:{hub_id}/{split}"


def _example(task: str, row: dict, number: int) -> PromptExample:
    if task == "cnndm":
        return PromptExample(str(row.get("id", number)), CNNDM_INSTRUCTION + row["article"].strip(),
                       row["highlights"], row["highlights"])
    if task == "dolly":
        context = row["context"].strip()
        prompt = row["instruction"].strip() + (f"\n\n{context}" if context else "")
        return PromptExample(str(row.get("index", number)), prompt, None, row.get("response", ""))
    extra = row["input"].strip()
    prompt = row["instruction"].strip() + (f"\n\n{extra}" if extra else "")
    return PromptExample(str(number), prompt, None, row["output"])


def load_examples(task: str, data_dir: Path | None) -> tuple[list[PromptExample], str]:
    """Every example of `task` in source order, and where they came from."""
    get_task(task, "generation")
    rows, source = _read_rows(task, data_dir)
    return [_example(task, row, n) for n, row in enumerate(rows)], source


@dataclass(frozen=True)
class PromptSplits:
    """Disjoint evaluation / calibration / training examples and a note on the training text's origin."""

    eval: list[PromptExample]
    calib: list[PromptExample]
    train: list[PromptExample]
    source: str
    train_note: str
    files: tuple[str, ...] = ()  # the data files read (evaluation/calibration source, and Alpaca when it trains)


def make_splits(task: str, data_dir: Path | None, n_eval: int, n_calib: int, n_train: int,
                warn: Callable[[str], None]) -> PromptSplits:
    """Evaluation and calibration from the head of the task's data; training text from the tail of Alpaca for
    dolly/alpaca (the paper trains on Alpaca), of the CNN/DM file for cnndm. Without Alpaca at hand, dolly trains
    on its own held-apart prompts (text only) and says so through `warn` (one line)."""
    examples, source = load_examples(task, data_dir)
    sources = [source]
    if len(examples) < n_eval + n_calib:
        raise UserError(f"{task}: {len(examples)} examples at {source}, need {n_eval + n_calib} "
                        f"({n_eval} evaluation + {n_calib} calibration)")
    held = examples[:n_eval + n_calib]
    if task == "cnndm" or task == "alpaca":
        pool = examples[n_eval + n_calib:]
        note = f"{task} records held apart from evaluation and calibration (the tail of {source})"
    else:
        try:
            pool, alpaca_source = load_examples("alpaca", data_dir)
            note = f"Alpaca records (tail of {alpaca_source})"
            sources.append(alpaca_source)
        except UserError as exc:
            warn(f"Alpaca not at hand ({exc}); training text = held-apart Dolly prompts")
            pool = examples[n_eval + n_calib:]
            note = f"Dolly prompts held apart from evaluation (no responses; Alpaca not at hand: {exc})"
    if len(pool) < n_train:
        raise UserError(f"{task}: only {len(pool)} training records available, need {n_train}")
    train = pool[len(pool) - n_train:] if n_train else []
    return PromptSplits(held[:n_eval], held[n_eval:], train, source, note,
                  tuple(s for s in dict.fromkeys(sources) if Path(s).is_file()))
