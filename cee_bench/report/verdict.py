"""The verdict: the comparisons the paper makes, method against method, per task and in aggregate, each with its
two-level interval and one word — **yes**, **no** or **inconclusive**.

The paper's claim is that ConsistentEE saves more layers than the best baseline at ≤ 1% loss. So, per task:
- every method against the best baseline (the baseline other than itself that saves the most on that measure) and
  every ConsistentEE row (names starting with `consistentee`: the method, its vanilla-reward variant and any other
  ConsistentEE row, e.g. a π sweep) against every baseline;
- on (a) the saved layers at each operating point (chosen on held-out, reported on dev; both must have reached it in
  every seed) and (b) the whole dev curve: the saved layers at matched score, i.e. the largest saving each curve
  reaches at a score ≥ 99% of the full model's (per seed and resample, read piecewise-linearly between curve points,
  0 where never reached, since one would run the full model then; `evidence.matched_saving`);
- and every multi-exit method against its own static-depth control (every example out at layer k, with its own
  heads) on (b): an early-exit rule earns credit for adaptivity only where it saves more than its static curve.

Each difference is paired (same seeds, same example resamples: `evidence.Samples.minus`) and its 95% two-level
interval decides the word: **yes** when it lies above 0, **no** when it lies at or below 0 (the challenger does not
save more), **inconclusive** otherwise — and whenever the comparison cannot speak: a side that did not reach the
point, a constant predictor, a guarantee that does not hold, a degenerate task, no interval. The aggregate averages the per-task differences over the
tasks that are not degenerate (each task's resamples are independent, so their samples average resample by resample).

The rows are plain dicts (`verdict_rows`): the tables, the CSV and the JSON render them, and other renderers can too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cee_bench.intervals import interval
from cee_bench.report.cells import LTT_POINT, MethodEvidence, TaskCells, guarantee_label
from cee_bench.report.evidence import Samples, matched_saving
from cee_bench.report.grouping import OP_LABELS, method_order, op_order

OF_INTEREST = "consistentee"  # the methods the paper proposes: every method name with this prefix
CURVE = "curve"
CURVE_LEVEL = 0.99  # the matched score of the whole-curve measure: ≥ 99% of the full model's
YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"
VS_BEST, VS_BASELINE, VS_STATIC = "vs best baseline", "vs baseline", "vs own static depth"
AGGREGATE = "aggregate"


def of_interest(method: str) -> bool:
    return method.startswith(OF_INTEREST)


def measure_label(measure: str, cells: list[dict[str, Any]] | None = None) -> str:
    if measure == CURVE:
        return f"saved layers at matched score (≥ {100 * CURVE_LEVEL:.0f}% of full, dev curve)"
    if measure == LTT_POINT:
        return f"saved layers at {guarantee_label([c for c in cells or [] if c['operating_point'] == LTT_POINT])}"
    return f"saved layers at {OP_LABELS.get(measure, measure)}"


def word(low: float | None, high: float | None) -> str:
    """yes when the interval of the difference lies above 0, no when it lies at or below 0, else inconclusive."""
    if low is None or high is None:
        return INCONCLUSIVE
    return YES if low > 0 else NO if high <= 0 else INCONCLUSIVE


def _matched(curve: tuple[Samples, Samples], reference: Samples) -> Samples:
    """Per seed and resample, the saving a curve reaches at ≥ CURVE_LEVEL × the full model's score (same seed where
    the full model has it, same resample)."""
    score, saved = curve
    target_point = CURVE_LEVEL * reference.aligned(score.seeds, "point")
    if score.examples and reference.examples:
        target_values = CURVE_LEVEL * reference.aligned(score.seeds, "values")
    else:  # a curve kept as aggregates only: the seed level alone, on both sides
        target_values = np.repeat(target_point[:, None], score.values.shape[-1], axis=1)
    values = matched_saving(saved.values, score.values, target_values)
    point = matched_saving(saved.point[..., None], score.point[..., None], target_point[..., None])[..., 0]
    return Samples(score.seeds, values, point, score.examples and reference.examples)


class _Task:
    """One task's verdict inputs: its methods' evidence, the full model's score samples, degenerate or not."""

    def __init__(self, task: TaskCells) -> None:
        self.task = task
        self.name = task.evidence.task
        self.methods = {m: e for m, e in task.methods.items() if m != "full"}

    def value(self, method: str, measure: str, static: bool = False) -> tuple[Samples | None, str]:
        """The samples of one method on one measure (its static-depth control's with `static`), or why there are
        none."""
        m = self.methods[method]
        if measure == CURVE:
            curve = m.static if static else m.curve
            if curve is None:
                return None, f"{m.display}: no {'per-layer scores' if static else 'curve'}"
            if self.task.reference is None:
                return None, "no full model to match"
            return _matched(curve, self.task.reference), ""
        if measure not in m.points:
            return None, f"{m.display}: no {OP_LABELS.get(measure, measure)} point"
        if not m.reached.get(measure):
            return None, f"{m.display}: not reached"
        saved = m.points[measure][1]
        return (saved, "") if saved is not None else (None, f"{m.display}: no saved layers")

    def constant(self, method: str, measure: str) -> bool:
        return measure != CURVE and self.methods[method].constant.get(measure, False)


def _row(task: _Task, comparison: str, challenger: MethodEvidence, against: str, against_display: str,
         measure: str, label: str, a: Samples | None, b: Samples | None, why: str) -> dict[str, Any]:
    """One comparison: challenger − against on one measure, its interval and its word (with why, when it cannot
    speak)."""
    ev = task.task.evidence
    row: dict[str, Any] = {"task": task.name, "comparison": comparison, "challenger": challenger.method,
                           "challenger_display": challenger.display, "against": against,
                           "against_display": against_display, "measure": measure, "measure_label": label,
                           "challenger_value": None, "against_value": None, "difference": None, "ci_low": None,
                           "ci_high": None, "interval_levels": None, "verdict": INCONCLUSIVE, "reason": why,
                           "_samples": None}
    if a is None or b is None:
        return row
    diff = a.minus(b)
    row.update(challenger_value=float(a.estimate()), against_value=float(b.estimate()),
               difference=float(diff.estimate()))
    low, high, levels = ev.summary(diff)
    row.update(ci_low=low, ci_high=high, interval_levels=levels)
    if levels is None:
        row["reason"] = "no interval (one seed and no per-example log)"
        return row
    row["_samples"] = ev.bootstrap(diff)
    row["verdict"] = word(low, high)
    sides = [(m, d) for m, d in ((challenger.method, challenger.display), (against, against_display))
             if m in task.methods]
    constant = [d for m, d in sides if task.constant(m, measure)]
    void = [f"{d}'s guarantee is void ({task.methods[m].void[measure]})" for m, d in sides
            if task.methods[m].void.get(measure)]
    if task.task.degenerate:
        row["verdict"], row["reason"] = INCONCLUSIVE, "degenerate task: the full model is a constant predictor"
    elif constant:
        row["verdict"], row["reason"] = INCONCLUSIVE, f"{' and '.join(constant)}: a constant predictor here"
    elif void:
        row["verdict"], row["reason"] = INCONCLUSIVE, "; ".join(void)
    return row


def _task_rows(task: _Task, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = method_order()
    methods = sorted(task.methods, key=lambda m: (order.get(m, len(order)), m))
    baselines = [m for m in methods if not of_interest(m)]
    measures = sorted({op for m in methods for op in task.methods[m].points}, key=op_order) + [CURVE]
    labels = {measure: measure_label(measure, [c for c in cells if c["task"] == task.name]) for measure in measures}
    rows = []
    for measure in measures:
        values = {m: task.value(m, measure) for m in methods}
        for method in methods:
            challenger = task.methods[method]
            others = [b for b in baselines if b != method and values[b][0] is not None]
            if others:
                best = max(others, key=lambda b: float(values[b][0].estimate()))
                rows.append(_row(task, VS_BEST, challenger, best, task.methods[best].display,
                                 measure, labels[measure], values[method][0], values[best][0], values[method][1]))
            elif [b for b in baselines if b != method]:
                rows.append(_row(task, VS_BEST, challenger, "", "best baseline", measure, labels[measure],
                                 values[method][0], None, "no baseline has this measure"))
            if of_interest(method):
                for baseline in baselines:
                    rows.append(_row(task, VS_BASELINE, challenger, baseline, task.methods[baseline].display,
                                     measure, labels[measure], values[method][0], values[baseline][0],
                                     values[method][1] or values[baseline][1]))
    for method in methods:
        if task.methods[method].multi_exit:
            rule, rule_why = task.value(method, CURVE)
            static, static_why = task.value(method, CURVE, static=True)
            rows.append(_row(task, VS_STATIC, task.methods[method], method,
                             f"{task.methods[method].display} static depth", CURVE, labels[CURVE], rule, static,
                             rule_why or static_why))
    return rows


def _aggregate(rows: list[dict[str, Any]], degenerate: set[str]) -> list[dict[str, Any]]:
    """Per (comparison, challenger, against, measure) — "best baseline" whatever it is per task — the mean of the
    per-task differences over the tasks that are not degenerate and where the comparison has samples."""
    keys: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        against = "" if row["comparison"] == VS_BEST else row["against"]
        keys.setdefault((row["comparison"], row["challenger"], against, row["measure"]), []).append(row)
    out = []
    for (comparison, challenger, against, measure), group in keys.items():
        used = [r for r in group if r["task"] not in degenerate and r["_samples"] is not None]
        left = sorted({r["task"] for r in group} - {r["task"] for r in used})
        first = group[0]
        row = {**{k: first[k] for k in ("comparison", "challenger", "challenger_display", "measure",
                                        "measure_label")},
               "task": AGGREGATE, "against": against,
               "against_display": "best baseline (per task)" if comparison == VS_BEST else first["against_display"],
               "challenger_value": None, "against_value": None, "difference": None, "ci_low": None, "ci_high": None,
               "interval_levels": None, "verdict": INCONCLUSIVE, "_samples": None,
               "reason": (f"over {', '.join(sorted(r['task'] for r in used))}" if used else "no task to average")
               + (f"; left out: {', '.join(left)}" if left and used else "")}
        if used:
            samples = np.mean([r["_samples"] for r in used], axis=0)
            row["difference"] = float(np.mean([r["difference"] for r in used]))
            row["challenger_value"] = float(np.mean([r["challenger_value"] for r in used]))
            row["against_value"] = float(np.mean([r["against_value"] for r in used]))
            row["ci_low"], row["ci_high"] = interval(samples)
            row["interval_levels"] = "; ".join(sorted({r["interval_levels"] for r in used}))
            if all(r["verdict"] != INCONCLUSIVE or r["reason"] == "interval contains 0" for r in used):
                row["verdict"] = word(row["ci_low"], row["ci_high"])
            else:
                row["reason"] += "; some task could not speak: " + "; ".join(
                    f"{r['task']}: {r['reason']}" for r in used if r["verdict"] == INCONCLUSIVE and r["reason"])
        out.append(row)
    return out


def verdict_rows(tasks: list[TaskCells], cells: list[dict[str, Any]], table: int = 1) -> list[dict[str, Any]]:
    """Every comparison of one table (group), per task and in aggregate, as plain dicts."""
    rows = []
    for task in tasks:
        rows += _task_rows(_Task(task), cells)
    for row in rows:
        if row["verdict"] == INCONCLUSIVE and not row["reason"]:
            row["reason"] = "interval contains 0"
    degenerate = {t.evidence.task for t in tasks if t.degenerate}
    if len(tasks) > 1:
        rows += _aggregate(rows, degenerate)
    for row in rows:
        row.pop("_samples")
        row["table"] = table
        row["kind"] = tasks[0].evidence.kind if tasks else None
    return rows


def headline(rows: list[dict[str, Any]]) -> list[str]:
    """The paper's claim, answered: ConsistentEE against the best baseline at ≤ 1% loss (the operating point and
    the whole curve), per task and in aggregate."""
    lines = []
    for row in rows:
        if row["challenger"] == OF_INTEREST and row["comparison"] == VS_BEST and row["measure"] in ("le1_loss", CURVE):
            lines.append(f"{row['task']}: {row['verdict']} — {row['measure_label']}, {row['challenger_display']} "
                         f"{describe(row)}")
    return lines


def describe(row: dict[str, Any]) -> str:
    """A comparison in words: the difference in points with its interval, or why there is none."""
    if row["difference"] is None:
        return f"vs {row['against_display']}: {row['reason']}"
    text = f"vs {row['against_display']}: {100 * row['difference']:+.1f} points"
    if row["ci_low"] is not None:
        text += f" [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"
    return text + (f" ({row['reason']})" if row["reason"] and row["verdict"] == INCONCLUSIVE else "")
