"""Which stored records may share a table, and which a cell: the report's grouping, both kinds.

Records that differ in backbone, model, preset, pooling, device or code (the fingerprint of the sources that produced
them, `cee_bench.provenance.code_identity`; records from before it read "unrecorded") never share a table; within
one, a task's records share one set of data limits and a (task, method) cell one set of settings (classification:
stage settings and grid; generation: the preset's sizes and hyperparameters, exit layers and grid). What does not fit
lands in another table, with a one-line warning, or is selected with `--filter`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from cee_bench.errors import UserError
from cee_bench.precision import DEFAULT_DTYPE

OP_LABELS = {"no_loss": "★ no loss", "le1_loss": "≤1% loss", "ltt90_le1": "≤1% loss @90% conf., LTT"}
TABLE_KEYS = ("backbone", "model", "preset", "pooling", "device", "dtype", "code")  # one table per combination
UNRECORDED = "unrecorded"  # the code of records written before they carried a fingerprint
TASK_KEYS = ("max_seq_length", "max_train_samples", "max_eval_samples")  # one value per task within a table
FILTER_KEYS = (*TABLE_KEYS, *TASK_KEYS, "task", "method", "seed")
# A generation record's data limits, as its `config` (the resolved preset) names them: the counts the run's
# `--max-train-samples` and `--max-eval-samples` capped.
GENERATION_LIMITS = {"max_train_samples": "n_train", "max_eval_samples": "n_eval"}
# What of a generation record's `config` is not a cell's setting: where it ran, and what the grouping reads apart.
GENERATION_NOT_SETTINGS = ("name", "device", "model", "torch_threads", *GENERATION_LIMITS.values())


# ---------------------------------------------------------------- selecting and grouping records

def record_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The values `--filter` and the grouping look at, flat (a generation record's preset is its config's `name`,
    its data limits the counts of its resolved preset)."""
    config = {"dtype": DEFAULT_DTYPE, **record.get("config", {})}  # records from before --dtype ran in fp32
    if record.get("kind") == "generation":
        config = {**config, "preset": config.get("name"),
                  **{key: config.get(name) for key, name in GENERATION_LIMITS.items()}}
    return {"backbone": record.get("backbone"), **{k: config.get(k) for k in TABLE_KEYS[1:] if k != "code"},
            "code": (record.get("code") or {}).get("fingerprint") or UNRECORDED,
            **{k: config.get(k) for k in TASK_KEYS}, "task": record["task"], "method": record["method"],
            "seed": record.get("seed")}


def filter_records(records: list[dict[str, Any]], filters: Iterable[str]) -> list[dict[str, Any]]:
    """Keep the records matching every `key=value` (values compared as text; `none` matches an unset limit)."""
    wanted: dict[str, str] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--filter expects key=value, got '{item}'")
        if key not in FILTER_KEYS:
            raise UserError(f"--filter: unknown key '{key}'; known keys: {', '.join(FILTER_KEYS)}")
        wanted[key] = value.strip()
    return [r for r in records
            if all(str(record_fields(r)[k]).lower() == v.lower() for k, v in wanted.items())]


def cell_signature(record: dict[str, Any]) -> str:
    """What must agree across the seeds of one cell: the method's settings (classification: its stage settings;
    generation: the config less where it ran and the data limits) and its threshold grid. A grid that each seed
    chooses from its own held-out rows (ConsistentEE's `cpu` α grid: `method_meta.alpha_grid.rule`) is a result of
    the run, not a setting: the rule, which the stage settings name, is what must agree."""
    config = record.get("config", {})
    if record.get("kind") == "generation":
        settings = {k: v for k, v in config.items() if k not in GENERATION_NOT_SETTINGS}
    else:
        settings = config.get("stages")
    meta = record.get("method_meta", {})
    chosen = (meta.get("alpha_grid") or {}).get("rule", "fixed") != "fixed"
    return json.dumps({"stages": settings, "grid": None if chosen else meta.get("grid")}, sort_keys=True,
                      default=str)


def _ranks(keys: list[tuple[Any, Any]]) -> list[int]:
    """For each (scope, value), the rank of the value among those of its scope: the most common first, ties by
    first appearance."""
    counts, first = Counter(keys), {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    position, seen = {}, Counter()
    for k in sorted(counts, key=lambda k: (-counts[k], first[k])):
        position[k], seen[k[0]] = seen[k[0]], seen[k[0]] + 1
    return [position[k] for k in keys]


@dataclass
class Group:
    """Records that may share a table: same TABLE_KEYS, one set of data limits per task, one set of stage
    settings per (task, method)."""

    fields: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.records})

    def limits(self, task: str) -> dict[str, Any]:
        record = next(r for r in self.records if r["task"] == task)
        return {k: record_fields(record)[k] for k in TASK_KEYS}


def group_records(records: list[dict[str, Any]], kind: str = "classification") -> tuple[list[Group], list[str]]:
    """Split the records of one kind into groups that never mix settings, and one warning line when there are
    several. Within one TABLE_KEYS combination, the records with the most common data limits of a task (and the
    most common settings of a cell) make the first table, the others later ones; a table of other settings borrows
    the full model of its data limits, so its cells still have their Δ (classification: generation records carry
    their full model inside)."""
    by_table: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == kind:
            by_table.setdefault(tuple(record_fields(r)[k] for k in TABLE_KEYS), []).append(r)
    groups = []
    for key, recs in by_table.items():
        limits = [(r["task"], tuple(record_fields(r)[k] for k in TASK_KEYS)) for r in recs]
        cells = [((task, r["method"], lim), cell_signature(r)) for r, (task, lim) in zip(recs, limits)]
        parts: dict[tuple[int, int], Group] = {}
        for r, part in zip(recs, zip(_ranks(limits), _ranks(cells))):
            parts.setdefault(part, Group(dict(zip(TABLE_KEYS, key)))).records.append(r)
        for (lim, _), part in parts.items():  # a method's other stage settings still get the full model's Δ
            have = {r["task"] for r in part.records if r["method"] == "full"}
            part.records += [r for r in parts.get((lim, 0), part).records if r["method"] == "full"
                             and r["task"] not in have and any(x["task"] == r["task"] for x in part.records)]
        groups += [parts[p] for p in sorted(parts)]
    return groups, ([mixing_warning(groups, kind)] if len(groups) > 1 else [])


def mixing_warning(groups: list[Group], kind: str = "classification") -> str:
    differ = [k for k in TABLE_KEYS if len({str(g.fields[k]) for g in groups}) > 1]
    per_task: dict[tuple, set] = {}
    per_cell: dict[tuple, set] = {}
    for g in groups:
        for r in g.records:
            for k in TASK_KEYS:
                per_task.setdefault((r["task"], k), set()).add(str(record_fields(r)[k]))
            per_cell.setdefault((r["task"], r["method"]), set()).add(cell_signature(r))
    differ += [k for k in TASK_KEYS if any(len(v) > 1 for (_, kk), v in per_task.items() if kk == k)]
    if any(len(v) > 1 for v in per_cell.values()):
        differ.append("stage settings" if kind == "classification" else "settings")
    values = [f"{k} ({', '.join(sorted({str(g.fields[k]) for g in groups}))})" if k in TABLE_KEYS else k
              for k in differ]
    which = "" if kind == "classification" else f"{kind} "
    return (f"warning: the {which}records differ in {', '.join(values)}: shown as {len(groups)} separate tables, "
            f"never in one cell; select one with --filter KEY=VALUE (keys: {', '.join(FILTER_KEYS)})")


def method_order(kind: str = "classification") -> dict[str, int]:
    """Method name → its place in tables and figures: registry order, the full model first."""
    from cee_bench.registry import method_names

    return {name: i for i, name in enumerate(method_names(kind))}


def op_order(op: str) -> tuple[int, str]:
    return (list(OP_LABELS).index(op) if op in OP_LABELS else len(OP_LABELS), op)
