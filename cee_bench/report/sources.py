"""Where a table's numbers came from, read from its records: the code that produced them (a README's provenance line
quotes `code_text` rather than a commit typed by hand), and the text its choices were made on (`split_words`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cee_bench.errors import UserError
from cee_bench.report.grouping import TASK_KEYS, record_fields


def code_text(records: list[dict[str, Any]]) -> str:
    """The code fingerprint(s), commit(s) with their dirty flag, and the dates of the records."""
    fingerprints = sorted({record_fields(r)["code"] for r in records})
    commits = sorted({f"{(c or '?')[:7]}{' (dirty)' if d else ''}" for c, d in (_commit(r) for r in records)})
    dates = sorted(d[:10] for d in ((r.get("provenance") or {}).get("date") for r in records) if d)
    when = (f", {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")) if dates else ""
    return f"code {', '.join(f[:12] for f in fingerprints)} (commit {', '.join(commits)}{when})"


def _commit(record: dict[str, Any]) -> tuple[str | None, bool | None]:
    code = record.get("code") or {}
    git = (record.get("provenance") or {}).get("git") or {}
    return code.get("commit") or git.get("commit"), code.get("dirty", git.get("dirty"))


def split_words(records: list[dict[str, Any]]) -> dict[str, float | None] | None:
    """Median words per example of the task's splits: as the records keep them (`data.words`), else measured from the
    data folder the records name when it is at hand (records from before they kept it), else None."""
    for record in records:
        words = (record.get("data") or {}).get("words")
        if words:
            return words
    record = records[0]
    source = Path(str((record.get("data") or {}).get("source", "")))
    if record.get("kind", "classification") != "classification" or not source.is_dir():
        return None
    from cee_bench.classification.data import load_splits, split_words as measure
    from cee_bench.tasks import get_task

    limits = {k: record_fields(record)[k] for k in TASK_KEYS}
    try:
        words = measure(load_splits(get_task(record["task"]), source.parent, max_eval=limits["max_eval_samples"]))
    except UserError:
        return None
    if "calibration" not in (record.get("data") or {}):
        words["calibration"] = None  # the record predates the calibration slice: nothing was calibrated there
    return words
