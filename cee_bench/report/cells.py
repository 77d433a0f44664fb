"""A report's cells, both kinds: one (task, method, operating point) aggregated over its seeds, with its intervals.

Classification (the Table 3 mirror): mean and seed sd of the score and the saved layers, each with its 95% two-level
paired-bootstrap interval (seeds, then dev examples: `report.evidence`, `cee_bench.intervals`); Δ vs the full model
and Δ vs the method's own top layer, each with its paired interval; the measured speed-ups with theirs; whether the
cell — or, for the full model, the task — is a constant predictor; what a Learn-then-Test point guarantees.
Generation cells (the same seed aggregation and two-level intervals of ROUGE-L, BERT-F and saved layers) are
`generation_cells`, built on the helpers and evidence types here.

Each cell is a plain dict (a CSV row); the samples behind it stay in `MethodEvidence` for the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cee_bench.intervals import DEFAULT_RESAMPLES
from cee_bench.report.evidence import RATIO, UNIT, Samples, TaskEvidence
from cee_bench.report.grouping import OP_LABELS, TABLE_KEYS, TASK_KEYS, Group, method_order, op_order, record_fields
from cee_bench.results import unpack_digits

NO_LOG = "no per-example log"
FALLBACK = "fallback: full depth"  # a Learn-then-Test point that found no safe candidate, either kind
ONE_CLASS = 0.95  # a predictor answering one class on this share of the rows is a constant predictor
NOISE = 1.05  # a realised fraction above this is timing noise (1.0 is the physical limit of skipping layers)
LTT_POINT = "ltt90_le1"
DEGENERATE = "degenerate: the full model is a constant predictor"


# ---------------------------------------------------------------- small helpers

def mean_present(values: list[float | None]) -> float | None:
    """The mean of the values that are there (None where none is)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def seed_sd(values: list[float]) -> float | None:
    """The sd over seeds (None under two)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _latency(point: dict[str, Any], batch: str) -> dict[str, Any]:
    return (point.get("latency") or {}).get(batch) or {}


def _ms(latency: dict[str, Any], side: str, stat: str) -> float | None:
    """A latency statistic of one side: the new per-side summaries ({p50, p90, p99, ...}) or the old flat keys."""
    summary = latency.get(f"{side}_ms")
    if isinstance(summary, dict):
        return summary.get(stat)
    return latency.get(f"{side}_ms_{'median' if stat == 'p50' else stat}")


def converged_at(record: dict[str, Any], threshold: Any, flag: str = "converged") -> bool | None:
    """Whether ConsistentEE's rounds converged (`flag` "collapsed": collapsed) for the chosen α, the first of an
    (α, π) pair on the π sweep's row (None where the record does not say)."""
    table = (record.get("method_meta") or {}).get(flag)
    if isinstance(threshold, (list, tuple)) and threshold:
        threshold = threshold[0]
    if not isinstance(table, dict) or threshold is None:
        return None
    for alpha, done in table.items():
        try:
            if np.isclose(float(alpha), float(threshold)):
                return bool(done)
        except (TypeError, ValueError):
            continue
    return None


def guarantee(point: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What a Learn-then-Test point certifies, from what its record says: the metric (a disagreement rate bounds
    the accuracy drop, whatever the task's main metric), the reference the risk is taken against, the split it was
    calibrated on and the confidence. Records from before the calibration slice certified against the method's own top
    layer on held-out; where the method had fitted something on those very rows (Right-Tool's temperatures,
    ConsistentEE's convergence test), the guarantee does not hold, and `void` says why."""
    ltt = point.get("ltt") or {}
    reference = ltt.get("reference") or "own top layer"
    split = ltt.get("split") or "heldout"
    log = (record.get("method_meta") or {}).get("log") or {}
    fitted = [what for what, used in (("temperatures", (log.get("calibration") or {}).get("split") == split),
                                      ("convergence test", "convergence" in log and split == "heldout")) if used]
    return {"guarantee_metric": ltt.get("metric") or "accuracy", "guarantee_reference": reference,
            "guarantee_split": split, "guarantee_confidence": 1 - float(ltt.get("epsilon", 0.1)),
            "guarantee_loss": float(ltt.get("loss", 0.01)),
            "guarantee_void": (f"its {' and '.join(fitted)} {'was' if fitted == ['convergence test'] else 'were'} "
                               f"fitted on the same {split} rows") if fitted else ""}


def guarantee_label(cells: list[dict[str, Any]]) -> str:
    """The row label of Learn-then-Test points: metric, reference, split and confidence, as their cells say."""
    parts = {key: "/".join(dict.fromkeys(str(c.get(key)) for c in cells if c.get(key) is not None))
             for key in ("guarantee_reference", "guarantee_split")}
    confidence = "/".join(dict.fromkeys(f"{100 * c['guarantee_confidence']:.0f}%" for c in cells
                                        if c.get("guarantee_confidence") is not None)) or "90%"
    loss = "/".join(dict.fromkeys(f"{100 * c['guarantee_loss']:.0f}%" for c in cells
                                  if c.get("guarantee_loss") is not None)) or "1%"
    reference = (parts["guarantee_reference"] or "own top layer").replace("full-model record", "full model")
    return f"≤{loss} acc. loss vs {reference} @{confidence} conf., LTT on {parts['guarantee_split'] or 'heldout'}"


def op_label(op: str, cells: list[dict[str, Any]]) -> str:
    return guarantee_label(cells) if op == LTT_POINT else OP_LABELS.get(op, op)


# ---------------------------------------------------------------- classification

@dataclass
class MethodEvidence:
    """The samples behind one (task, method)'s cells, for the verdict: per operating point its score and saved
    layers (and whether every seed reached it), the whole dev curve, the static-depth control, and whether the method
    is a constant predictor at that point."""

    task: str
    method: str
    display: str
    kind: str
    seeds: list[Any]
    points: dict[str, tuple[Samples | None, Samples | None]] = field(default_factory=dict)
    reached: dict[str, bool] = field(default_factory=dict)
    constant: dict[str, bool] = field(default_factory=dict)
    void: dict[str, str] = field(default_factory=dict)  # op → why its guarantee does not hold
    curve: tuple[Samples, Samples] | None = None
    static: tuple[Samples, Samples] | None = None
    multi_exit: bool = True


@dataclass
class TaskCells:
    """One task of one group: its evidence, its cells, the full model's score samples and whether it is
    degenerate (why, in words)."""

    evidence: TaskEvidence
    cells: list[dict[str, Any]]
    methods: dict[str, MethodEvidence]
    reference: Samples | None
    degenerate: str = ""


def _cell(task: str, method: str, op: str, points: list[tuple[dict, dict]], ev: TaskEvidence,
          reference: tuple[dict[Any, float], Samples | None] | None, static: tuple[Samples, Samples] | None,
          constant: tuple[int, float, np.ndarray] | None) -> tuple[dict[str, Any], Samples | None, Samples | None]:
    """One (task, method, operating point) aggregated over its seeds: the CSV row, which the tables render, and its
    score and saved-layers samples."""
    first, p0 = points[0]
    seeds = [r.get("seed") for r, _ in points]
    scores = [float(p["score"]) for _, p in points]
    saved = [float(p["saved_layers"]) for _, p in points]
    fields = record_fields(first)
    row: dict[str, Any] = {
        "kind": "classification", "task": task, "method": method, "method_display": first["method_display"],
        "operating_point": op, "label": "full depth" if method == "full" else OP_LABELS.get(op, op),
        **{k: fields[k] for k in (*TABLE_KEYS, *TASK_KEYS)},
        "split": p0.get("split"), "selected_on": p0.get("selected_on"), "metric": first["metric"],
        "num_layers": first["num_layers"], "seeds": len(points), "seed_list": ";".join(map(str, seeds)),
        "threshold": ";".join(dict.fromkeys(str(p.get("threshold")) for _, p in points)),
        "met_seeds": sum(bool(p.get("met_on_selection")) for _, p in points),
        "fallback_seeds": sum(bool(p.get("fallback")) for _, p in points),
        "reached_seeds": sum(bool(p.get("met_on_selection") or p.get("fallback")) for _, p in points),
        "score": float(np.mean(scores)), "score_mean": float(np.mean(scores)), "score_sd": seed_sd(scores),
        "saved_layers": float(np.mean(saved)), "saved_layers_sd": seed_sd(saved),
        "mean_exit_layer": mean_present([p.get("mean_exit_layer") for _, p in points]),
        "layer_speedup": mean_present([p.get("layer_speedup") for _, p in points]),
        "real_vs_simulated_agreement": min((p["real_vs_simulated_agreement"] for _, p in points
                                            if p.get("real_vs_simulated_agreement") is not None), default=None),
        "reference_score": mean_present([(r.get("reference") or {}).get("dev") for r, _ in points]),
        "reference_source": (first.get("reference") or {}).get("source"),
        "delta_vs_full": None, "delta_ci_low": None, "delta_ci_high": None, "within_noise": None,
        "top_layer_score": None, "top_layer_ci_low": None, "top_layer_ci_high": None,
        "delta_vs_top": None, "delta_top_ci_low": None, "delta_top_ci_high": None, "within_noise_top": None,
        "bootstrap_resamples": None, "interval_note": "", "interval_levels": None,
        "constant_predictor": None, "one_class_share": None, "static_depth": None,
        "degenerate": False, "degenerate_reason": "", "guarantee_empty": "",
    }
    row["met"] = row["met_seeds"] == len(points)
    converged = [converged_at(r, p.get("threshold")) for r, p in points]
    row["converged"] = None if all(c is None for c in converged) else all(c is not False for c in converged)
    row["collapsed"] = any(converged_at(r, p.get("threshold"), "collapsed") for r, p in points)
    if op == LTT_POINT and method != "full":
        row.update(guarantee(p0, first))
        row["label"] = guarantee_label([row])
    score_samples, saved_samples = ev.point(points, op)
    _intervals(row, ev, score_samples, saved_samples)
    if reference is not None and method != "full":
        by_seed, ref_samples = reference
        fallback = float(np.mean(list(by_seed.values())))
        row["delta_vs_full"] = float(np.mean([s - by_seed.get(seed, fallback) for s, seed in zip(scores, seeds)]))
        if score_samples is not None and ref_samples is not None:
            row["delta_ci_low"], row["delta_ci_high"], _ = ev.summary(score_samples.minus(ref_samples))
            row["within_noise"] = _contains_zero(row["delta_ci_low"], row["delta_ci_high"])
    _top_layer(row, points, ev, static, score_samples)
    _constant(row, ev, points, op, score_samples, constant)
    _static_depth(row, ev, points, op)
    for batch in ("b1", "b32"):
        _speed(row, ev, points, batch)
    return row, score_samples, saved_samples


def _contains_zero(low: float | None, high: float | None) -> bool | None:
    return None if low is None or high is None else low <= 0.0 <= high


def _intervals(row: dict[str, Any], ev: TaskEvidence, score: Samples | None, saved: Samples | None) -> None:
    row["score_ci_low"], row["score_ci_high"], row["interval_levels"] = ev.summary(score, UNIT)
    row["saved_layers_ci_low"], row["saved_layers_ci_high"], _ = ev.summary(saved, UNIT)
    if row["interval_levels"] is not None:
        row["bootstrap_resamples"] = ev.resamples
    if score is None or not score.examples:
        row["interval_note"] = NO_LOG


def _top_layer(row: dict[str, Any], points: list[tuple[dict, dict]], ev: TaskEvidence,
               static: tuple[Samples, Samples] | None, score: Samples | None) -> None:
    """The top layer of the model the point runs (its training budget, apart from its exits) and the cell's Δ against
    it, paired by seed: from the point's logged top-layer predictions, else (one model per method) the per-layer
    predictions' last layer, else the record's per-layer scores without an interval."""
    top = ev.top(points, row["operating_point"])
    if top is None and static is not None and static[0].examples and static[0].values.shape[1] == row["num_layers"]:
        top = static[0].at(-1)
    if top is not None:
        row["top_layer_score"] = float(top.estimate())
        row["top_layer_ci_low"], row["top_layer_ci_high"], _ = ev.summary(top, UNIT)
        if score is not None:
            diff = score.minus(top)
            row["delta_vs_top"] = float(diff.estimate())
            row["delta_top_ci_low"], row["delta_top_ci_high"], _ = ev.summary(diff)
            row["within_noise_top"] = _contains_zero(row["delta_top_ci_low"], row["delta_top_ci_high"])
        return
    tops = [((r.get("per_layer_scores") or {}).get("dev") or [None])[-1] for r, _ in points]
    if all(t is not None for t in tops):
        row["top_layer_score"] = float(np.mean(tops))
        row["delta_vs_top"] = float(np.mean([float(p["score"]) - t for (_, p), t in zip(points, tops)]))


def is_constant(ev: TaskEvidence, preds: np.ndarray | None, score: Samples | None,
                constant: tuple[int, float, np.ndarray] | None) -> tuple[bool | None, float | None]:
    """(whether a predictor is a constant predictor, the share of its most common class): it answers one class on
    ≥ 95% of the rows (mean over seeds), or its score is not above the best constant predictor's (the interval of the
    difference contains 0 or lies below it)."""
    share = None
    if preds is not None:
        share = float(np.mean([np.bincount(p).max() / len(p) for p in np.atleast_2d(preds)]))
    if constant is None or score is None:
        return (share >= ONE_CLASS if share is not None else None), share
    if score.examples:  # an interval over the seeds alone is too wide for 3 seeds to tell chance from skill
        low, _, _ = ev.summary(Samples(score.seeds, score.values - constant[2][None, :], score.point - constant[1],
                                       True))
        above = low is not None and low > 0
    else:
        above = bool(score.estimate() > constant[1])
    return bool((share is not None and share >= ONE_CLASS) or not above), share


def _constant(row: dict[str, Any], ev: TaskEvidence, points: list[tuple[dict, dict]], op: str,
              score: Samples | None, constant: tuple[int, float, np.ndarray] | None) -> None:
    row["constant_score"] = constant[1] if constant is not None else None
    row["constant_predictor"], row["one_class_share"] = is_constant(ev, ev.predictions(points, op), score, constant)


def _static_depth(row: dict[str, Any], ev: TaskEvidence, points: list[tuple[dict, dict]], op: str) -> None:
    """The layer every example of every seed exits at, when there is one below the top: the point is then a static
    shallower model, not an adaptive rule (the static-depth control names it)."""
    layers = set()
    for r, p in points:
        entry = ((ev.log(r) or {}).get("points") or {}).get(op) or {}
        if "exit_layers" not in entry:
            return
        layers |= set(unpack_digits(entry["exit_layers"]))
    if len(layers) == 1 and next(iter(layers)) < int(row["num_layers"]):
        row["static_depth"] = next(iter(layers))


def _speed(row: dict[str, Any], ev: TaskEvidence, points: list[tuple[dict, dict]], batch: str) -> None:
    """The measured speed-up at one batch size with its interval: two-level over the timed examples' raw times where
    every seed has them, over the seeds alone otherwise, or one seed's own interval over its rounds; the realised
    fraction and its noise flag; batch-1 percentiles, peak memory and real exits that differ from the simulation."""
    latency = [_latency(p, batch) for _, p in points]
    row[f"speedup_wall_{batch}"] = mean_present([lat.get("speedup_wall") for lat in latency])
    row[f"realised_fraction_{batch}"] = mean_present([lat.get("realised_fraction") for lat in latency])
    row[f"realised_noise_{batch}"] = any(bool(lat.get("realised_above_limit")) or
                                         (lat.get("realised_fraction") or 0) > NOISE for lat in latency)
    samples = ev.speedup(points, batch)
    low, high, levels = ev.summary(samples, RATIO)
    if levels is None and len(latency) == 1 and latency[0].get("speedup_ci"):
        (low, high), levels = latency[0]["speedup_ci"], "timing rounds (one seed)"
    elif levels is not None and samples is not None and samples.examples:
        levels = levels.replace("examples", "timed examples" if batch == "b1" else "timed batches")
    elif levels is not None:
        levels = levels.replace("per-example log", "per-example times")
    row[f"speedup_{batch}_ci_low"], row[f"speedup_{batch}_ci_high"], row[f"speedup_{batch}_levels"] = low, high, levels
    row[f"exit_mismatch_{batch}"] = sum(int(lat["exit_mismatch"]) for lat in latency if
                                        lat.get("exit_mismatch") is not None) if any(
        lat.get("exit_mismatch") is not None for lat in latency) else None
    row[f"peak_memory_mb_{batch}"] = mean_present([lat.get("peak_memory_mb") for lat in latency])
    if batch == "b1":
        for stat in ("p50", "p90", "p99"):
            row[f"latency_{stat}_ms_b1"] = mean_present([_ms(lat, "ee", stat) for lat in latency])
            row[f"full_latency_{stat}_ms_b1"] = mean_present([_ms(lat, "full", stat) for lat in latency])
        row["latency_ms_b1"], row["full_latency_ms_b1"] = row["latency_p50_ms_b1"], row["full_latency_p50_ms_b1"]


def _empty_cell(task: str, method: str, op: str, records: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """A Learn-then-Test point that could not be computed (its tolerance or another derived quantity fell outside
    its domain, e.g. a reference score of 0): a row that says why, and no number."""
    first = records[0]
    fields = record_fields(first)
    row = {"kind": "classification", "task": task, "method": method, "method_display": first["method_display"],
           "operating_point": op, "label": "", **{k: fields[k] for k in (*TABLE_KEYS, *TASK_KEYS)},
           "metric": first["metric"], "num_layers": first["num_layers"], "seeds": len(records),
           "seed_list": ";".join(str(r.get("seed")) for r in records), "met": False, "met_seeds": 0,
           "fallback_seeds": 0, "reached_seeds": 0, "guarantee_empty": reason, "degenerate": False,
           "converged": None, "within_noise": None, "interval_note": "", "score_mean": None,
           **guarantee({"ltt": (first.get("guarantee") or {})}, first)}
    row["label"] = guarantee_label([row])
    return row


def summarise(group: Group, resamples: int = DEFAULT_RESAMPLES) -> list[TaskCells]:
    """Every cell of a group, task by task; the full model's cell first, since the others' Δ is paired with it."""
    order = method_order()
    tasks = []
    for task in group.tasks:
        recs = [r for r in group.records if r["task"] == task]
        ev = TaskEvidence(task, recs, resamples)
        constant = ev.constant()
        methods = sorted({r["method"] for r in recs}, key=lambda m: (order.get(m, len(order)), m))
        cells, evidence, reference, reference_samples = [], {}, None, None
        for method in methods:
            mrecs = sorted((r for r in recs if r["method"] == method), key=lambda r: r.get("seed") or 0)
            static = ev.static(mrecs)
            found = MethodEvidence(task, method, mrecs[0].get("method_display", method), "classification",
                                   [r.get("seed") for r in mrecs], curve=ev.curve(mrecs), static=static,
                                   multi_exit=method != "full")
            ops = sorted({op for r in mrecs for op in r["operating_points"]}, key=op_order)
            if method == "full":
                ops = ops[:1]  # every operating point of the full model is the full depth
            for op in ops:
                points = [(r, r["operating_points"][op]) for r in mrecs if op in r["operating_points"]]
                cell, score, saved = _cell(task, method, op, points, ev, reference, static, constant)
                if method == "full":
                    reference = ({r.get("seed"): float(p["score"]) for r, p in points}, score)
                    reference_samples = score
                else:
                    found.points[op], found.reached[op] = (score, saved), shown(cell)
                    found.constant[op] = bool(cell["constant_predictor"])
                    found.void[op] = cell.get("guarantee_void") or ""
                cells.append(cell)
            empty = [(r.get("guarantee") or {}).get("empty") for r in mrecs]
            if method != "full" and LTT_POINT not in ops and any(empty):
                cells.append(_empty_cell(task, method, LTT_POINT, mrecs, next(e for e in empty if e)))
            _constant_layers(cells, ev, mrecs, static, constant)
            evidence[method] = found
        task_cells = TaskCells(ev, cells, evidence, reference_samples)
        full = next((c for c in cells if c["method"] == "full"), None)
        if full is not None and full["constant_predictor"]:
            task_cells.degenerate = _degenerate_reason(full, constant)
            for c in cells:
                c["degenerate"], c["degenerate_reason"] = True, task_cells.degenerate
        tasks.append(task_cells)
    return tasks


def _degenerate_reason(full: dict[str, Any], constant: tuple[int, float, np.ndarray] | None) -> str:
    what = "all-positive" if full["metric"] == "f1" else "majority-class"
    parts = []
    if constant is not None:
        parts.append(f"its {full['metric']} {100 * full['score_mean']:.1f} is not above the {what} predictor's "
                     f"{100 * constant[1]:.1f}")
    if full.get("one_class_share") is not None:
        parts.append(f"it answers one class on {100 * full['one_class_share']:.0f}% of the rows")
    return f"{DEGENERATE} ({'; '.join(parts)})"


def _constant_layers(cells: list[dict[str, Any]], ev: TaskEvidence, records: list[dict[str, Any]],
                     static: tuple[Samples, Samples] | None, constant: tuple[int, float, np.ndarray] | None) -> None:
    """Which exit layers, used alone, are constant predictors (from their per-example predictions, or their scores
    against the constant predictor's where only those are kept), for the model the record's per-layer scores describe
    (the last grid value's, where each trains its own): on every cell of the method."""
    if static is None or constant is None:
        return
    layers = int(records[0]["num_layers"])
    per_layer = [ev.layer_predictions(r) for r in records]
    scores = Samples(static[0].seeds, static[0].values[:, -layers:], static[0].point[:, -layers:], static[0].examples)
    found = []
    for k in range(layers):
        preds = np.stack([p[k] for p in per_layer]) if all(p is not None for p in per_layer) else None
        if is_constant(ev, preds, scores.at(k), constant)[0]:
            found.append(k + 1)
    for c in cells:
        if c["method"] == records[0]["method"]:
            c["constant_layers"] = ";".join(map(str, found))


def shown(cell: dict[str, Any]) -> bool:
    """Whether the cell has a number under its label: every seed met the target (or, for Learn-then-Test, fell
    back to the full depth, a guaranteed point in its own right)."""
    return not cell.get("guarantee_empty") and cell["reached_seeds"] == cell["seeds"]


@dataclass
class Report:
    """A whole report: the classification groups with their cells and rendered tables (`tables.Table3`), the
    generation groups' rows, the verdict's rows and the warnings about records that could not share a table."""

    groups: list[Group]  # classification
    tasks: list[list[TaskCells]]  # per classification group, per task
    warnings: list[str]
    tables: list[Any] = field(default_factory=list)  # per classification group, its `tables.Table3`
    generation: list[list[dict[str, Any]]] = field(default_factory=list)  # per generation group, its rows
    generation_tasks: list[list[TaskCells]] = field(default_factory=list)
    verdict: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cells(self) -> list[list[dict[str, Any]]]:
        """Per classification group, every cell of every task."""
        return [[c for t in tasks for c in t.cells] for tasks in self.tasks]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every classification cell of every table, numbered by table, for the CSV."""
        return [{**c, "table": i} for i, cells in enumerate(self.cells, 1) for c in cells]
