"""A generation group's cells: per (task, method) its named operating points and its curve points, each aggregated
over the seeds into one row, the same seed mean and sd and two-level intervals of ROUGE-L, BERT-F and saved layers
that a classification cell gets, from the per-example values the records keep, and the evidence the verdict reads.
It is its own room because generation cells share only the aggregation helpers and the evidence types with the
classification cells of `cells.py`, which together passed 500 lines.
"""

from __future__ import annotations

from typing import Any

from cee_bench.intervals import DEFAULT_RESAMPLES
from cee_bench.report.cells import NO_LOG, MethodEvidence, TaskCells, mean_present, seed_sd
from cee_bench.report.evidence import Samples, TaskEvidence, curve_entry, op_entry, seed_level
from cee_bench.report.grouping import TABLE_KEYS, TASK_KEYS, Group, record_fields

GENERATION_FIELDS = ("rouge_l", "bert_f", "mean_layers_per_token", "saved_layers", "speedup_measured", "tokens_per_s")


def generation_cells(group: Group, resamples: int = DEFAULT_RESAMPLES) -> list[TaskCells]:
    """Every row of a generation group, in the records' order of tasks and methods: per method its named operating
    points (e.g. `ltt`, `full`), then its curve points (operating_point = "curve"), each aggregated over the seeds
    (a cell's seeds share their settings and grid, so their curves align point by point)."""
    tasks = []
    for task in dict.fromkeys(r["task"] for r in group.records):
        recs = [r for r in group.records if r["task"] == task]
        ev = TaskEvidence(task, recs, resamples)
        rows, evidence, reference = [], {}, None
        for method in dict.fromkeys(r["method"] for r in recs):
            mrecs = sorted((r for r in recs if r["method"] == method), key=lambda r: r.get("seed") or 0)
            found = MethodEvidence(task, method, mrecs[0].get("method_display", method), "generation",
                                   [r.get("seed") for r in mrecs], curve=ev.curve(mrecs))
            for op in dict.fromkeys(op for r in mrecs for op in r.get("operating_points", {})):
                points = [(r, r["operating_points"][op]) for r in mrecs if op in r["operating_points"]]
                row, score, saved = _generation_cell(task, op, points, ev)
                rows.append(row)
                if op == "full":
                    reference = reference or score
                else:
                    found.points[op], found.reached[op], found.constant[op] = (score, saved), True, False
            curves = [[p for p in r.get("curve", []) if not p.get("full_model")] for r in mrecs]
            curve = found.curve
            for i in range(min(len(c) for c in curves)):
                row, _, _ = _generation_cell(task, "curve", [(r, c[i]) for r, c in zip(mrecs, curves)], ev,
                                             (curve[0].at(i), curve[1].at(i)) if curve else None)
                rows.append(row)
            evidence[method] = found
        tasks.append(TaskCells(ev, rows, evidence, reference))
    return tasks


def _generation_cell(task: str, op: str, points: list[tuple[dict, dict]], ev: TaskEvidence,
                     samples: tuple[Samples, Samples] | None = None
                     ) -> tuple[dict[str, Any], Samples | None, Samples | None]:
    """One generation (task, method, point) over its seeds: the CSV row, which the generation tables render (its
    `method` is the method's display name, as the tables show it), and its ROUGE-L and saved-layers samples."""
    first = points[0][0]
    seeds = [r.get("seed") for r, _ in points]
    fields = record_fields(first)
    display = first.get("method_display", first["method"])
    row: dict[str, Any] = {
        "kind": "generation", "task": task, "method": display, "method_display": display, "operating_point": op,
        **{k: fields[k] for k in (*TABLE_KEYS, *TASK_KEYS)}, "metric": first.get("metric"),
        "num_layers": first.get("num_layers"), "seeds": len(points), "seed_list": ";".join(map(str, seeds)),
        "threshold": _one_or_all([p.get("threshold") for _, p in points]),
        "alpha": _one_or_all([p.get("alpha") for _, p in points]),
        **{f: mean_present([p.get(f) for _, p in points]) for f in GENERATION_FIELDS},
        "fallback_seeds": sum(bool(p.get("fallback")) for _, p in points),
        "bootstrap_resamples": None, "interval_note": "", "interval_levels": None,
    }
    row["fallback"] = row["fallback_seeds"] == len(points)
    for f in ("rouge_l", "bert_f", "saved_layers"):
        row[f"{f}_sd"] = seed_sd([float(p[f]) for _, p in points if p.get(f) is not None])
    row["score"] = row["score_mean"] = row["rouge_l"]  # the main score, in the columns classification fills
    row["score_sd"] = row["rouge_l_sd"]
    score, saved = samples if samples is not None else ev.point(points, op)
    row["rouge_l_ci_low"], row["rouge_l_ci_high"], row["interval_levels"] = ev.summary(score)
    row["score_ci_low"], row["score_ci_high"] = row["rouge_l_ci_low"], row["rouge_l_ci_high"]
    row["saved_layers_ci_low"], row["saved_layers_ci_high"], _ = ev.summary(saved)
    bert = _bert_samples(ev, points, op)
    row["bert_f_ci_low"], row["bert_f_ci_high"], _ = ev.summary(bert)
    if row["interval_levels"] is not None:
        row["bootstrap_resamples"] = ev.resamples
    if score is None or not score.examples:
        row["interval_note"] = NO_LOG
    return row, score, saved


def _bert_samples(ev: TaskEvidence, points: list[tuple[dict, dict]], op: str) -> Samples | None:
    seeds = [r.get("seed") for r, _ in points]
    entries = [curve_entry(ev.log(r), r, p) if op == "curve" else op_entry(ev.log(r), op, p) for r, p in points]
    found = ev.field_samples(entries, seeds, "bert_f")
    if found is not None:
        return found
    plain = [p.get("bert_f") for _, p in points]
    return None if any(v is None for v in plain) else seed_level(seeds, plain, ev.resamples)


def _one_or_all(values: list[Any]) -> Any:
    """The seeds' common value, or all of them joined (as a classification cell joins its thresholds)."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else ";".join(map(str, distinct))
